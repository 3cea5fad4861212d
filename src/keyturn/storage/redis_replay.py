"""The replay guard in Redis (``KEYTURN_REPLAY_STORE=redis``): ``SET id 1 NX PXAT …``.

Shared by every instance that uses the same Redis, like the database's ``replay_guard``
table, without a database write per assertion. It fails closed: when Redis cannot be
reached, a claim raises `StorageUnavailableError` (503 + Retry-After), never lets a
possible replay through.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from keyturn.errors import StorageUnavailableError
from keyturn.storage._redis import connect_redis

if TYPE_CHECKING:
    from keyturn.storage.base import ReplayRepository

__all__ = ["RedisReplayRepository"]


class RedisReplayRepository:
    """Single-use ids in Redis (`keyturn.storage.base.ReplayRepository`)."""

    def __init__(self, url: str, *, prefix: str = "keyturn:replay:", timeout: float = 1.0) -> None:
        """Connect lazily to ``url``."""
        self._redis: Any = connect_redis(
            url, timeout=timeout, needed_by="KEYTURN_REPLAY_STORE=redis"
        )
        self._prefix = prefix

    async def claim(self, replay_id: str, *, expires_at: datetime, now: datetime) -> bool:
        """Record ``replay_id`` until ``expires_at``; True only the first time.

        Redis drops the entry at ``expires_at`` (``PXAT``); ``now`` only bounds it below.
        """
        until_ms = max(int(expires_at.timestamp() * 1000), int(now.timestamp() * 1000) + 1)
        try:
            stored = await self._redis.set(
                f"{self._prefix}{replay_id}", b"1", nx=True, pxat=until_ms
            )
        except Exception as exc:  # any Redis failure: fail closed
            raise StorageUnavailableError("the replay store (Redis) is unavailable") from exc
        return bool(stored)

    async def delete_expired(self, *, before: datetime) -> int:
        """Nothing to do: Redis expires entries itself."""
        return 0

    async def close(self) -> None:
        """Close the Redis connection pool."""
        await self._redis.aclose()


if TYPE_CHECKING:
    _conforms: type[ReplayRepository] = RedisReplayRepository
