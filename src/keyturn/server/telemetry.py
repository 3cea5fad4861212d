"""Per-request telemetry: the request id, the access log line and the HTTP metrics.

`RequestTelemetry` wraps a listener's Starlette app. For every HTTP request it takes or
makes the request id, binds it into the log context, returns it as ``X-Request-ID`` on
the response (errors included), and when the response is done counts it and writes one
access line (`keyturn.server.logs.ACCESS_LOGGER`). The route label is the template
Starlette routed to (never the raw path), ``unmatched`` when none was. The gateway's exact
routes that log nothing while answering (the validate routes, the JWK Set) have the id
bound only when their access line is written: binding costs per request, and a gateway
calls them on every request of its own (bench/README.md, ``bench_fastpath.py``).

Successful answers of the *quiet* routes (gateway validations, the JWK Set, health
checks, metrics scrapes) are logged at DEBUG: a gateway calls them on every request of its
own. Every other request is logged at INFO.

An exception that escapes the app before any answer started (the gateway's exact routes
have no Starlette ``ServerErrorMiddleware`` around them) is answered with the same 500
problem, then re-raised for the server to log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from contextvars import ContextVar
from typing import Any, Final, Protocol

import structlog
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyturn.server.errors import stopping, unexpected_error
from keyturn.server.logs import ACCESS_LOGGER, REQUEST_ID_HEADER, sane_request_id
from keyturn.server.metrics import UNMATCHED_ROUTE, RouteTally, ServerMetrics, method_label

__all__ = [
    "JTI_SCOPE_KEY",
    "REQUEST_ID_SCOPE_KEY",
    "RequestTelemetry",
    "bind_request_id",
    "request_header",
]

logger = logging.getLogger("keyturn.server")

#: Where the request id of a request is kept in its ASGI scope (a ``str``).
REQUEST_ID_SCOPE_KEY: Final = "keyturn.request_id"
#: Where an endpoint leaves the id of the token it verified, for the access line (a ``str``).
JTI_SCOPE_KEY: Final = "keyturn.jti"


def _bound_request_id() -> ContextVar[Any]:
    """The context variable behind structlog's bound ``request_id`` (``bind_contextvars``).

    Setting it directly binds the id at a tenth of ``bind_contextvars``' cost per request.
    """
    tokens = structlog.contextvars.bind_contextvars(request_id=None)
    structlog.contextvars.reset_contextvars(**tokens)
    return tokens["request_id"].var


_REQUEST_ID_VAR: Final = _bound_request_id()
_clock: Final = time.perf_counter


def bind_request_id(request_id: str) -> None:
    """Bind ``request_id`` into the log context of the request being answered.

    Each request runs in its own task, hence its own copy of the context: binding never
    leaks into another request, and nothing needs clearing afterwards.
    """
    _REQUEST_ID_VAR.set(request_id)


def request_header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower-case), or None."""
    for key, value in headers:
        if key == name:
            return value
    return None


class Answered(Protocol):
    """A whole response computed before sending (`keyturn.server.gateway.answers.Answer`)."""

    @property
    def status(self) -> int: ...
    @property
    def headers(self) -> Iterable[tuple[bytes, bytes]]: ...
    @property
    def body(self) -> bytes: ...


class ExactTable(Protocol):
    """Routes answered without the app (`keyturn.server.gateway.router.ExactRoutes`)."""

    async def respond(self, scope: Scope, receive: Receive) -> Answered | None:
        """The answer of an exactly matched route, or None to let the app route it."""
        ...


class _SendWithId:
    """``send`` that adds ``X-Request-ID`` to the response's start and notes its status."""

    __slots__ = ("request_id", "send", "status")

    def __init__(self, send: Send, request_id: bytes) -> None:
        self.send = send
        self.request_id = request_id
        self.status = 0  # no answer started yet

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
            headers = [*message.get("headers", ()), (REQUEST_ID_HEADER, self.request_id)]
            message = {**message, "headers": headers}
        await self.send(message)


