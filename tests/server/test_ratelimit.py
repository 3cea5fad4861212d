"""The rate limiters: in-process and Redis-backed, same contract."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import pytest

from keyturn.server.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter

REDIS_URL = "redis://127.0.0.1:6379/15"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_memory_limiter_allows_up_to_the_limit_then_says_how_long() -> None:
    clock = Clock(1_000_040.0)
    limiter = MemoryRateLimiter(clock=clock)

    allowed = [await limiter.hit("addr:a", limit=3, window=60) for _ in range(3)]
    refused = await limiter.hit("addr:a", limit=3, window=60)

    assert allowed == [None, None, None]
    assert refused == 40  # the window [1_000_020, 1_000_080) ends in 40 s
    assert await limiter.hit("addr:b", limit=3, window=60) is None


async def test_memory_limiter_resets_with_the_next_window() -> None:
    clock = Clock(1_000_000.0)
    limiter = MemoryRateLimiter(clock=clock)
    for _ in range(2):
        await limiter.hit("key:k", limit=2, window=60)
    assert await limiter.hit("key:k", limit=2, window=60) is not None

    clock.now += 60

    assert await limiter.hit("key:k", limit=2, window=60) is None


async def test_memory_limiter_forgets_old_windows() -> None:
    clock = Clock(1_000_000.0)
    limiter = MemoryRateLimiter(clock=clock)
    for index in range(100):
        await limiter.hit(f"addr:{index}", limit=5, window=60)

    clock.now += 60
    await limiter.hit("addr:new", limit=5, window=60)

    assert len(limiter._counts) == 1


@pytest.fixture
async def redis_limiter() -> AsyncIterator[RateLimiter]:
    redis = pytest.importorskip("redis.asyncio")
    client = redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        await client.ping()
    except Exception as exc:
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    finally:
        await client.aclose()
    # A generous timeout: a busy test machine must not make the limiter fail open.
    limiter = RedisRateLimiter(
        REDIS_URL, prefix=f"keyturn-test:{secrets.token_hex(4)}:", timeout=10
    )
    yield limiter
    await limiter.close()


async def test_redis_limiter_counts_across_instances(redis_limiter: RateLimiter) -> None:
    """Two instances sharing Redis share one budget (KEYTURN_REDIS_URL)."""
    other = RedisRateLimiter(REDIS_URL, prefix=redis_limiter._prefix, timeout=10)  # type: ignore[attr-defined]
    try:
        assert await redis_limiter.hit("addr:x", limit=2, window=60) is None
        assert await other.hit("addr:x", limit=2, window=60) is None
        wait = await redis_limiter.hit("addr:x", limit=2, window=60)
    finally:
        await other.close()

    assert wait is not None
    assert 1 <= wait <= 60


async def test_redis_limiter_fails_open_when_redis_is_down() -> None:
    """An outage of the limiter must not lock every client out."""
    pytest.importorskip("redis.asyncio")
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0")
    try:
        results = [await limiter.hit("addr:y", limit=1, window=60) for _ in range(3)]
    finally:
        await limiter.close()

    assert results == [None, None, None]


HITS = [("addr:a", 1, 60), ("key:k", 5, 60)]


async def _hit_all_leaves_later_buckets_uncharged(limiter: RateLimiter) -> None:
    assert await limiter.hit_all(HITS) is None
    refused = await limiter.hit_all(HITS)  # the address is over: the key is not charged

    assert refused is not None
    index, wait = refused
    assert index == 0
    assert 1 <= wait <= 60
    assert await limiter.hit("key:k", limit=2, window=60) is None  # its second hit only
    assert await limiter.hit("key:k", limit=2, window=60) is not None


async def test_hit_all_stops_at_the_first_refused_bucket() -> None:
    await _hit_all_leaves_later_buckets_uncharged(MemoryRateLimiter())


async def test_redis_hit_all_gives_back_the_hits_after_a_refused_bucket(
    redis_limiter: RateLimiter,
) -> None:
    """One round trip for every bucket; the ones after a refusal are given their hit back."""
    await _hit_all_leaves_later_buckets_uncharged(redis_limiter)


async def test_redis_hit_all_fails_open_when_redis_is_down() -> None:
    pytest.importorskip("redis.asyncio")
    limiter = RedisRateLimiter("redis://127.0.0.1:1/0")
    try:
        results = [await limiter.hit_all(HITS) for _ in range(3)]
    finally:
        await limiter.close()

    assert results == [None, None, None]
