"""`keyturn.compat.jwthenticator` against a scripted aiohttp server: what the driver cannot show."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from keyturn.compat.jwthenticator import (
    Client,
    InvalidServerURLError,
    MissingCredentialsError,
    RefreshError,
)

IDENTIFIER = uuid.UUID("7d3c9b1e-5f0a-4c61-9a4e-2b8f6a0d1c55")


def jwt_with_exp(exp: int) -> str:
    def segment(value: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return ".".join([segment({"alg": "ES256", "typ": "JWT"}), segment({"exp": exp}), "c2ln"])


@dataclass
class Legacy:
    """JWThenticator's /refresh and a protected route; ``refresh_status`` scripts failures."""

    refresh_status: int = 200
    refreshes: int = 0
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    entered: asyncio.Event = field(default_factory=asyncio.Event)

    async def refresh(self, request: web.Request) -> web.Response:
        self.refreshes += 1
        self.entered.set()
        await self.gate.wait()
        if self.refresh_status != 200:
            return web.json_response({}, status=self.refresh_status)
        return web.json_response({"jwt": jwt_with_exp(4_000_000_000)})

    async def protected(self, request: web.Request) -> web.Response:
        return web.json_response({"authorization": request.headers["Authorization"][:7]})


@pytest.fixture
async def legacy() -> AsyncIterator[tuple[Legacy, str]]:
    fake = Legacy()
    app = web.Application()
    app.router.add_post("/refresh", fake.refresh)
    app.router.add_get("/protected", fake.protected)
    async with TestServer(app, host="127.0.0.1") as server:
        yield fake, str(server.make_url("/"))


async def test_a_503_from_refresh_keeps_the_refresh_token(legacy: tuple[Legacy, str]) -> None:
    """Only a 401 loses the refresh token, as in JWThenticator; Keyturn answers outages 503."""
    fake, url = legacy
    fake.refresh_status = 503
    fake.gate.set()
    client = Client(url, IDENTIFIER, refresh_token="ktr_kept")

    with pytest.raises(RefreshError):
        await client.refresh(auth_on_fail=False)

    assert client.refresh_token == "ktr_kept"


async def test_concurrent_requests_with_an_expired_jwt_share_one_refresh(
    legacy: tuple[Legacy, str],
) -> None:
    fake, url = legacy
    client = Client(url, IDENTIFIER, jwt=jwt_with_exp(1), refresh_token="ktr_rt")
    assert client.is_jwt_expired

    calls = [asyncio.ensure_future(client.get_with_auth(url + "protected")) for _ in range(20)]
    await asyncio.wait_for(fake.entered.wait(), timeout=30)  # the first caller is in /refresh
    for _ in range(20):  # let the others run up to the lock
        await asyncio.sleep(0)
    fake.gate.set()
    responses = await asyncio.gather(*calls)

    assert fake.refreshes == 1
    assert [r.status for r in responses] == [200] * 20
    assert await responses[0].json() == {"authorization": "Bearer "}
    assert not client.is_jwt_expired


def test_constructor_errors_are_jwthenticators() -> None:
    with pytest.raises(InvalidServerURLError):
        Client("localhost:8080", IDENTIFIER, key="k")
    with pytest.raises(MissingCredentialsError):
        Client("http://localhost:8080", IDENTIFIER)
