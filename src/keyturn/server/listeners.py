"""Bounds on what a client can hold: connections, slow requests, headers; a graceful stop.

uvicorn's HTTP protocol (httptools) keeps a connection as long as its client wants: a
connection that never sends a request, or sends its headers one byte a minute, is kept
for ever, and each one holds a file descriptor. `KeyturnHttpProtocol` adds, per listener
(`ListenerLimits`, from the settings):

- a **connection cap**: a connection beyond ``max_connections`` is answered ``503`` with
  ``Retry-After`` and closed at once, so an attacker cannot exhaust the process's file
  descriptors, and the admin listener (its own, smaller cap) stays reachable;
- a **header timeout**: a request's headers must arrive within ``header_timeout`` seconds
  of the connection opening or of the request's first byte (``408``, or a plain close
  when nothing came at all);
- a **body timeout**: its body within ``body_timeout`` seconds after the headers (the
  connection is closed; the handler sees a client disconnect);
- an **idle keep-alive timeout** (uvicorn's own, ``keepalive_timeout``);
- a **header size limit**: more than ``max_header_bytes`` before the end of the headers
  is refused with ``431``; a missing (HTTP/1.1) or repeated ``Host`` with ``400``.

The timeouts are enforced by one sweep per listener that looks at every connection a few
times per timeout (a cost per connection and second, none per request); a connection is
closed between its timeout and its timeout plus one sweep interval.

`ListenerServer` is uvicorn's server with Keyturn's shutdown: after SIGTERM it stops
accepting, answers requests still arriving on kept-alive connections (with
``Connection: close``) for `DRAIN_SECONDS` instead of resetting them, lets in-flight
requests finish for ``shutdown_timeout`` seconds, then cancels those that are not
committing a write (they answer ``503`` with ``Retry-After``, see
`keyturn.server.errors.stopping`); a write whose body was read (it may be committing a
refresh token rotation) gets ``shutdown_write_timeout`` seconds more, so its answer is
sent.

`KeyturnHttpProtocol` copies three of uvicorn's methods with its additions
(``data_received``, ``on_header``, ``_start_asgi_task``; uvicorn 0.54, without its opt-in
``reset_contextvars``) instead of wrapping them, to add nothing but attribute writes per
request: compare them with uvicorn's when upgrading it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from keyturn.config import Settings

__all__ = [
    "DRAIN_SECONDS",
    "FD_RESERVE",
    "KeyturnHttpProtocol",
    "ListenerLimits",
    "ListenerServer",
    "protocol_for",
    "public_max_connections",
]

logger = logging.getLogger("keyturn.server")
#: uvicorn's logger: this class replaces ``Server.shutdown``, which logged its line there.
_uvicorn_logger = logging.getLogger("uvicorn.error")

#: Seconds an idle kept-alive connection stays open after SIGTERM, so a request its
#: client sends right then is answered (with ``Connection: close``), not reset.
DRAIN_SECONDS: Final = 1.0
#: File descriptors the default connection cap leaves for the process's own use.
FD_RESERVE: Final = 64
#: The default cap never exceeds this (a soft limit of "unlimited" included).
_AUTO_CEILING: Final = 1_000_000
#: Methods whose requests may write (a POST may rotate a refresh token).
_READ_ONLY: Final = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class ListenerLimits:
    """What one listener allows its clients (see the module docstring)."""

    name: str
    max_connections: int
    header_timeout: float
    body_timeout: float
    keepalive_timeout: float
    max_header_bytes: int
    shutdown_timeout: float
    shutdown_write_timeout: float
    #: Counts a connection refused or closed: ``refused(listener, reason)``.
    refused: Callable[[str, str], None] = field(default=lambda listener, reason: None)

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        listener: str,
        refused: Callable[[str, str], None] = lambda listener, reason: None,
    ) -> ListenerLimits:
        """The public or admin listener's limits; ``refused`` counts what it refuses."""
        public = listener == "public"
        return cls(
            name=listener,
            max_connections=(
                public_max_connections(settings) if public else settings.admin_max_connections
            ),
            header_timeout=settings.header_timeout,
            body_timeout=settings.body_timeout,
            keepalive_timeout=settings.keepalive_timeout,
            max_header_bytes=settings.max_header_bytes,
            shutdown_timeout=settings.shutdown_timeout,
            shutdown_write_timeout=settings.shutdown_write_timeout,
            refused=refused,
        )

    @property
    def sweep_interval(self) -> float:
        """Seconds between two looks at the connections: a quarter of the shortest timeout."""
        return max(0.05, min(1.0, min(self.header_timeout, self.body_timeout) / 4))


