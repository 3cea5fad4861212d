"""Reading a request body from the ASGI ``receive``, under a size cap.

One reader for the raw-ASGI gateway endpoints (`keyturn.server.gateway.endpoints`) and
for the Starlette handlers (`keyturn.server.requests`): a body over the cap is a 413
`RequestRejectedError`, a client that hangs up mid-body a `ClientDisconnect` (499).
"""

from __future__ import annotations

from starlette.requests import ClientDisconnect
from starlette.types import Receive

from keyturn.server.errors import RequestRejectedError

__all__ = ["check_declared_size", "read_body", "too_large"]


def too_large(limit: int) -> RequestRejectedError:
    """The 413 of a body over ``limit`` bytes."""
    return RequestRejectedError(
        f"the body may be at most {limit} bytes",
        status_code=413,
        error_code="payload_too_large",
    )


def check_declared_size(declared: bytes | None, limit: int) -> None:
    """Refuse a ``Content-Length`` that is not ASCII digits, or one over ``limit``.

    Raises:
        RequestRejectedError: 413.
    """
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large(limit)


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole body of the request, read from ``receive``.

    Raises:
        RequestRejectedError: 413, the body runs over ``limit`` bytes.
        ClientDisconnect: the client hung up before the body's end.
    """
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)
