"""Replicas sharing one replay store (Redis): a DPoP proof passes once across all of them.

The documented way to close the per-process window (``docs/verify.md``): Keyturn's own
Redis replay guard has the `keyturn.verify.ReplayStore` verb.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from keyturn.core.dpop import create_dpop_proof
from keyturn.core.signing import KeySet, SigningKey
from keyturn.storage.redis_replay import RedisReplayRepository
from keyturn.testing import FakeClock
from keyturn.verify import InvalidDPoPProofError, OfflineVerifier
from tests.verify.conftest import AUDIENCE, ISSUER, FakeIssuer, bind_token

REDIS_URL = "redis://127.0.0.1:6379/15"
URL = "https://api.example.com/orders/17"
DEVICE = SigningKey.generate("ES256")


@pytest.fixture
def clock() -> FakeClock:
    """Redis expires entries by the real clock: the verifiers' starts there too."""
    return FakeClock(datetime.now(UTC))


@pytest.fixture
async def replays() -> AsyncIterator[RedisReplayRepository]:
    redis = pytest.importorskip("redis.asyncio")
    client = redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception as exc:  # any failure means no Redis here
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()
    store = RedisReplayRepository(REDIS_URL, prefix=f"test-dpop-{secrets.token_hex(8)}:")
    yield store
    await store.close()


async def test_rfc9449_11_1_a_shared_replay_store_refuses_a_proof_on_every_replica(
    issuer: FakeIssuer, clock: FakeClock, replays: RedisReplayRepository
) -> None:
    token = bind_token(issuer.token(), issuer.signing_key, DEVICE.kid)
    replicas = [
        OfflineVerifier(
            KeySet.of(issuer.signing_key),
            issuer=ISSUER,
            audience=AUDIENCE,
            replay_store=replays,
            clock=clock.timestamp,
        )
        for _ in range(2)
    ]
    proof = create_dpop_proof(
        DEVICE, method="GET", url=URL, now=int(clock.timestamp()), access_token=token
    )

    assert (await replicas[0].verify(token, dpop_proof=proof, method="GET", url=URL)).jkt
    for replica in replicas:
        with pytest.raises(InvalidDPoPProofError, match="used before"):
            await replica.verify(token, dpop_proof=proof, method="GET", url=URL)
