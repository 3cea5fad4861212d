"""Assemble the two Starlette applications: the public listener and the admin listener.

`build_public_app` and `build_admin_app` take a ready `KeyturnState` (both listeners of
a process share it); `create_app` is the one-call form for tests and embedding, whose
lifespan opens and closes the state itself.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyturn.config import Settings
from keyturn.core.tokens import VerifiedToken
from keyturn.errors import KeyturnError
from keyturn.server import admin, legacy, login, v1
from keyturn.server.errors import problem
from keyturn.server.logs import ACCESS_LOGGER, REQUEST_ID_HEADER, sane_request_id
from keyturn.server.metrics import metrics_endpoint
from keyturn.server.models import MAX_TOKEN
from keyturn.server.openapi import docs_page, openapi_document
from keyturn.server.requests import MAX_BODY_BYTES
from keyturn.server.state import KeyturnState, is_loopback
from keyturn.server.telemetry import RequestTelemetry, request_header

__all__ = ["build_admin_app", "build_public_app", "create_app"]

logger = logging.getLogger("keyturn.server")


async def healthz(request: Request) -> Response:
    """Alive: the process answers."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready: the database answers (503 + Retry-After when it does not)."""
    state: KeyturnState = request.app.state.keyturn
    try:
        await state.storage.ping()
    except KeyturnError as exc:
        return problem(
            503,
            "Service Unavailable",
            exc.message,
            code=exc.error_code,
            headers={"Retry-After": "1"},
        )
    return JSONResponse({"status": "ready"})


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    title = "Method Not Allowed" if status == 405 else "Not Found"
    code = "method_not_allowed" if status == 405 else "not_found"
    headers = getattr(exc, "headers", None)
    return problem(
        status,
        title,
        f"{request.method} {request.url.path} is not served here",
        code=code,
        headers=headers,
    )


async def _unexpected(request: Request, exc: Exception) -> Response:
    # Never a traceback to the client; the log names the route, never a secret.
    logger.error(
        "unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__
    )
    return problem(
        500, "Internal Server Error", "an unexpected error occurred", code="server_error"
    )


def _starlette(
    state: KeyturnState, routes: list[Route], *, trusted_admin: bool, title: str
) -> Starlette:
    app = Starlette(
        routes=routes,
        exception_handlers={HTTPException: _not_found, Exception: _unexpected},
    )
    app.state.keyturn = state
    app.state.trusted_admin = trusted_admin
    document = openapi_document(app, title=title, settings=state.settings)
    prefix = state.settings.url_prefix

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def docs(request: Request) -> Response:
        return HTMLResponse(docs_page(document))

    app.router.routes.append(Route(f"{prefix}/openapi.json", openapi, methods=["GET"]))
    app.router.routes.append(Route(f"{prefix}/docs", docs, methods=["GET"]))
    return app


def _health_routes(prefix: str) -> list[Route]:
    return [
        Route(f"{prefix}/healthz", healthz, methods=["GET"]),
        Route(f"{prefix}/readyz", readyz, methods=["GET"]),
    ]


def build_public_app(state: KeyturnState) -> ASGIApp:
    """The public listener: token endpoints, validation, JWKS, health."""
    settings = state.settings
    prefix = settings.url_prefix
    routes = legacy.general_routes(prefix) + _health_routes(prefix)
    if not settings.disable_public_api:
        routes += (
            legacy.public_routes(prefix) + v1.public_routes(prefix) + login.public_routes(prefix)
        )
    if settings.legacy_admin_on_public and not settings.disable_admin_api:
        routes += legacy.admin_routes(prefix)
    app = _starlette(state, routes, trusted_admin=False, title="Keyturn public API")
    quiet = {f"{prefix}{path}" for path in _QUIET_PUBLIC}
    observed = RequestTelemetry(
        app, metrics=state.metrics, listener="public", quiet_routes=frozenset(quiet)
    )
    if settings.disable_public_api:
        return observed
    return GatewayFastPath(observed, state=state)


#: Routes whose successful answers are logged at DEBUG (gateways and probes call them).
_QUIET_PUBLIC = ("/validate_request", "/v1/validate", "/validate", "/healthz", "/readyz", "/health")
_QUIET_ADMIN = ("/healthz", "/readyz", "/metrics")


