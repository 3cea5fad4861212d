"""Assemble the two Starlette applications: the public listener and the admin listener.

`build_public_app` and `build_admin_app` take a ready `KeyturnState` (both listeners of
a process share it); `create_app` is the one-call form for tests and embedding, whose
lifespan opens and closes the state itself.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from keyturn.config import Settings
from keyturn.errors import AdminCredentialError, KeyturnError
from keyturn.rfc6750 import bearer_matches
from keyturn.server import admin, legacy, login, v1
from keyturn.server.errors import (
    ADMIN_CHALLENGE,
    ErrorStyle,
    client_gone,
    problem,
    render,
    unexpected_error,
)
from keyturn.server.gateway.router import ExactRoutes
from keyturn.server.metrics import metrics_endpoint
from keyturn.server.openapi import docs_page, openapi_document
from keyturn.server.state import KeyturnState, is_loopback
from keyturn.server.telemetry import RequestTelemetry

__all__ = ["build_admin_app", "build_public_app", "create_app"]


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


def _allowed_methods(request: Request) -> str:
    """Every method some route of the app serves at this path (one `Route` per method)."""
    methods: set[str] = set()
    for route in request.app.routes:
        if isinstance(route, Route) and route.matches(request.scope)[0] != Match.NONE:
            methods.update(route.methods or ())
    return ", ".join(sorted(methods))


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    title = "Method Not Allowed" if status == 405 else "Not Found"
    code = "method_not_allowed" if status == 405 else "not_found"
    headers = getattr(exc, "headers", None)
    if status == 405:  # RFC 9110 §15.5.6: all the methods the resource serves
        headers = {**(headers or {}), "Allow": _allowed_methods(request)}
    return problem(
        status,
        title,
        f"{request.method} {request.url.path} is not served here",
        code=code,
        headers=headers,
    )


def _starlette(
    state: KeyturnState, routes: list[Route], *, trusted_admin: bool, title: str
) -> Starlette:
    app = Starlette(
        routes=routes,
        exception_handlers={
            HTTPException: _not_found,
            ClientDisconnect: client_gone,
            Exception: unexpected_error,
        },
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
    return RequestTelemetry(
        app,
        metrics=state.metrics,
        listener="public",
        quiet_routes=frozenset(quiet),
        # The gateway's hot routes by exact path, inside the telemetry (`keyturn.server.gateway`).
        exact=ExactRoutes(app, state=state),
    )


#: Routes whose successful answers are logged at DEBUG (gateways and probes call them).
_QUIET_PUBLIC = (
    "/validate_request",
    "/v1/validate",
    "/v1/ext_authz/{path:path}",
    "/validate",
    "/jwks",
    "/.well-known/jwks.json",
    "/healthz",
    "/readyz",
    "/health",
)
_QUIET_ADMIN = ("/healthz", "/readyz", "/health", "/metrics")


def build_admin_app(state: KeyturnState) -> ASGIApp:
    """The admin listener: key management, legacy internal routes, introspection, health."""
    prefix = state.settings.url_prefix
    routes = (
        legacy.admin_routes(prefix)
        + admin.routes(prefix)
        + [
            Route(f"{prefix}/v1/introspect", v1.introspect, methods=["POST"]),
            Route(f"{prefix}/metrics", metrics_endpoint, methods=["GET"]),
            # JWThenticator's internal API answered it; probes pointed there keep working.
            Route(f"{prefix}/health", legacy.health, methods=["GET"]),
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
        self._open = {
            f"{state.settings.url_prefix}{path}" for path in ("/healthz", "/readyz", "/health")
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self._open or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        self._metrics.authentication_failed("admin_credential")
        error = AdminCredentialError("the admin API needs the admin bearer token")
        response = render(error, ErrorStyle.PROBLEM, challenge=ADMIN_CHALLENGE)
        await response(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        if self._token is not None:
            for name, value in scope["headers"]:
                if name == b"authorization":
                    return bearer_matches(value.decode("latin-1"), self._token)
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
