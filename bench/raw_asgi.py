"""The raw-ASGI floor: the least a Python server on Keyturn's uvicorn settings can do.

Usage: python bench/raw_asgi.py PORT

Answers every request with a fixed small JSON body after reading the request's body, on
the uvicorn settings of ``keyturn serve`` (``keyturn.server.runner``: httptools, no
lifespan, no access log, no server header). ``bench_peers.py`` runs it pinned to the
server core as the floor that Keyturn's routes are compared with.
"""

from __future__ import annotations

import sys
from typing import Any

import uvicorn

BODY = b'{"access_token":"x","token_type":"Bearer","expires_in":300}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Read the whole body, answer 200 with ``BODY``."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        lifespan="off",
        log_config=None,
        access_log=False,
        server_header=False,
        date_header=True,
        http="httptools",
    )
