"""JWThenticator 1.6.3's ``server_utils.authenticate``, reproduced for the driver's service.

403 without ``Authorization``, 400 unless it is exactly ``Bearer <jwt>``, then
``POST {server}/validate`` and 401 unless that answers 200.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from urllib.parse import urljoin

from aiohttp import ClientSession, web

Handler = Callable[..., Awaitable[web.StreamResponse]]


def authenticate(server: str) -> Callable[[Handler], Handler]:
    base = server if server.endswith("/") else server + "/"

    def wrap(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(request: web.Request, *args: Any, **kwargs: Any) -> web.StreamResponse:
            authorization = request.headers.get("Authorization")
            if authorization is None:
                return web.json_response({}, status=403)
            parts = authorization.split(" ")
            if len(parts) != 2 or parts[0] != "Bearer" or not parts[1]:
                return web.json_response({}, status=400)
            async with (
                ClientSession() as session,
                session.post(urljoin(base, "validate"), json={"jwt": parts[1]}) as response,
            ):
                if response.status != 200:
                    return web.json_response({}, status=401)
            return await handler(request, *args, **kwargs)

        return guarded

    return wrap