class GatewayFastPath:
    """Answers a *valid* ``GET /validate_request``, ``GET /v1/validate`` or ``POST /validate``,
    and the JWK Set (``GET /jwks``, ``GET /.well-known/jwks.json``).

    Gateways call these on every request, and a cached verification costs ~1 µs while
    Starlette's routing, request and response objects cost ~50 µs. Only the success path
    is taken here, with exactly the response the Starlette handler would send (plus its
    ``X-Request-ID``); anything else (no or bad token, a ``?scope=`` query, another
    route) falls through to `RequestTelemetry` and Starlette, which render it.

    Each answer here is counted in a lock-free `RouteTally` (~0.3 µs; flushed into the
    metrics when scraped and every poll) and logged at DEBUG only.
    """

    def __init__(self, app: ASGIApp, *, state: KeyturnState) -> None:
        self.app = app
        # The verifier itself: a token refused here is counted once, by the fallback.
        self._verify = state.service.verifier.verify
        prefix = state.settings.url_prefix
        self._legacy = f"{prefix}/validate_request"
        self._v1 = f"{prefix}/v1/validate"
        self._post = f"{prefix}/validate"
        # The JWK Set, rendered once per key set (a reload installs a new one): path ->
        # the Content-Type and Cache-Control its Starlette handler sends.
        self._service = state.service
        self._jwks_routes = {
            f"{prefix}/jwks": (b"application/json", b"max-age=300"),
            f"{prefix}/.well-known/jwks.json": (
                b"application/jwk-set+json",
                b"public, max-age=300",
            ),
        }
        self._jwks_for: object = None
        self._jwks_body = b""
        self._tallies = {
            (method, route): state.metrics.tally("public", method, route, 200)
            for method, route in (
                ("GET", self._legacy),
                ("GET", self._v1),
                ("POST", self._post),
                *(("GET", path) for path in self._jwks_routes),
            )
        }

    def _done(
        self, method: str, route: str, started: float, request_id: bytes, jti: str | None
    ) -> None:
        """Count a request answered here; log it when DEBUG is on."""
        seconds = time.perf_counter() - started
        self._tallies[method, route].add(seconds)
        if ACCESS_LOGGER.isEnabledFor(logging.DEBUG):
            ACCESS_LOGGER.debug(
                "request",
                extra={
                    "request_id": request_id.decode("ascii"),
                    "listener": "public",
                    "method": method,
                    "route": route,
                    "status": 200,
                    "duration_ms": round(seconds * 1000, 3),
                    **({} if jti is None else {"jti": jti}),
                },
            )

    async def _jwks(self, path: str, scope: Scope, send: Send) -> None:
        """``GET /jwks`` and ``GET /.well-known/jwks.json``: the same bytes Starlette sends."""
        started = time.perf_counter()
        keys = self._service.key_set
        if keys is not self._jwks_for:
            self._jwks_body = json.dumps(
                dict(keys.jwks()), ensure_ascii=False, allow_nan=False, separators=(",", ":")
            ).encode("utf-8")
            self._jwks_for = keys
        body = self._jwks_body
        content_type, cache_control = self._jwks_routes[path]
        request_id = sane_request_id(request_header(scope["headers"], REQUEST_ID_HEADER))
        headers = [
            (b"cache-control", cache_control),
            (b"content-length", str(len(body)).encode("ascii")),
            (b"content-type", content_type),
            (REQUEST_ID_HEADER, request_id),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self._done("GET", path, started, request_id, None)

    async def _validate_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /validate {"jwt"}``: answer a valid token here, replay anything else."""
        started = time.perf_counter()
        chunks: list[bytes] = []
        size = 0
        more = True
        while more and size <= MAX_BODY_BYTES:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if not more and size <= MAX_BODY_BYTES and _json_content(scope["headers"]):
            token = _jwt_field(body)
            if token is not None:
                try:
                    verified = self._verify(token)
                except KeyturnError:
                    pass
                else:
                    raw_id = request_header(scope["headers"], REQUEST_ID_HEADER)
                    request_id = sane_request_id(raw_id)
                    await send(
                        {
                            "type": "http.response.start",
                            "status": 200,
                            "headers": [
                                (b"content-length", b"15"),
                                (b"content-type", b"application/json"),
                                (REQUEST_ID_HEADER, request_id),
                            ],
                        }
                    )
                    await send({"type": "http.response.body", "body": b'{"result":true}'})
                    self._done("POST", self._post, started, request_id, verified.jti)
                    return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

        await self.app(scope, replay, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == self._post:
            await self._validate_body(scope, receive, send)
            return
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            path = scope["path"]
            if path in self._jwks_routes:
                await self._jwks(path, scope, send)
                return
            if path in (self._legacy, self._v1):
                started = time.perf_counter()
                token, raw_id = _bearer_and_request_id(scope["headers"])
                verified = None
                if token is not None:
                    try:
                        verified = self._verify(token)
                    except KeyturnError:
                        verified = None
                if verified is not None:
                    request_id = sane_request_id(raw_id)
                    if path == self._legacy:
                        headers = [
                            (b"content-length", b"2"),
                            (b"content-type", b"application/json"),
                            (REQUEST_ID_HEADER, request_id),
                        ]
                        body = b"{}"
                    else:
                        headers = [
                            (b"content-length", b"0"),
                            *_identity_headers(verified),
                            (REQUEST_ID_HEADER, request_id),
                        ]
                        body = b""
                    await send({"type": "http.response.start", "status": 200, "headers": headers})
                    await send({"type": "http.response.body", "body": body})
                    self._done("GET", path, started, request_id, verified.jti)
                    return
        await self.app(scope, receive, send)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


def _json_content(headers: list[tuple[bytes, bytes]]) -> bool:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return True  # JWThenticator's clients may send none


def _jwt_field(body: bytes) -> str | None:
    """The token of a body that is exactly ``{"jwt": "<str>"}``, or None."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if type(data) is not dict or len(data) != 1:
        return None
    token = data.get("jwt")
    return token if type(token) is str and len(token) <= MAX_TOKEN else None


def _bearer_and_request_id(
    headers: list[tuple[bytes, bytes]],
) -> tuple[str | None, bytes | None]:
    """The bearer token (None if absent or malformed) and the raw ``X-Request-ID``."""
    authorization = request_id = None
    for name, value in headers:
        if name == b"authorization":
            if authorization is None:
                authorization = value
        elif name == REQUEST_ID_HEADER and request_id is None:
            request_id = value
    if authorization is None:
        return None, request_id
    scheme, _, token = authorization.partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token or b" " in token:
        return None, request_id
    return token.decode("latin-1"), request_id


def _identity_headers(verified: VerifiedToken) -> list[tuple[bytes, bytes]]:
    # The same headers as the Starlette handler's, in ASGI's raw form.
    return [
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in v1.identity_headers(verified).items()
    ]


def build_admin_app(state: KeyturnState) -> ASGIApp:
    """The admin listener: key management, legacy internal routes, introspection, health."""
    prefix = state.settings.url_prefix
    routes = (
        legacy.admin_routes(prefix)
        + admin.routes(prefix)
        + [
            Route(f"{prefix}/v1/introspect", v1.introspect, methods=["POST"]),
            Route(f"{prefix}/metrics", metrics_endpoint, methods=["GET"]),
        ]
        + _health_routes(prefix)
    )
    app = _starlette(state, routes, trusted_admin=True, title="Keyturn admin API")
    quiet = frozenset(f"{prefix}{path}" for path in _QUIET_ADMIN)
    return RequestTelemetry(
        AdminGuard(app, state=state), metrics=state.metrics, listener="admin", quiet_routes=quiet
    )


class AdminGuard:
    """Admits admin requests from loopback peers, or with the admin bearer token.

    The decision uses the socket peer (``scope["client"]``) of a listener that runs
    without proxy-header rewriting, never ``X-Forwarded-For`` (T-OPS-03). Health checks
    are always open.
    """

    def __init__(self, app: ASGIApp, *, state: KeyturnState) -> None:
        self.app = app
        self._metrics = state.metrics
        token = state.settings.admin_token
        self._token = None if token is None else token.get_secret_value().encode()
        self._open = {f"{state.settings.url_prefix}/healthz", f"{state.settings.url_prefix}/readyz"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        self._metrics.authentication_failed("admin_credential")
        response = problem(
            401,
            "Unauthorized",
            "the admin API needs the admin bearer token",
            code="unauthorized",
            headers={"WWW-Authenticate": 'Bearer realm="keyturn-admin"'},
        )
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        if self._token is not None:
            for name, value in scope["headers"]:
                if name == b"authorization":
                    scheme, _, presented = value.partition(b" ")
                    return scheme.lower() == b"bearer" and hmac.compare_digest(
                        presented.strip(), self._token
                    )
            return False
        client = scope.get("client")
        return is_loopback(client[0] if client else None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)


def create_app(settings: Settings | None = None, *, listener: str = "public") -> Starlette:
    """One listener's app with a lifespan that opens and closes its own state.

    For tests and embedding; ``keyturn serve`` shares one state between two listeners.
    """
    settings = settings or Settings.from_environment()
    holder: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state = await KeyturnState.open(settings)
        inner = build_public_app(state) if listener == "public" else build_admin_app(state)
        holder["app"] = inner
        try:
            yield
        finally:
            await state.close()

    async def dispatch(scope: Scope, receive: Receive, send: Send) -> None:
        await holder["app"](scope, receive, send)

    outer = Starlette(lifespan=lifespan)
    outer.mount("", dispatch)
    return outer