def public_max_connections(settings: Settings) -> int:
    """``max_connections``, or by default what the file-descriptor limit leaves.

    The soft ``RLIMIT_NOFILE`` less the admin listener's cap, the database pool and
    `FD_RESERVE` for the process itself (log files, SQLite, Redis, DNS), at least 32.
    """
    if settings.max_connections is not None:
        return settings.max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > _AUTO_CEILING:
        soft = _AUTO_CEILING
    room = soft - settings.admin_max_connections - settings.database_pool_size - FD_RESERVE
    return max(32, room)


def _refusal(status: int, reason: str, detail: str, code: str, *, retry: bool = False) -> bytes:
    """A whole HTTP/1.1 problem+json answer that closes the connection."""
    body = json.dumps(
        {"type": "about:blank", "title": reason, "status": status, "detail": detail, "error": code},
        separators=(",", ":"),
    ).encode()
    head = [
        f"HTTP/1.1 {status} {reason}",
        "content-type: application/problem+json",
        f"content-length: {len(body)}",
        "connection: close",
        *(["retry-after: 1"] if retry else []),
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode("ascii") + body


_BUSY: Final = _refusal(
    503,
    "Service Unavailable",
    "this listener holds as many connections as it may; try again",
    "too_many_connections",
    retry=True,
)
_HEADERS_TOO_LARGE: Final = _refusal(
    431,
    "Request Header Fields Too Large",
    "the request's headers are larger than this server accepts",
    "headers_too_large",
)
_BAD_HOST: Final = _refusal(
    400,
    "Bad Request",
    "an HTTP/1.1 request needs exactly one Host header",
    "bad_host",
)
_TOO_SLOW: Final = _refusal(
    408,
    "Request Timeout",
    "the request's headers did not arrive in time",
    "request_timeout",
)


class _RefusedError(Exception):
    """Raised in a parser callback to stop parsing a request that is refused."""


class KeyturnHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with Keyturn's connection limits.

    `protocol_for` makes one subclass per listener, with its `ListenerLimits` set.
    """

    limits: ClassVar[ListenerLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeout_keep_alive = self.limits.keepalive_timeout  # type: ignore[assignment]
        self._header_bytes = -1  # bytes of the request's head so far; -1: not reading one
        self._chunk = 0  # bytes of the chunk being parsed
        self._hosts = 0
        self._refusal: tuple[bytes, str] | None = None
        self._running: tuple[RequestResponseCycle, asyncio.Task[None]] | None = None
        # What the sweep saw last: the cycle, the phase, and since when.
        self._watched: tuple[RequestResponseCycle | None, bool] = (None, True)
        self._since = 0.0

    # Per connection

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._since = self.loop.time()
        self._watched = (None, True)
        if len(self.connections) > self.limits.max_connections:
            self._refuse(_BUSY, "too_many_connections")

    def _refuse(self, answer: bytes | None, reason: str) -> None:
        """Send ``answer`` (if any and no response is under way), close the connection,
        and count it under ``reason``."""
        transport = self.transport
        if transport.is_closing():
            return
        self.limits.refused(self.limits.name, reason)
        if answer is not None and (self.cycle is None or self.cycle.response_complete):
            transport.write(answer)
        transport.close()

    def shutdown(self) -> None:
        """SIGTERM: an idle connection stays open `DRAIN_SECONDS` for a request in flight.

        Its answer carries ``Connection: close`` (`ListenerServer` adds it to every
        answer from now on); a busy connection closes after its current answer.
        """
        if self.cycle is None or self.cycle.response_complete:
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                min(DRAIN_SECONDS, self.limits.keepalive_timeout), self.timeout_keep_alive_handler
            )
        else:
            self.cycle.keep_alive = False

    def check(self, now: float) -> None:
        """Close the connection if its request's head or body is overdue (the sweep)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            if self.timeout_keep_alive_task is not None:
                return  # idle between requests: uvicorn's keep-alive timer closes it
            head, limit = True, self.limits.header_timeout
        elif cycle.more_body and not cycle.response_started:
            head, limit = False, self.limits.body_timeout
        else:
            return  # the application has the request
        watched, was_head = self._watched
        if watched is not cycle or was_head is not head:
            self._watched, self._since = (cycle, head), now
            return
        if now - self._since < limit:
            return
        if not head:
            self._refuse(None, "body_timeout")  # the handler's next read sees a disconnect
        elif self._header_bytes > 0:
            self._refuse(_TOO_SLOW, "header_timeout")
        else:
            self._refuse(None, "header_timeout")  # nothing came: nothing to answer

    # Per request: a few attribute writes on top of uvicorn's own callbacks.

    def data_received(self, data: bytes) -> None:
        """uvicorn's ``data_received``, with the header size limit and refusals."""
        self._unset_keepalive_if_required()
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(*self._refusal)
                return
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self.send_400_response(msg)
            return
        if self._header_bytes >= 0:  # the head goes on past this chunk
            self._header_bytes += self._chunk
            if self._header_bytes > self.limits.max_header_bytes:
                self._refuse(_HEADERS_TOO_LARGE, "headers_too_large")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0
        self._hosts = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        """uvicorn's ``on_header``, counting ``Host`` headers."""
        name = name.lower()
        if name == b"host":
            self._hosts += 1
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        # The earlier chunks of this head plus this whole chunk bound the head's size;
        # only when that passes the limit is the head measured.
        limit = self.limits.max_header_bytes
        if self._header_bytes + self._chunk > limit and self._head_size() > limit:
            self._refusal = (_HEADERS_TOO_LARGE, "headers_too_large")
            raise _RefusedError
        self._header_bytes = -1
        if self._hosts != 1 and (self._hosts or self.parser.get_http_version() == "1.1"):
            self._refusal = (_BAD_HOST, "bad_host")
            raise _RefusedError
        super().on_headers_complete()

    def _head_size(self) -> int:
        """Bytes of the request line and headers, as sent (give or take whitespace)."""
        return len(self.url) + 16 + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        """uvicorn's, remembering the task (shutdown tells writes from reads)."""
        task = self.loop.create_task(cycle.run_asgi(app))
        task.add_done_callback(self.tasks.discard)
        self.tasks.add(task)
        self._running = (cycle, task)

    def committing(self) -> asyncio.Task[None] | None:
        """The task of a write whose body was read and whose answer is not sent yet."""
        running = self._running
        if running is None:
            return None
        cycle, task = running
        if task.done() or cycle.response_complete or cycle.more_body:
            return None
        return task if cycle.scope["method"] not in _READ_ONLY else None


def protocol_for(limits: ListenerLimits) -> type[KeyturnHttpProtocol]:
    """The protocol class of one listener."""
    name = f"KeyturnHttpProtocol_{limits.name}"
    return type(name, (KeyturnHttpProtocol,), {"limits": limits})


class ListenerServer(uvicorn.Server):
    """One listener: uvicorn's server with the connection sweep and Keyturn's shutdown.

    The runner handles the signals (two servers share one loop).
    """

    #: Called once this listener accepts connections (the runner's ready line).
    on_started: Callable[[], None] | None = None

    def __init__(self, config: uvicorn.Config, limits: ListenerLimits) -> None:
        super().__init__(config)
        self.limits = limits
        self._sweeper: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def _connections(self) -> list[KeyturnHttpProtocol]:
        return [c for c in self.server_state.connections if isinstance(c, KeyturnHttpProtocol)]

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        self._sweeper = asyncio.create_task(self._sweep())
        if self.started and self.on_started is not None:
            self.on_started()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        interval = self.limits.sweep_interval
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for connection in self._connections():
                connection.check(now)

    async def shutdown(self, sockets: Any = None) -> None:
        """Stop accepting, drain, wait for requests, then cancel the stragglers."""
        _uvicorn_logger.info("Shutting down")  # uvicorn's own line (logged once per process)
        logger.info("%s listener stopping", self.limits.name)
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        state = self.server_state
        state.default_headers = [*state.default_headers, (b"connection", b"close")]
        for connection in list(state.connections):
            connection.shutdown()
        try:
            await asyncio.wait_for(
                self._wait_tasks_to_complete(), timeout=self.limits.shutdown_timeout
            )
        except TimeoutError:
            await self._cancel_stragglers()
        finally:
            if self._sweeper is not None:
                self._sweeper.cancel()

    async def _cancel_stragglers(self) -> None:
        """Cancel the requests still running, writes after ``shutdown_write_timeout`` more."""
        writes = {task for c in self._connections() if (task := c.committing()) is not None}
        others = [task for task in self.server_state.tasks if task not in writes]
        if others:
            logger.warning(
                "%s listener: cancelling %d request(s) at the shutdown timeout (503)",
                self.limits.name,
                len(others),
            )
            for task in others:
                task.cancel("the server is stopping")
        if writes:
            logger.warning(
                "%s listener: %d write(s) in flight get %s s more to commit and answer",
                self.limits.name,
                len(writes),
                self.limits.shutdown_write_timeout,
            )
            _, pending = await asyncio.wait(writes, timeout=self.limits.shutdown_write_timeout)
            for task in pending:
                task.cancel("the server is stopping")
            others += pending
        if others:
            # Let the cancelled requests send their 503 before the loop ends.
            await asyncio.wait(others, timeout=1.0)
