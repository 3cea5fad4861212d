"""The replay guard in Redis (``KEYTURN_REPLAY_STORE=redis``), issue 17.

Two instances on one database and one Redis: an assertion passes once. Redis down: 503
with Retry-After (fail closed), never a replay let through and never a 401.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

import httpx
import pytest

from keyturn.core.assertions import CLIENT_ASSERTION_TYPE
from keyturn.core.signing import SigningKey
from keyturn.server import build_admin_app, build_public_app
from keyturn.storage.tables import replay_guard
from keyturn.testing import FakeClock
from tests.security.forge import forge

from .conftest import ISSUER, REMOTE, MakeClient, OpenState

REDIS_URL = "redis://127.0.0.1:6379/15"
DEVICE = SigningKey.generate("ES256")


@pytest.fixture
def clock() -> FakeClock:
    """Redis expires entries by the real clock: the server's starts there too."""
    return FakeClock(datetime.now(UTC))


@pytest.fixture
async def redis_url() -> str:
    redis = pytest.importorskip("redis.asyncio")
    client = redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception as exc:  # any failure means no Redis here
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()
    return REDIS_URL


def assertion(key_id: str) -> dict[str, str]:
    now = int(time.time())
    claims = {
        "iss": key_id,
        "sub": key_id,
        "aud": ISSUER,
        "iat": now,
        "exp": now + 60,
        "jti": secrets.token_urlsafe(16),
    }
    signed = forge({"alg": "ES256", "typ": "JWT"}, claims, key=DEVICE)
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": CLIENT_ASSERTION_TYPE,
        "client_assertion": signed,
    }


async def keyless_key(admin: httpx.AsyncClient) -> str:
    body = {"jwks": {"keys": [dict(DEVICE.verification_key.to_jwk())]}}
    response = await admin.post("/v1/admin/keys", json=body)
    assert response.status_code == 201, response.text
    key_id: str = response.json()["record"]["id"]
    return key_id


async def test_a_replay_across_two_instances_sharing_redis_is_refused(
    open_state: OpenState, database_url: str, make_client: MakeClient, redis_url: str
) -> None:
    first = await open_state(database_url, replay_store="redis", redis_url=redis_url)
    second = await open_state(database_url, replay_store="redis", redis_url=redis_url)
    key_id = await keyless_key(make_client(build_admin_app(first)))
    form = assertion(key_id)

    one = await make_client(build_public_app(first), peer=REMOTE).post("/v1/token", data=form)
    two = await make_client(build_public_app(second), peer=REMOTE).post("/v1/token", data=form)

    assert one.status_code == 200, one.text
    assert two.status_code == 401
    assert "used before" in two.json()["error_description"]
    async with first.storage.engine.connect() as conn:  # Redis held it, not the database
        assert (await conn.execute(replay_guard.select())).first() is None


async def test_redis_down_is_503_with_retry_after_never_401(
    open_state: OpenState, sqlite_database_url: str, make_client: MakeClient
) -> None:
    state = await open_state(
        sqlite_database_url, replay_store="redis", redis_url="redis://127.0.0.1:1/0"
    )
    key_id = await keyless_key(make_client(build_admin_app(state)))

    response = await make_client(build_public_app(state), peer=REMOTE).post(
        "/v1/token", data=assertion(key_id)
    )

    assert response.status_code == 503
    assert "retry-after" in response.headers


def test_replay_store_redis_needs_a_redis_url() -> None:
    from keyturn.config import Settings

    with pytest.raises(ValueError, match="redis_url"):
        Settings(replay_store="redis")
