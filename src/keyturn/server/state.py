"""What every request handler shares: settings, the service, the rate limiter.

`KeyturnState.open()` opens a `keyturn.runtime.Runtime` (storage, migrations, secrets,
policy, signing keys) and adds what only the HTTP server needs: the rate limiter, the
Prometheus metrics and the pollers; `close()` releases it all. Both listeners of a
process share one state.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from starlette.types import Scope

from keyturn.config import Settings
from keyturn.core.accounts import email_key
from keyturn.core.passwords import PasswordHasher
from keyturn.core.throttle import login_buckets
from keyturn.errors import KeyturnError
from keyturn.runtime import Runtime
from keyturn.server.errors import RateLimitedError
from keyturn.server.metrics import PrometheusObserver, ServerMetrics
from keyturn.server.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from keyturn.service import KeyturnService, utc_now
from keyturn.storage.sql import SQLStorage

__all__ = ["KeyturnState", "client_address", "is_loopback"]

logger = logging.getLogger("keyturn.server")

#: How often the periodic upkeep (`KeyturnService.maintain`) runs. Revocations and
#: signing keys are re-read more often, every ``Settings.poll_interval`` seconds.
MAINTENANCE_INTERVAL: Final = 60.0


def is_loopback(host: str | None) -> bool:
    """True for 127.0.0.0/8, ::1 and unix sockets (no host)."""
    if host is None or host == "":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def client_address(scope: Scope) -> str:
    """The peer address of a request's ASGI scope, as the server saw it.

    uvicorn's trusted-proxy handling has already rewritten ``scope["client"]`` when the
    listener trusts ``X-Forwarded-For``; Starlette's ``Request.client`` reads the same.
    """
    client = scope.get("client")
    if client is None:
        return "unix"
    host: str = client[0]
    return host


@dataclass
class KeyturnState:
    """Shared per process: the `Runtime` plus the rate limiter, metrics and pollers."""

    runtime: Runtime
    limiter: RateLimiter
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def settings(self) -> Settings:
        """The settings the runtime was opened with."""
        return self.runtime.settings

    @property
    def service(self) -> KeyturnService:
        """The started service every handler calls."""
        return self.runtime.service

    @property
    def storage(self) -> SQLStorage:
        """The open storage (the metrics sample its pool)."""
        return self.runtime.storage

    @storage.setter
    def storage(self, storage: SQLStorage) -> None:
        self.runtime.storage = storage

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        background: bool = True,
        clock: Callable[[], datetime] = utc_now,
        password_hasher: PasswordHasher | None = None,
        create_secrets: bool = True,
    ) -> KeyturnState:
        """Open the `Runtime`, then add the rate limiter and metrics, and start polling.

        ``clock`` is the service's and the in-process rate limiter's time source; tests
        pass a `keyturn.testing.FakeClock` to move time instead of sleeping.
        ``password_hasher`` replaces the OWASP argon2id parameters (tests use cheap ones).
        ``create_secrets=False`` refuses to generate a missing KEK or pepper file.

        Raises:
            KeyturnError: storage, secrets or keys are unusable (message says which).
        """
        metrics = ServerMetrics()
        runtime = await Runtime.open(
            settings,
            clock=clock,
            password_hasher=password_hasher,
            observer=PrometheusObserver(metrics),
            create_secrets=create_secrets,
        )
        limiter: RateLimiter = (
            RedisRateLimiter(settings.redis_url.get_secret_value())
            if settings.redis_url is not None
            else MemoryRateLimiter(clock=lambda: clock().timestamp())
        )
        metrics.attach(runtime.service, runtime.storage.engine)
        state = cls(runtime=runtime, limiter=limiter, metrics=metrics)
        if background:
            state._tasks = [
                asyncio.create_task(state._every(settings.poll_interval, state._poll)),
                asyncio.create_task(state._every(MAINTENANCE_INTERVAL, runtime.service.maintain)),
            ]
        return state

    async def close(self) -> None:
        """Stop polling, then release the rate limiter and the database (engine disposed)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        self.metrics.flush()  # with several workers, counts left here would be lost
        try:
            await self.service.flush_key_usage()  # the keys' last uses noted since the poll
        except KeyturnError as exc:
            logger.warning("could not record the API keys' last use: %s", exc.message)
        await self.limiter.close()
        await self.runtime.close()

    @property
    def background_tasks(self) -> tuple[asyncio.Task[None], ...]:
        """The pollers running (empty once closed, or when opened without them)."""
        return tuple(self._tasks)

    async def _poll(self) -> None:
        # Every instance activates a due signing key (storage lets one activation in), so
        # the new key signs on time without waiting for the next maintenance run.
        self.metrics.flush()
        self.metrics.sample_pool()
        await self.service.reload_revocations()
        if not await self.service.activate_due_signing_keys():
            await self.service.reload_signing_keys()
        await self.service.flush_key_usage()

    @staticmethod
    async def _every(seconds: float, job: object) -> None:
        assert callable(job)  # noqa: S101 -- internal use
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except KeyturnError as exc:  # storage down: keep serving from memory
                logger.warning("background refresh failed: %s", exc.message)

    async def check_rate(self, address: str, key_bucket: str | None) -> None:
        """Apply the per-address and per-key limits of token endpoints.

        ``address`` is the peer's, as `client_address` reads it.

        Raises:
            RateLimitedError: over a limit (429 + Retry-After).
        """
        settings = self.settings
        if not settings.rate_limit_enabled:
            return
        hits = [(f"addr:{address}", settings.rate_limit_per_address, 60)]
        if key_bucket is not None:
            hits.append((f"key:{key_bucket}", settings.rate_limit_per_key, 60))
        refused = await self.limiter.hit_all(hits)
        if refused is not None:
            index, wait = refused
            self.metrics.rate_limit_hit(("address", "key")[index])
            raise RateLimitedError("too many requests; retry later", retry_after=wait)

    async def check_login_rate(self, address: str, email: str) -> None:
        """Charge a login attempt to its address and account counters (before hashing).

        ``address`` is the peer's, as `client_address` reads it.

        Raises:
            RateLimitedError: a counter is over its limit (429 + Retry-After).
        """
        if not self.settings.rate_limit_enabled:
            return
        buckets = login_buckets(email_key(email), address, self.settings.login_limits())
        for bucket in buckets:
            wait = await self.limiter.hit(bucket.name, limit=bucket.limit, window=bucket.window)
            if wait is not None:
                self.metrics.rate_limit_hit("login")
                # Stop here: a refused attempt is not charged to the wider counters, so one
                # address hammering one account never fills that account's own counter.
                raise RateLimitedError("too many login attempts; retry later", retry_after=wait)
