"""The runnable examples, and the verifiers, against a real ``keyturn serve``.

One server for the module (``tests/serve_fixtures.py``); tokens come from it over HTTP:
a key registered on the admin listener, then ``/v1/token`` or ``/authenticate``.
"""

import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from keyturn.errors import InsufficientScopeError, InvalidTokenError
from keyturn.testing import FakeClock
from keyturn.verify import JWKSVerifier, RemoteVerifier
from tests.serve_fixtures import KeyturnServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ISSUER = "https://keyturn.test"
AUDIENCE = "orders-api"


def load_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyturnServer]:
    base = tmp_path_factory.mktemp("examples")
    running = KeyturnServer.start(
        base / "data",
        base / "keyturn.log",
        env={"KEYTURN_ISSUER": ISSUER, "KEYTURN_AUDIENCE": AUDIENCE},
    )
    try:
        yield running
    finally:
        running.stop()
        running.kill()


@dataclass(frozen=True)
class Key:
    key_id: str
    secret: str
    identifier: str


def create_key(server: KeyturnServer, *scopes: str) -> Key:
    identifier = f"acct-{uuid.uuid4().hex[:8]}"
    response = httpx.post(
        f"{server.admin}/v1/admin/keys",
        json={"name": "example", "identifier": identifier, "scopes": list(scopes)},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    return Key(created["record"]["id"], created["key"], identifier)


def token_for(server: KeyturnServer, key: Key) -> str:
    response = httpx.post(
        f"{server.public}/v1/token",
        data={"grant_type": "client_credentials"},
        auth=(key.key_id, key.secret),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    async with TestClient(TestServer(app)) as client:
        yield client


# -- examples/aiohttp_jwthenticator.py: authenticate(server_url) ---------------------------


async def test_jwthenticator_style_service_asks_the_server(server: KeyturnServer) -> None:
    example = load_example("aiohttp_jwthenticator")
    key, identifier = f"legacy-{uuid.uuid4().hex}", str(uuid.uuid4())
    registered = httpx.post(
        f"{server.admin}/register_key", json={"key": key, "identifier": identifier}, timeout=10
    )
    assert registered.status_code == 201
    issued = httpx.post(
        f"{server.public}/authenticate", json={"key": key, "identifier": identifier}, timeout=10
    )
    jwt = issued.json()["jwt"]

    async with serve(example.create_app(server.public)) as client:
        insecure = await client.get("/insecure")
        missing = await client.get("/secure")
        malformed = await client.get("/secure", headers={"Authorization": f"JWT {jwt}"})
        refused = await client.get("/secure", headers=bearer(jwt[:-4] + "AAAA"))
        allowed = await client.get("/secure", headers=bearer(jwt))

        assert (insecure.status, await insecure.json()) == (200, {"success!": True})
        assert (missing.status, await missing.json()) == (403, {})
        assert (malformed.status, await malformed.json()) == (400, {})
        assert (refused.status, await refused.json()) == (401, {})
        assert (allowed.status, await allowed.json()) == (200, {"success!": True})


# -- examples/aiohttp_service.py: auth_middleware + JWKSVerifier ----------------------------


async def test_aiohttp_service_verifies_locally_with_the_jwks(server: KeyturnServer) -> None:
    example = load_example("aiohttp_service")
    reader = create_key(server, "orders:read")
    stranger = create_key(server, "orders:read")
    accounts = {reader.identifier: example.Account("Acme", "gold")}
    app = example.create_app(
        server.public,
        issuer=ISSUER,
        audience=AUDIENCE,
        accounts=accounts,
        allow_insecure_http=True,
    )
    token = token_for(server, reader)

    async with serve(app) as client:
        health = await client.get("/health")
        anonymous = await client.get("/me")
        me = await client.get("/me", headers=bearer(token))
        orders = await client.get("/orders", headers=bearer(token))
        write = await client.post("/orders", headers=bearer(token))
        unknown_account = await client.get("/me", headers=bearer(token_for(server, stranger)))

        assert (health.status, await health.json()) == (200, {"ok": True, "caller": None})
        assert anonymous.status == 401
        assert anonymous.headers["WWW-Authenticate"] == 'Bearer realm="keyturn"'
        assert await me.json() == {
            "subject": f"key:{reader.key_id}",
            "account": "Acme",
            "scopes": ["orders:read"],
        }
        assert (orders.status, await orders.json()) == (200, {"orders": [], "for": "Acme"})
        assert write.status == 403
        assert 'error="insufficient_scope"' in write.headers["WWW-Authenticate"]
        assert 'scope="orders:write"' in write.headers["WWW-Authenticate"]
        assert unknown_account.status == 401
        assert 'error="invalid_token"' in unknown_account.headers["WWW-Authenticate"]


# -- examples/fastapi_service.py -----------------------------------------------------------


async def test_fastapi_service_verifies_locally_with_the_jwks(server: KeyturnServer) -> None:
    example = load_example("fastapi_service")
    writer = create_key(server, "orders:read", "orders:write")
    reader = create_key(server, "orders:read")
    app = example.create_app(
        server.public, issuer=ISSUER, audience=AUDIENCE, allow_insecure_http=True
    )
    transport = httpx.ASGITransport(app=app)

    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://orders") as client,
    ):
        listed = await client.get("/orders", headers=bearer(token_for(server, reader)))
        created = await client.post("/orders", headers=bearer(token_for(server, writer)))
        denied = await client.post("/orders", headers=bearer(token_for(server, reader)))
        anonymous = await client.get("/orders")
        openapi = (await client.get("/openapi.json")).json()

    assert listed.json() == {
        "orders": [],
        "for": f"key:{reader.key_id}",
        "client_id": reader.key_id,
    }
    assert (created.status_code, created.json()["by"]) == (201, f"key:{writer.key_id}")
    assert denied.status_code == 403
    assert 'error="insufficient_scope"' in denied.headers["WWW-Authenticate"]
    assert (anonymous.status_code, anonymous.headers["WWW-Authenticate"]) == (
        401,
        'Bearer realm="keyturn"',
    )
    assert openapi["paths"]["/orders"]["post"]["security"] == [{"KeyturnBearer": []}]


# -- the verifiers themselves, against the real server ---------------------------------------


async def test_jwks_verifier_honours_the_servers_cache_control_and_survives_rotation(
    server: KeyturnServer,
) -> None:
    """Keyturn's JWKS says ``max-age=300``; an emergency signing-key rotation brings a new
    ``kid``, which the verifier fetches once and then accepts."""
    clock = FakeClock(datetime.now(UTC))
    reader = create_key(server, "orders:read")
    async with JWKSVerifier(
        f"{server.public}/.well-known/jwks.json",
        issuer=ISSUER,
        audience=AUDIENCE,
        allow_insecure_http=True,
        clock=clock.timestamp,
    ) as verifier:
        before = await verifier.verify(token_for(server, reader))
        assert verifier.expires_at == clock.timestamp() + 300

        rotated = httpx.post(
            f"{server.admin}/v1/admin/signing-keys/rotate?immediately=true", timeout=10
        )
        assert rotated.status_code == 201
        new_kid = rotated.json()["kid"]
        clock.advance(31)  # past the refetch interval
        after = await verifier.verify(token_for(server, reader), required_scopes=["orders:read"])

    assert before.kid != new_kid
    assert after.kid == new_kid


async def test_remote_verifier_sees_revocation_at_once(server: KeyturnServer) -> None:
    reader = create_key(server, "orders:read")
    token = token_for(server, reader)
    verifier = RemoteVerifier(server.public, allow_insecure_http=True)

    verified = await verifier.verify(token, required_scopes=["orders:read"])
    with pytest.raises(InsufficientScopeError):
        await verifier.verify(token, required_scopes=["orders:write"])
    revoked = httpx.post(
        f"{server.admin}/v1/admin/keys/{reader.key_id}/revoke", json={"reason": "test"}, timeout=10
    )
    assert revoked.status_code == 200
    with pytest.raises(InvalidTokenError):
        await verifier.verify(token)

    assert verified.subject == f"key:{reader.key_id}"
    assert verified.identifier == reader.identifier
