"""In-process cost of the gateway fast path per request (no sockets, no HTTP parsing).

Usage: PYTHONPATH=src python bench/bench_fastpath.py [--requests 200000] [--rounds 5]

Opens a `KeyturnState` on a temporary SQLite database, issues one access token, and
calls the public app (telemetry, `ExactRoutes`, the endpoints) directly with an ASGI scope for
``GET /validate_request`` and ``GET /v1/validate``, the way uvicorn would. Prints the
median µs per request of each route over the rounds. Run it against two checkouts
(``PYTHONPATH=<checkout>/src``) to measure what a change costs the fast path.
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


async def main(requests: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(data_dir=Path(directory), kek=SECRET, pepper=SECRET)
        state = await KeyturnState.open(settings, background=False)
        try:
            created = await state.service.create_key()
            pair = await state.service.authenticate(created.secret)
            app = build_public_app(state)
            header = (b"authorization", b"Bearer " + pair.access.token.encode())
            for path in ("/validate_request", "/v1/validate"):
                timings = [await _round(app, path, header, requests) for _ in range(rounds)]
                print(f"{path:20} {statistics.median(timings):6.2f} µs/request")
        finally:
            await state.close()


async def _round(app: Any, path: str, header: tuple[bytes, bytes], requests: int) -> float:
    headers = [(b"host", b"127.0.0.1"), (b"user-agent", b"bench"), header]
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": b"",
        "headers": headers,
    }
    statuses = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.perf_counter()
    for _ in range(requests):
        await app(scope, receive, send)
    elapsed = time.perf_counter() - started
    assert statuses == [200] * requests, "the token must validate"
    return elapsed / requests * 1e6


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    asyncio.run(main(options.requests, options.rounds))
