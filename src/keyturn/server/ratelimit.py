"""Fixed-window rate limits: in-process by default, Redis when several instances share.

A limit is "N hits per window seconds" for one bucket (a client address, a key id). When
a bucket is over its limit the caller gets the seconds until the window ends, which the
server sends as ``Retry-After`` with a 429 -- never a 401, which would make
JWThenticator's client throw its credentials away.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from keyturn.storage._redis import connect_redis

__all__ = ["Hit", "MemoryRateLimiter", "RateLimiter", "RedisRateLimiter"]

#: One hit to count: the bucket, its limit and its window (seconds).
Hit = tuple[str, int, int]


class RateLimiter(Protocol):
    """Counts hits per bucket and window."""

    async def hit(self, bucket: str, *, limit: int, window: int) -> int | None:
        """Count one hit; return None if allowed, else the seconds to wait."""

    async def hit_all(self, hits: Sequence[Hit]) -> tuple[int, int] | None:
        """Count a hit in each bucket in order, up to the first one over its limit (the
        buckets after it are not charged): None if all allowed, else that bucket's index
        in ``hits`` and the seconds to wait."""

    async def close(self) -> None:
        """Release connections."""


async def _one_by_one(limiter: RateLimiter, hits: Sequence[Hit]) -> tuple[int, int] | None:
    for index, (bucket, limit, window) in enumerate(hits):
        wait = await limiter.hit(bucket, limit=limit, window=window)
        if wait is not None:
            return index, wait
    return None


class MemoryRateLimiter:
    """Per-process counters; bounded memory (old windows are dropped as time moves)."""

    def __init__(self, clock: Callable[[], float] = time.time, max_buckets: int = 100_000) -> None:
        self._clock = clock
        self._max_buckets = max_buckets
        self._counts: dict[tuple[str, int], int] = {}
        self._current_window_start = -1

    async def hit(self, bucket: str, *, limit: int, window: int) -> int | None:
        """Count one hit; return None if allowed, else the seconds to wait."""
        now = self._clock()
        start = int(now // window) * window
        if start != self._current_window_start:
            # Drop windows that ended: memory stays bounded by one window's buckets.
            self._counts = {k: v for k, v in self._counts.items() if k[1] >= start}
            self._current_window_start = start
        key = (bucket, start)
        count = self._counts.get(key, 0) + 1
        if count > limit:
            return max(1, int(start + window - now + 0.999))
        if len(self._counts) >= self._max_buckets and key not in self._counts:
            return None  # refuse to grow without bound; fail open for new buckets
        self._counts[key] = count
        return None

    async def hit_all(self, hits: Sequence[Hit]) -> tuple[int, int] | None:
        """`RateLimiter.hit_all`: each bucket in turn."""
        return await _one_by_one(self, hits)

    async def close(self) -> None:
        """Nothing to release."""


class RedisRateLimiter:
    """Counters in Redis (``INCR`` + ``EXPIRE`` in one pipeline), shared by instances."""

    def __init__(self, url: str, *, prefix: str = "keyturn:rl:", timeout: float = 0.5) -> None:
        """Connect lazily to ``url``; a call slower than ``timeout`` seconds fails open."""
        self._redis: Any = connect_redis(url, timeout=timeout, needed_by="KEYTURN_REDIS_URL")
        self._prefix = prefix

    async def hit(self, bucket: str, *, limit: int, window: int) -> int | None:
        """Count one hit; return None if allowed, else the seconds to wait.

        If Redis is unreachable the hit is allowed (fail open): an outage of the limiter
        must not lock every client out.
        """
        now = time.time()
        start = int(now // window) * window
        key = f"{self._prefix}{bucket}:{start}"
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, window + 1)
                count, _ = await pipe.execute()
        except Exception:  # any Redis failure: fail open, by design
            return None
        if int(count) > limit:
            return max(1, int(start + window - now + 0.999))
        return None

    async def hit_all(self, hits: Sequence[Hit]) -> tuple[int, int] | None:
        """`RateLimiter.hit_all` in one round trip (issue 19: one per bucket cost ~200 µs
        each): every bucket is charged in one pipeline, then the buckets after the first
        refused one are given their hit back (a second round trip, on refusals only).

        Fails open, like `hit`.
        """
        if len(hits) == 1:
            bucket, limit, window = hits[0]
            wait = await self.hit(bucket, limit=limit, window=window)
            return None if wait is None else (0, wait)
        now = time.time()
        keys = [self._key(bucket, window, now) for bucket, _, window in hits]
        try:
            # No MULTI/EXEC: each INCR and its EXPIRE need no isolation from other
            # clients, and the transaction's extra replies cost more CPU than the counts.
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, (_, _, window) in zip(keys, hits, strict=True):
                    pipe.incr(key)
                    pipe.expire(key, window + 1)
                replies = await pipe.execute()
        except Exception:  # any Redis failure: fail open, by design
            return None
        for index, (_, limit, window) in enumerate(hits):
            if int(replies[2 * index]) > limit:
                await self._give_back(keys[index + 1 :])
                start = int(now // window) * window
                return index, max(1, int(start + window - now + 0.999))
        return None

    def _key(self, bucket: str, window: int, now: float) -> str:
        return f"{self._prefix}{bucket}:{int(now // window) * window}"

    async def _give_back(self, keys: Sequence[str]) -> None:
        if not keys:
            return
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.decr(key)
                await pipe.execute()
        except Exception:  # noqa: S110 -- best effort: the hit stays counted, by design
            pass

    async def close(self) -> None:
        """Close the Redis connection pool."""
        await self._redis.aclose()
