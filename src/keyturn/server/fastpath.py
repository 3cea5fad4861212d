"""The raw-ASGI fast path of the public listener: the hottest routes without Starlette.

`GatewayFastPath` sits outside `RequestTelemetry` and answers the plain, well-formed
requests of a few routes itself, with exactly the bytes the Starlette handlers send;
anything else falls through to the Starlette app (a body it read is replayed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyturn.core.tokens import VerifiedToken
from keyturn.errors import KeyturnError
from keyturn.server import legacy, v1
from keyturn.server.errors import RequestRejectedError, stopping, unexpected_error
from keyturn.server.logs import ACCESS_LOGGER, REQUEST_ID_HEADER, sane_request_id
from keyturn.server.models import MAX_TOKEN, AuthenticateRequest, RefreshRequest
from keyturn.server.requests import MAX_BODY_BYTES, parse_body
from keyturn.server.state import KeyturnState, client_address
from keyturn.server.telemetry import RequestTelemetry, request_header

__all__ = ["GatewayFastPath"]

logger = logging.getLogger("keyturn.server")

#: A legacy token route: its body's model and the answer its Starlette handler gives.
_TokenRoute = tuple[type[BaseModel], Callable[..., Awaitable[Response]]]


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

    A well-formed ``POST /authenticate`` or ``POST /refresh`` (JWThenticator's) is also
    answered here, success or not: the body is read and validated as the Starlette
    handler would, and `legacy.answer_authenticate` / `legacy.answer_refresh` give the
    response. A body those rules refuse (media type, size, JSON, fields) is replayed into
    Starlette before any rate-limit hit or service call, and rendered there.
    """

    def __init__(self, app: RequestTelemetry, *, state: KeyturnState) -> None:
        self.app: ASGIApp = app
        # Requests answered here in full are counted and logged as the telemetry would.
        self._record = app.record
        self._state = state
        # The verifier itself: a token refused here is counted once, by the fallback.
        self._verify = state.service.verifier.verify
        prefix = state.settings.url_prefix
        self._legacy = f"{prefix}/validate_request"
        self._v1 = f"{prefix}/v1/validate"
        self._post = f"{prefix}/validate"
        # Route template -> body model and answer, as `legacy.public_routes` routes them.
        self._token_routes: dict[str, _TokenRoute] = {
            f"{prefix}/authenticate": (AuthenticateRequest, legacy.answer_authenticate),
            f"{prefix}/refresh": (RefreshRequest, legacy.answer_refresh),
        }
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
        await _ok(send, headers, body)
        self._done("GET", path, started, request_id, None)

    async def _validate_body(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /validate {"jwt"}``: answer a valid token here, replay anything else."""
        started = time.perf_counter()
        try:
            body, replay = await _json_body(scope, receive)
        except asyncio.CancelledError:
            await self._stopped(self._post, started, scope, receive, send)
            return
        token = None if body is None else _jwt_field(body)
        verified = None if token is None else self._verified(token)
        if verified is None:
            await self.app(scope, replay, send)
            return
        request_id = sane_request_id(request_header(scope["headers"], REQUEST_ID_HEADER))
        headers = [
            (b"content-length", b"15"),
            (b"content-type", b"application/json"),
            (REQUEST_ID_HEADER, request_id),
        ]
        await _ok(send, headers, b'{"result":true}')
        self._done("POST", self._post, started, request_id, verified.jti)

    async def _token(self, route: str, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST /authenticate`` and ``POST /refresh``: answer a well-formed body here."""
        started = time.perf_counter()
        model, answer = self._token_routes[route]
        try:
            body, replay = await _json_body(scope, receive)
        except asyncio.CancelledError:
            await self._stopped(route, started, scope, receive, send)
            return
        parsed = None
        if body is not None:
            try:
                parsed = parse_body(model, body)
            except RequestRejectedError:
                parsed = None
        if parsed is None:
            await self.app(scope, replay, send)
            return
        # As RequestTelemetry: the request id, bound for the service's log lines.
        request_id = sane_request_id(request_header(scope["headers"], REQUEST_ID_HEADER))
        text_id = request_id.decode("ascii")
        structlog.contextvars.bind_contextvars(request_id=text_id)
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                status = message["status"]
                started_response = True
                message = {
                    **message,
                    "headers": [*message["headers"], (REQUEST_ID_HEADER, request_id)],
                }
            await send(message)

        try:
            response = await answer(
                self._state, parsed, address=client_address(scope), request_id=text_id
            )
            await response(scope, receive, send_with_id)
        except asyncio.CancelledError:
            # Cancelled at the shutdown timeout (never mid-commit: `ListenerServer`).
            if started_response:
                raise
            logger.warning("request cancelled: the server is stopping (503)")
            await stopping()(scope, receive, send_with_id)
        except Exception as exc:
            # As Starlette's ServerErrorMiddleware: the 500 problem, then re-raised for the
            # server to log.
            if not started_response:
                error = await unexpected_error(Request(scope), exc)
                await error(scope, receive, send_with_id)
            raise
        finally:
            self._record("POST", route, status, time.perf_counter() - started)

    async def _stopped(
        self, route: str, started: float, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Cancelled while reading the body (shutdown timeout): 503 + Retry-After."""
        logger.warning("request cancelled: the server is stopping (503)")
        request_id = sane_request_id(request_header(scope["headers"], REQUEST_ID_HEADER))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message["headers"], (REQUEST_ID_HEADER, request_id)],
                }
            await send(message)

        await stopping()(scope, receive, send_with_id)
        self._record("POST", route, 503, time.perf_counter() - started)

    def _verified(self, token: str) -> VerifiedToken | None:
        """``token`` verified (from the cache when it can be), or None if it is refused."""
        try:
            return self._verify(token)
        except KeyturnError:
            return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path = scope["path"]
            if path == self._post:
                await self._validate_body(scope, receive, send)
                return
            if path in self._token_routes:
                await self._token(path, scope, receive, send)
                return
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            path = scope["path"]
            if path in self._jwks_routes:
                await self._jwks(path, scope, send)
                return
            if path in (self._legacy, self._v1):
                started = time.perf_counter()
                token, raw_id = _bearer_and_request_id(scope["headers"])
                verified = None if token is None else self._verified(token)
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
                    await _ok(send, headers, body)
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


def _declared_size_fits(headers: list[tuple[bytes, bytes]]) -> bool:
    """No ``Content-Length``, or one of ASCII digits within `MAX_BODY_BYTES`.

    Anything else is refused by `keyturn.server.requests` (413), so it falls through.
    """
    declared = request_header(headers, b"content-length")
    return declared is None or (declared.isdigit() and int(declared) <= MAX_BODY_BYTES)


async def _ok(send: Send, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Send a 200 with ``headers`` and ``body``, the way the fast path answers."""
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _json_body(scope: Scope, receive: Receive) -> tuple[bytes | None, Receive]:
    """The body, if JSON within `MAX_BODY_BYTES` (else None), and the ``receive`` for Starlette.

    A body under another media type or a bad ``Content-Length`` is not read; one read is
    replayed by the returned ``receive``, so Starlette renders a refusal as before.
    """
    headers = scope["headers"]
    if not (_json_content(headers) and _declared_size_fits(headers)):
        return None, receive
    body, messages = await _read_body(receive)
    return body, _replaying(messages, receive)


async def _read_body(receive: Receive) -> tuple[bytes | None, list[Message]]:
    """The whole body (None if over `MAX_BODY_BYTES` or cut off), and the messages read."""
    messages: list[Message] = []
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request":
            return None, messages
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None, messages
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), messages


def _replaying(messages: list[Message], receive: Receive) -> Receive:
    """A ``receive`` that gives ``messages`` again, then what ``receive`` gives."""
    pending = deque(messages)

    async def replay() -> Message:
        if pending:
            return pending.popleft()
        return await receive()

    return replay


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
