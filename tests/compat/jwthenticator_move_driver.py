"""JWThenticator 1.6.3's own clients, alive across a move from JWThenticator to Keyturn.

Runs INSIDE the separate virtualenv of ``jwthenticator==1.6.3`` (see
``tests/compat/test_jwthenticator_client.py``), driven by
``tests/compat/test_move_from_jwthenticator.py``:

1. against the real JWThenticator server at SERVER_URL: ``InternalClient`` registers
   COUNT keys, a ``Client`` per key authenticates; one JSON line ``{"before": [...]}``
   gives each client's identifier, JWT and refresh token;
2. it then waits for a line on standard input: meanwhile the test stops JWThenticator,
   runs ``keyturn import jwthenticator`` and starts Keyturn at the same URL;
3. with the very same ``Client`` objects: the old JWT at ``/validate`` and
   ``/validate_request`` and through a service guarded by ``server_utils.authenticate``,
   ``Client.refresh()`` with the old refresh token, ``Client.authenticate()`` with the key.
   One JSON line ``{"after": [...]}`` gives, per client, every status it saw, whether it
   still holds its key and refresh token (it drops them on a 401), and errors raised.

Usage: ``python jwthenticator_move_driver.py SERVER_URL COUNT``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import uuid
from typing import Any

from aiohttp import ClientSession, web
from jwthenticator import exceptions, server_utils
from jwthenticator.client import Client, InternalClient


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data), flush=True)


async def start_protected(server: str) -> tuple[web.AppRunner, str]:
    @server_utils.authenticate(server)
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/protected", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}/protected"


async def before(server: str, count: int) -> list[tuple[Client, str, str, str]]:
    clients = []
    for _ in range(count):
        identifier = uuid.uuid4()
        key = "device-" + secrets.token_urlsafe(24)
        await InternalClient(server, identifier).register_key(key)
        client = Client(server, identifier, key=key)
        await client.authenticate()
        clients.append((client, str(identifier), client.jwt, client.refresh_token))
    return clients


async def after(
    server: str, clients: list[tuple[Client, str, str, str]], protected: str
) -> list[dict[str, Any]]:
    results = []
    async with ClientSession() as session:
        for client, identifier, old_jwt, old_refresh in clients:
            seen: dict[str, Any] = {"identifier": identifier, "errors": []}
            async with session.post(f"{server}validate", json={"jwt": old_jwt}) as response:
                seen["validate"] = response.status
            headers = {"Authorization": f"Bearer {old_jwt}"}
            async with session.get(f"{server}validate_request", headers=headers) as response:
                seen["validate_request"] = response.status
            async with session.get(protected, headers=headers) as response:
                seen["service"] = response.status
            try:
                await client.refresh()
                seen["refresh"] = "ok"
                seen["refreshed_jwt_is_new"] = client.jwt != old_jwt
                seen["refresh_token_kept"] = client.refresh_token == old_refresh
                response = await client.get_with_auth(protected)
                seen["service_with_refreshed_jwt"] = response.status
                await client.authenticate()
                seen["authenticate"] = "ok"
                response = await client.get_with_auth(protected)
                seen["service_after_authenticate"] = response.status
            except (exceptions.RefreshError, exceptions.AuthenticationError) as exc:
                seen["errors"].append(type(exc).__name__)
            seen["key_kept"] = client._key is not None
            seen["refresh_token_held"] = client.refresh_token is not None
            results.append(seen)
    return results


async def main(server: str, count: int) -> None:
    clients = await before(server, count)
    emit(
        {
            "before": [
                {"identifier": identifier, "jwt": jwt, "refresh_token": refresh}
                for _, identifier, jwt, refresh in clients
            ]
        }
    )
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    runner, protected = await start_protected(server)
    try:
        emit({"after": await after(server, clients, protected)})
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
