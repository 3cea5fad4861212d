"""In-process cost of the gateway fast path per request (no sockets, no HTTP parsing).

Usage: PYTHONPATH=src python bench/bench_fastpath.py [--requests 200000] [--rounds 5] [--telemetry]

Opens a `KeyturnState` on a temporary SQLite database, issues one access token, and
calls the public app (telemetry, `ExactRoutes`, the endpoints) directly with an ASGI scope for
``GET /validate_request``, ``GET /v1/validate``, ``POST /validate`` and ``GET /jwks``, the
way uvicorn would. Prints the median µs per request of each route over the rounds, wall
clock and CPU time of this process (the steadier figure on a shared machine). Run it
against two checkouts (``PYTHONPATH=<checkout>/src``) to measure what a change costs.

``--telemetry`` also answers each route bare (its exact route's answer and the two
ASGI messages, no `RequestTelemetry` around them), interleaved with the whole app round by
round, and prints the difference: the telemetry's own CPU cost per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from keyturn.config import Settings
from keyturn.server import KeyturnState, build_public_app

SECRET = base64.urlsafe_b64encode(b"b" * 32).decode().rstrip("=")


async def main(requests: int, rounds: int, telemetry: bool) -> None:
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(data_dir=Path(directory), kek=SECRET, pepper=SECRET)
        state = await KeyturnState.open(settings, background=False)
        try:
            created = await state.service.create_key()
            pair = await state.service.authenticate(created.secret)
            app = build_public_app(state)
            token = pair.access.token.encode()
            header = (b"authorization", b"Bearer " + token)
            body = b'{"jwt":"' + token + b'"}'
            for method, path, extra, sent in (
                ("GET", "/validate_request", header, b""),
                ("GET", "/v1/validate", header, b""),
                ("POST", "/validate", (b"content-type", b"application/json"), body),
                ("GET", "/jwks", (b"accept", b"*/*"), b""),
            ):
                timings, bare = [], []
                for _ in range(rounds):
                    timings.append(await _round(app, method, path, extra, sent, requests=requests))
                    if telemetry:
                        bare.append(
                            await _round(_bare(app), method, path, extra, sent, requests=requests)
                        )
                wall = statistics.median(wall for wall, _ in timings)
                cpu = statistics.median(cpu for _, cpu in timings)
                line = f"{method:4} {path:18} {wall:6.2f} µs/request  (CPU {cpu:6.2f} µs)"
                if bare:
                    share = cpu - statistics.median(cpu for _, cpu in bare)
                    line += f"  telemetry CPU {share:5.2f} µs"
                print(line)
        finally:
            await state.close()


def _bare(app: Any) -> Any:
    """The exact route's answer sent as is: the app without its `RequestTelemetry`."""

    async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
        found = await app.exact.respond(scope, receive)
        await send(
            {"type": "http.response.start", "status": found.status, "headers": found.headers}
        )
        await send({"type": "http.response.body", "body": found.body})

    return answer


async def _round(
    app: Any, method: str, path: str, header: tuple[bytes, bytes], body: bytes, *, requests: int
) -> tuple[float, float]:
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), header]
    statuses = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(requests):
        # A fresh scope per request, as uvicorn makes one (the app may write into it).
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": b"",
            "headers": headers,
        }
        await app(scope, receive, send)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert statuses == [200] * requests, "the token must validate"
    return elapsed / requests * 1e6, cpu / requests * 1e6


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--telemetry", action="store_true", help="also measure the telemetry")
    options = parser.parse_args()
    asyncio.run(main(options.requests, options.rounds, options.telemetry))
