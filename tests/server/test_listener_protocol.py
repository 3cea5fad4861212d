"""`KeyturnHttpProtocol` fed bytes directly, over a fake transport, with the sweep's clock
given by the test (the real-socket behaviour is in ``tests/e2e/test_listeners.py``)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from keyturn.config import Settings
from keyturn.server.listeners import KeyturnHttpProtocol, ListenerLimits, protocol_for

GET = b"GET /healthz HTTP/1.1\r\nHost: kt.test\r\n\r\n"


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.data = b""
        self.closed = False

    def write(self, data: Any) -> None:
        self.data += bytes(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def app(scope: Any, receive: Any, send: Any) -> None:
    if scope["method"] == "POST":
        while (await receive()).get("more_body"):
            pass
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
    )
    await send({"type": "http.response.body", "body": b"ok"})


class Listener:
    """Connections to one listener with the given limits, refusals counted."""

    def __init__(self, **limits: Any) -> None:
        base = ListenerLimits.from_settings(Settings(), "public", self._count)
        self.limits = replace(base, **limits)
        self.refused: list[str] = []
        self.state = ServerState()
        self.config = uvicorn.Config(
            app, lifespan="off", log_config=None, http=protocol_for(self.limits)
        )
        self.config.load()

    def _count(self, listener: str, reason: str) -> None:
        self.refused.append(reason)

    def connect(self) -> tuple[KeyturnHttpProtocol, FakeTransport]:
        protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.state, app_state={}
        )
        transport = FakeTransport()
        protocol.connection_made(transport)
        assert isinstance(protocol, KeyturnHttpProtocol)
        return protocol, transport

    async def settle(self) -> None:
        """Let the application tasks run until all are done (fails after 1,000 turns)."""
        for _ in range(1000):
            if not self.state.tasks:
                return
            await asyncio.sleep(0)
        pytest.fail("an application task never finished")


async def test_a_head_over_the_limit_is_refused_even_in_one_chunk() -> None:
    listener = Listener(max_header_bytes=4096)
    protocol, transport = listener.connect()

    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"b" * 5000 + b"\r\n\r\n")

    assert transport.data.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert transport.closed
    assert listener.refused == ["headers_too_large"]


async def test_a_head_over_the_limit_is_refused_before_it_ends() -> None:
    listener = Listener(max_header_bytes=4096)
    protocol, transport = listener.connect()

    protocol.data_received(b"GET / HTTP/1.1\r\nHost: a\r\n")
    for _ in range(5):
        if transport.closed:
            break
        protocol.data_received(b"X-More: " + b"m" * 1000 + b"\r\n")

    assert transport.data.startswith(b"HTTP/1.1 431 ")
    assert not listener.state.tasks  # never reached the application


async def test_a_head_within_the_limit_is_served_in_any_chunks() -> None:
    listener = Listener(max_header_bytes=4096)
    protocol, transport = listener.connect()
    head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Ok: " + b"o" * 3900 + b"\r\n\r\n"

    for start in range(0, len(head), 1000):
        protocol.data_received(head[start : start + 1000])
    await listener.settle()

    assert transport.data.startswith(b"HTTP/1.1 200 OK")
    assert listener.refused == []


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
    ],
)
async def test_a_missing_or_repeated_host_is_refused(head: bytes) -> None:
    listener = Listener()
    protocol, transport = listener.connect()

    protocol.data_received(head)

    assert transport.data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"error":"bad_host"' in transport.data
    assert listener.refused == ["bad_host"]


async def test_slow_heads_are_closed_at_the_header_timeout_and_not_before() -> None:
    listener = Listener(header_timeout=10.0)
    silent, silent_transport = listener.connect()
    slow, slow_transport = listener.connect()
    slow.data_received(b"GET / HTTP/1.1\r\nHo")
    opened = asyncio.get_running_loop().time()  # both count from their connection

    for connection in (silent, slow):
        connection.check(opened + 5.0)
        connection.check(opened + 9.9)
    assert not silent_transport.closed
    assert not slow_transport.closed
    silent.check(opened + 10.0)
    slow.data_received(b"st: a\r\nX-Slow: 1")  # still the same head: no new grace
    slow.check(opened + 10.0)

    assert silent_transport.closed
    assert silent_transport.data == b""
    assert slow_transport.data.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert listener.refused == ["header_timeout", "header_timeout"]


async def test_a_stalled_body_is_closed_at_the_body_timeout() -> None:
    listener = Listener(body_timeout=5.0)
    protocol, transport = listener.connect()
    protocol.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n12")
    await asyncio.sleep(0)  # the application waits for the rest

    protocol.check(50.0)
    protocol.check(54.0)
    assert not transport.closed
    protocol.check(55.0)

    assert transport.closed
    assert listener.refused == ["body_timeout"]
    protocol.connection_lost(None)
    await listener.settle()


async def test_idle_kept_alive_connections_are_left_to_the_keep_alive_timer() -> None:
    listener = Listener(header_timeout=1.0)
    protocol, transport = listener.connect()
    protocol.data_received(GET)
    await listener.settle()
    assert transport.data.startswith(b"HTTP/1.1 200 OK")
    assert protocol.timeout_keep_alive_task is not None

    protocol.check(0.0)
    protocol.check(1000.0)

    assert not transport.closed
    protocol.connection_lost(None)


async def test_a_connection_over_the_cap_is_answered_503_and_closed() -> None:
    listener = Listener(max_connections=2)
    kept = [listener.connect() for _ in range(2)]
    _, transport = listener.connect()

    assert transport.data.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"retry-after: 1" in transport.data
    assert transport.closed
    assert not any(t.closed for _, t in kept)
    assert listener.refused == ["too_many_connections"]


async def test_at_shutdown_an_idle_connection_still_answers_with_connection_close() -> None:
    listener = Listener()
    protocol, transport = listener.connect()
    protocol.data_received(GET)
    await listener.settle()
    listener.state.default_headers = [(b"connection", b"close")]  # as ListenerServer does

    protocol.shutdown()
    assert not transport.closed  # drained for DRAIN_SECONDS, not closed at once
    protocol.data_received(GET)
    await listener.settle()

    second = transport.data.split(b"HTTP/1.1 200 OK")[2]
    assert b"connection: close" in second
    assert transport.closed


async def test_a_write_whose_body_was_read_is_committing() -> None:
    listener = Listener()
    reading, _ = listener.connect()
    reading.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\n12")
    written, _ = listener.connect()

    gate = asyncio.Event()

    async def slow_app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    written.app = slow_app
    written.data_received(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n12")
    await asyncio.sleep(0)

    assert reading.committing() is None  # its body is still coming: cancellable
    assert written.committing() is not None
    gate.set()
    reading.connection_lost(None)
    await listener.settle()
    assert written.committing() is None
