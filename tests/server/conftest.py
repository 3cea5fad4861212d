"""Fixtures for the HTTP tests: a `KeyturnState` over a fresh database and in-process clients.

Both listeners run in process through `httpx.ASGITransport`. ``state`` (and the
``public``/``admin`` clients built on it) runs on SQLite and on PostgreSQL, for the flows
that touch storage; ``sqlite_state`` and its clients are for the many request-shape
tests that need only one backend. Time is a `FakeClock` the tests move; nothing sleeps.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyturn.config import Settings
from keyturn.core.signing import SigningKey
from keyturn.core.tokens import peek_unverified_claims
from keyturn.server import KeyturnState, build_admin_app, build_public_app
from keyturn.testing import FakeClock
from tests.security.forge import forge

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ISSUER = "https://kt.test"
AUDIENCE = "api"
KEK = base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("=")
PEPPER = base64.urlsafe_b64encode(b"p" * 32).decode().rstrip("=")
ADMIN_TOKEN = "admin-token-0123456789abcdef"
LOOPBACK = ("127.0.0.1", 123)
REMOTE = ("203.0.113.7", 40000)
#: Identifiers are UUIDs in JWThenticator; canonical lower-case form.
IDENTIFIER = "7d3c9b1e-5f0a-4c61-9a4e-2b8f6a0d1c55"
OTHER_IDENTIFIER = "0b7e6f6c-1a2b-4c3d-8e9f-001122334455"
LEGACY_KEY = "legacy-key-for-tests-0123456789"
#: A signing key the tests hold the private half of: states opened with
#: ``signing_key_pem=FORGING_PEM`` sign with it, so tests can sign hostile claims for real.
FORGING_KEY = SigningKey.generate("ES256")
FORGING_PEM = FORGING_KEY.private_pem().decode()

OpenState = Callable[..., Awaitable[KeyturnState]]
MakeClient = Callable[..., httpx.AsyncClient]


@pytest.fixture
def clock() -> FakeClock:
    """The service's and the rate limiter's clock, standing at START until moved."""
    return FakeClock(START)


def make_settings(database_url: str, data_dir: Path, **overrides: Any) -> Settings:
    """The suite's settings over ``database_url``, with ``overrides``."""
    values: dict[str, Any] = {
        "database_url": database_url,
        "data_dir": data_dir,
        "kek": KEK,
        "pepper": PEPPER,
        "issuer": ISSUER,
        "audience": AUDIENCE,
        **overrides,
    }
    return Settings(**values)


@pytest.fixture
async def open_state(tmp_path: Path, clock: FakeClock) -> AsyncIterator[OpenState]:
    """Open states over given database URLs and settings; all are closed at teardown."""
    opened: list[KeyturnState] = []

    async def open_(database_url: str, **overrides: Any) -> KeyturnState:
        settings = make_settings(database_url, tmp_path, **overrides)
        state = await KeyturnState.open(settings, background=False, clock=clock)
        opened.append(state)
        return state

    try:
        yield open_
    finally:
        for state in opened:
            await state.close()


@pytest.fixture
async def state(open_state: OpenState, database_url: str) -> KeyturnState:
    """A state over a fresh database, on SQLite and on PostgreSQL."""
    return await open_state(database_url)


@pytest.fixture
async def sqlite_state(open_state: OpenState, sqlite_database_url: str) -> KeyturnState:
    """A state over a fresh SQLite database (for tests of HTTP shape only)."""
    return await open_state(sqlite_database_url)


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Build in-process clients for an app; all are closed at teardown."""
    clients: list[httpx.AsyncClient] = []

    def make(app: Any, *, peer: tuple[str, int] = LOOPBACK, **kwargs: Any) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=peer)
        client = httpx.AsyncClient(transport=transport, base_url="http://kt.test", **kwargs)
        clients.append(client)
        return client

    try:
        yield make
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
def public(state: KeyturnState, make_client: MakeClient) -> httpx.AsyncClient:
    """The public listener over ``state``, seen from a remote client."""
    return make_client(build_public_app(state), peer=REMOTE)


@pytest.fixture
def admin(state: KeyturnState, make_client: MakeClient) -> httpx.AsyncClient:
    """The admin listener over ``state``, seen from loopback."""
    return make_client(build_admin_app(state))


@pytest.fixture
def sqlite_public(sqlite_state: KeyturnState, make_client: MakeClient) -> httpx.AsyncClient:
    """The public listener over ``sqlite_state``, seen from a remote client."""
    return make_client(build_public_app(sqlite_state), peer=REMOTE)


@pytest.fixture
def sqlite_admin(sqlite_state: KeyturnState, make_client: MakeClient) -> httpx.AsyncClient:
    """The admin listener over ``sqlite_state``, seen from loopback."""
    return make_client(build_admin_app(sqlite_state))


# -- helpers -------------------------------------------------------------------------------


async def register_legacy_key(
    admin: httpx.AsyncClient, key: str = LEGACY_KEY, identifier: str = IDENTIFIER
) -> None:
    """Register a JWThenticator-style key through the admin listener."""
    response = await admin.post("/register_key", json={"key": key, "identifier": identifier})
    assert response.status_code == 201, response.text


async def create_key(admin: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    """Create a generated key through the admin API; returns the 201 body."""
    response = await admin.post("/v1/admin/keys", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def legacy_tokens(
    public: httpx.AsyncClient, key: str = LEGACY_KEY, identifier: str = IDENTIFIER
) -> dict[str, str]:
    """``POST /authenticate`` that must succeed; returns ``{"jwt", "refresh_token"}``."""
    response = await public.post("/authenticate", json={"key": key, "identifier": identifier})
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def v1_tokens(public: httpx.AsyncClient, key: str, **form: str) -> dict[str, Any]:
    """``POST /v1/token`` (client_credentials, HTTP Basic) that must succeed."""
    response = await public.post(
        "/v1/token", data={"grant_type": "client_credentials", **form}, auth=(key, "")
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    """An ``Authorization: Bearer`` header."""
    return {"Authorization": f"Bearer {token}"}


def resign(
    token: str, *, key: SigningKey = FORGING_KEY, drop: tuple[str, ...] = (), **claims: Any
) -> str:
    """``token`` with ``claims`` changed (``drop`` removed), validly signed by ``key``."""
    header, payload = peek_unverified_claims(token)
    payload = {name: value for name, value in {**payload, **claims}.items() if name not in drop}
    return forge(header, payload, key=key)


@pytest.fixture
async def forging_state(open_state: OpenState, sqlite_database_url: str) -> KeyturnState:
    """A SQLite state whose active signing key is `FORGING_KEY`."""
    return await open_state(sqlite_database_url, signing_key_pem=FORGING_PEM)