class RequestTelemetry:
    """Request id, access log and metrics around one listener's app.

    With ``exact`` routes, a request they match is answered from there (the same
    endpoint objects the app's router holds) without entering the app.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: ServerMetrics,
        listener: str,
        quiet_routes: frozenset[str] = frozenset(),
        exact: ExactTable | None = None,
    ) -> None:
        self.app = app
        self.exact = exact
        self._metrics = metrics
        self._listener = listener
        self._quiet = quiet_routes
        # Per (method label, route, status): a lock-free tally, flushed into the metrics on
        # scrape (a labelled Counter.inc plus Histogram.observe cost ~5 µs a request), the
        # label and the access line's level.
        self._lines: dict[tuple[str, str, int], tuple[RouteTally, str, int]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = _clock()
        request_id = sane_request_id(request_header(scope["headers"], REQUEST_ID_HEADER))
        text_id = request_id.decode("ascii")
        scope[REQUEST_ID_SCOPE_KEY] = text_id
        status = 0  # no answer started yet (recorded as 500 if none ever is)
        sending: _SendWithId | None = None
        try:
            # An exact route binds the log context itself if it logs while answering (the
            # validate routes and the JWK Set do not); the access line binds it when written.
            answer = None if self.exact is None else await self.exact.respond(scope, receive)
            if answer is None:
                bind_request_id(text_id)
                # The router records the matched route in the scope (an outer router's is
                # stale).
                scope["route"] = None
                sending = _SendWithId(send, request_id)
                await self.app(scope, receive, sending)
            else:
                status = answer.status
                headers = [*answer.headers, (REQUEST_ID_HEADER, request_id)]
                await send({"type": "http.response.start", "status": status, "headers": headers})
                await send({"type": "http.response.body", "body": answer.body})
        except BaseException as exc:
            if sending is None:
                sending = _SendWithId(send, request_id)
                sending.status = status
            bind_request_id(text_id)
            await self._failed(scope, receive, sending, exc)
        finally:
            if sending is not None:
                status = sending.status
            self._record(scope, status or 500, _clock() - started, text_id)

    async def _failed(
        self, scope: Scope, receive: Receive, send: _SendWithId, exc: BaseException
    ) -> None:
        """Answer an exception that escaped before any answer started, then re-raise it.

        Cancelled at the shutdown timeout: 503 + Retry-After (not uvicorn's 500), and the
        cancellation ends there. Anything else: the 500 problem, as Starlette's
        ``ServerErrorMiddleware``, then re-raised for the server to log.
        """
        if isinstance(exc, asyncio.CancelledError):
            if send.status:
                raise exc
            logger.warning("request cancelled: the server is stopping (503)")
            await stopping()(scope, receive, send)
            return
        if isinstance(exc, Exception) and not send.status:
            error = await unexpected_error(Request(scope), exc)
            await error(scope, receive, send)
        raise exc

    def _record(self, scope: Scope, status: int, seconds: float, request_id: str) -> None:
        """Count one answered request and write its access line."""
        route_object: Any = scope.get("route")
        route = getattr(route_object, "path", None)
        if not isinstance(route, str):
            route = UNMATCHED_ROUTE
        line = self._lines.get((scope["method"], route, status))
        if line is None:
            line = self._line(scope["method"], route, status)
        tally, method, level = line
        tally.add(seconds)
        if ACCESS_LOGGER.isEnabledFor(level):
            bind_request_id(request_id)
            jti = scope.get(JTI_SCOPE_KEY)
            ACCESS_LOGGER.log(
                level,
                "request",
                extra={
                    "listener": self._listener,
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 3),
                    **({} if jti is None else {"jti": jti}),
                },
            )

    def _line(self, method: str, route: str, status: int) -> tuple[RouteTally, str, int]:
        """The tally, method label and access-line level of ``(method, route, status)``.

        Made once per usual method (an unusual one is labelled ``other`` each time, so
        the table stays bounded whatever methods clients invent).
        """
        label = method_label(method)
        known = self._lines.get((label, route, status))
        if known is None:
            tally = self._metrics.tally(self._listener, label, route, status)
            level = logging.DEBUG if route in self._quiet and status < 400 else logging.INFO
            known = (tally, label, level)
            self._lines[(label, route, status)] = known
        return known

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)
