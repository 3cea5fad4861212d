"""What the listener limits cost per request: uvicorn's protocol against Keyturn's.

Usage: PYTHONPATH=src python bench/bench_listeners.py [--requests 50000] [--rounds 7]

Feeds kept-alive ``GET /v1/validate`` requests (a gateway's typical head: Host,
User-Agent, Authorization, X-Request-ID, Accept) one by one into uvicorn's
`HttpToolsProtocol` and into `keyturn.server.listeners.KeyturnHttpProtocol` over a fake
transport, with an ASGI app that answers 200 at once. Both run on the same event loop in
alternating rounds; the script prints the median µs per request of each and their
difference. No sockets: only the protocol's per-request work (parsing, the ASGI task,
the response bytes) is timed, where the limits' per-request additions live.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from keyturn.config import Settings
from keyturn.server.listeners import ListenerLimits, protocol_for

REQUEST = (
    b"GET /v1/validate HTTP/1.1\r\nHost: keyturn.internal:8080\r\nUser-Agent: envoy\r\n"
    b"Authorization: Bearer " + b"e" * 600 + b"\r\n"
    b"X-Request-ID: 0123456789abcdef0123456789abcdef\r\nAccept: */*\r\n\r\n"
)


class _Transport(asyncio.Transport):
    """Swallows what the protocol writes."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8080), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
    )
    await send({"type": "http.response.body", "body": b""})


async def _round(protocol_class: Any, config: uvicorn.Config, requests: int) -> float:
    state = ServerState()
    protocol = protocol_class(config=config, server_state=state, app_state={})
    transport = _Transport()
    protocol.connection_made(transport)
    started = time.perf_counter()
    for _ in range(requests):
        protocol.data_received(REQUEST)
        while state.tasks:  # let the ASGI task answer
            await asyncio.sleep(0)
    elapsed = time.perf_counter() - started
    assert transport.written == 2 * requests, transport.written  # head and body
    protocol.connection_lost(None)
    return elapsed / requests * 1e6


async def main(requests: int, rounds: int) -> None:
    limits = ListenerLimits.from_settings(Settings(), "public")
    keyturn = protocol_for(limits)
    plain = uvicorn.Config(_app, lifespan="off", log_config=None, http="httptools")
    ours = uvicorn.Config(_app, lifespan="off", log_config=None, http=keyturn)
    plain.load()
    ours.load()
    timings: dict[str, list[float]] = {"uvicorn": [], "keyturn": []}
    await _round(HttpToolsProtocol, plain, 1000)  # warm up
    await _round(keyturn, ours, 1000)
    for _ in range(rounds):
        timings["uvicorn"].append(await _round(HttpToolsProtocol, plain, requests))
        timings["keyturn"].append(await _round(keyturn, ours, requests))
    for name, values in timings.items():
        print(
            f"{name:8} median {statistics.median(values):6.2f}, best {min(values):6.2f} µs/request"
        )
    difference = statistics.median(
        k - u for k, u in zip(timings["keyturn"], timings["uvicorn"], strict=True)
    )
    print(f"added    {difference:+6.2f} µs/request (median of per-round differences)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.rounds))
