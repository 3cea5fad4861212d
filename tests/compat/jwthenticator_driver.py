"""Drive a running Keyturn with the unchanged JWThenticator 1.6.3 client (its own venv).

Runs INSIDE the separate virtualenv built by ``tests/compat/test_jwthenticator_client.py``
(``pip install jwthenticator==1.6.3``), never in Keyturn's: JWThenticator pins
``cryptography<=43.0.4`` and ``asyncpg ^0.28``, which clash with ours. It uses the public
API of ``jwthenticator.client`` and ``jwthenticator.server_utils``, and reads
``Client._key`` once to observe that the client drops a key the server refused.

Usage: ``python jwthenticator_driver.py PUBLIC_URL ADMIN_URL``. It starts a small aiohttp
service whose handlers are wrapped in ``server_utils.authenticate(PUBLIC_URL)``, then
prints one line per step: ``<step>: <observed>``. Each line is deterministic (no
tokens, ports or times), so the test compares the whole transcript. Exits 0 when it ran
to the end; any exception escapes with a traceback and a non-zero status.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import uuid
from importlib.metadata import version
from typing import Any

import jwt as pyjwt
from aiohttp import ClientSession, web
from jwthenticator import exceptions, server_utils
from jwthenticator.client import Client, InternalClient

KEY = "compat-" + uuid.uuid4().hex  # JWThenticator keys are caller-chosen strings


def say(step: str, observed: object) -> None:
    print(f"{step}: {observed}", flush=True)


def protected_app(keyturn_public: str) -> web.Application:
    """A service that trusts Keyturn through JWThenticator's own decorator."""

    @server_utils.authenticate(keyturn_public)
    async def handler(request: web.Request) -> web.Response:
        body = await request.text()
        return web.json_response({"method": request.method, "body": body})

    app = web.Application()
    app.router.add_route("*", "/protected", handler)
    return app


async def start_protected(keyturn_public: str) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(protected_app(keyturn_public))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/protected"


def header_alg(token: str) -> str:
    head = token.split(".", maxsplit=1)[0]
    decoded = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    return str(decoded["alg"])


def forged(claims: dict[str, Any], alg_of: str) -> str:
    """A token with ``claims`` and a junk signature, shaped like one Keyturn signs."""
    head = base64.urlsafe_b64encode(json.dumps({"alg": alg_of, "typ": "JWT"}).encode())
    body = base64.urlsafe_b64encode(json.dumps(claims).encode())
    junk = base64.urlsafe_b64encode(b"\0" * 64)
    return b".".join(part.rstrip(b"=") for part in (head, body, junk)).decode()


async def show(step: str, response: Any) -> None:
    text = await response.text()
    say(step, f"{response.status} {text}")


async def run(public: str, admin: str, protected: str) -> None:
    say("jwthenticator", version("jwthenticator"))
    identifier = uuid.uuid4()

    # -- InternalClient against the admin listener ---------------------------------------
    internal = InternalClient(admin, identifier)
    await internal.register_key(KEY)  # raises unless 201 {"result": true}
    say("InternalClient.register_key", "ok")
    await internal.register_key(KEY)  # re-registering renews; still 201
    say("InternalClient.register_key again", "ok")
    say("InternalClient.is_key_registered", await internal.is_key_registered(KEY))
    say("InternalClient.is_key_registered unknown", await internal.is_key_registered("nope"))
    try:
        await InternalClient(public, identifier).register_key("compat-other")
    except exceptions.RegisterKeyError as exc:
        say("InternalClient.register_key on the public listener", f"RegisterKeyError{exc.args}")

    # -- Client: authenticate and refresh ------------------------------------------------
    client = Client(public, identifier, key=KEY)
    await client.authenticate()
    first_jwt, first_refresh = client.jwt, client.refresh_token
    assert first_jwt is not None
    assert first_refresh is not None
    say("Client.authenticate", f"jwt alg={header_alg(first_jwt)} expired={client.is_jwt_expired}")
    claims = pyjwt.decode(first_jwt, options={"verify_signature": False})
    say("jwt identifier claim", claims["identifier"] == str(identifier))
    await client.refresh()
    assert client.jwt is not None
    say(
        "Client.refresh",
        f"new jwt={client.jwt != first_jwt} same refresh token="
        f"{client.refresh_token == first_refresh} expired={client.is_jwt_expired}",
    )

    # -- the protected service (server_utils.authenticate -> POST {public}/validate) -----
    await show("Client.get_with_auth", await client.get_with_auth(protected))
    await show("Client.post_with_auth", await client.post_with_auth(protected, data="hello"))
    await show("Client.request_with_auth PUT", await client.request_with_auth("PUT", protected))

    # A token the service refuses (bad signature, not expired): the client refreshes once.
    client.jwt = forged({"exp": 4_000_000_000}, header_alg(first_jwt))
    before = client.jwt
    response = await client.get_with_auth(protected)
    say(
        "get_with_auth after a refused token", f"{response.status} refreshed={client.jwt != before}"
    )

    # An expired token: the client refreshes before sending anything.
    stale = Client(public, identifier, jwt=forged({"exp": 1}, "RS256"), key=KEY)
    say("Client with an expired jwt", f"expired={stale.is_jwt_expired}")
    await show("  get_with_auth", await stale.get_with_auth(protected))

    # A client given only the key authenticates on first use.
    lazy = Client(public, identifier, key=KEY)
    await show("Client with only a key: get_with_auth", await lazy.get_with_auth(protected))

    # A client given only a refresh token refreshes on first use.
    carried = Client(public, identifier, refresh_token=first_refresh)
    await show(
        "Client with only a refresh token: get_with_auth", await carried.get_with_auth(protected)
    )

    # -- the decorator's own refusals (Keyturn's /validate answers 401, never 500) -------
    async with ClientSession() as session:
        async with session.get(protected) as response:
            await show("service without Authorization", response)
        async with session.get(protected, headers={"Authorization": "Token x"}) as response:
            await show("service with a malformed Authorization", response)
        async with session.get(protected, headers={"Authorization": "Bearer junk"}) as response:
            await show("service with Bearer junk", response)

    # -- failures the client must see as failures ----------------------------------------
    wrong = Client(public, identifier, key="compat-wrong-" + uuid.uuid4().hex)
    try:
        await wrong.authenticate()
    except exceptions.AuthenticationError:
        kept = wrong._key is not None  # the client forgets a key the server refused
        say("Client.authenticate with an unknown key", f"AuthenticationError key kept={kept}")
    bogus = Client(public, identifier, refresh_token="ktr_bogus", key=None)
    try:
        await bogus.refresh(auth_on_fail=False)
    except exceptions.RefreshError:
        say(
            "Client.refresh with an unknown refresh token",
            f"RefreshError refresh token kept={bogus.refresh_token is not None}",
        )


async def main(public: str, admin: str) -> None:
    runner, protected = await start_protected(public)
    try:
        await run(public, admin, protected)
    finally:
        await runner.cleanup()
    say("done", "ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
