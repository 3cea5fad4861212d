"""What every request handler shares: settings, the service, the rate limiter.

`KeyturnState.open()` builds it from `Settings` (storage, migrations, secrets, policy,
signing keys) and `close()` releases it. Both listeners of a process share one state.
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
from keyturn.core.policy import ClaimsPolicy
from keyturn.core.signing import SigningKey
from keyturn.core.throttle import login_buckets
from keyturn.errors import KeyturnError, SigningKeyError
from keyturn.server.errors import RateLimitedError
from keyturn.server.metrics import PrometheusObserver, ServerMetrics
from keyturn.server.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from keyturn.runtime.secrets import load_server_secrets
from keyturn.service import KeyturnService, utc_now
from keyturn.storage.redis_replay import RedisReplayRepository
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
    """Shared per process; built by `open`, released by `close`."""

    settings: Settings
    service: KeyturnService
    storage: SQLStorage
    limiter: RateLimiter
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

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
        """Connect storage (migrating if configured), load secrets and keys, start polling.

        ``clock`` is the service's and the in-process rate limiter's time source; tests
        pass a `keyturn.testing.FakeClock` to move time instead of sleeping.
        ``password_hasher`` replaces the OWASP argon2id parameters (tests use cheap ones).
        ``create_secrets=False`` refuses to generate a missing KEK or pepper file (the
        CLI's read-only commands never create anything).

        Raises:
            KeyturnError: storage, secrets or keys are unusable (message says which).
        """
        # The files named in the settings first: a mistake there is reported before the
        # database is touched (or migrated).
        policy = _configured_policy(settings)
        imported = _configured_signing_key(settings)
        storage = await SQLStorage.open(
            settings.resolved_database_url,
            migrate=settings.should_migrate_on_start,
            pool_size=settings.database_pool_size,
            pool_timeout=settings.database_pool_timeout,
            connect_timeout=settings.database_timeout,
            statement_timeout=settings.database_timeout,
            # No overflow: connections opened beyond the pool under a burst are closed
            # again when returned, and that churn cost PostgreSQL most of a core.
            max_overflow=0,
            schema=settings.database_schema,
        )
        metrics = ServerMetrics()
        try:
            secrets = load_server_secrets(
                settings.data_dir,
                kek=_secret(settings.kek),
                kek_file=settings.kek_file,
                pepper=_secret(settings.pepper),
                pepper_file=settings.pepper_file,
                create=create_secrets,
            )
            service = KeyturnService(
                storage,
                pepper=secrets.pepper,
                key_wrapper=secrets.key_wrapper,
                config=settings.service_config(),
                policy=policy,
                clock=clock,
                password_hasher=password_hasher,
                password_concurrency=settings.password_hash_concurrency,
                observer=PrometheusObserver(metrics),
                replays=_replay_store(settings),
            )
            if imported is not None:
                await service.import_signing_key(imported)
            await service.start()
        except BaseException:
            await storage.close()
            raise
        limiter: RateLimiter = (
            RedisRateLimiter(settings.redis_url.get_secret_value())
            if settings.redis_url is not None
            else MemoryRateLimiter(clock=lambda: clock().timestamp())
        )
        metrics.attach(service, storage.engine)
        state = cls(
            settings=settings, service=service, storage=storage, limiter=limiter, metrics=metrics
        )
        if background:
            state._tasks = [
                asyncio.create_task(state._every(settings.poll_interval, state._poll)),
                asyncio.create_task(state._every(MAINTENANCE_INTERVAL, service.maintain)),
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
        await self.limiter.close()
        if isinstance(self.service.replays, RedisReplayRepository):
            await self.service.replays.close()
        await self.storage.close()

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
        buckets = [("address", f"addr:{address}", settings.rate_limit_per_address)]
        if key_bucket is not None:
            buckets.append(("key", f"key:{key_bucket}", settings.rate_limit_per_key))
        for kind, bucket, limit in buckets:
            wait = await self.limiter.hit(bucket, limit=limit, window=60)
            if wait is not None:
                self.metrics.rate_limit_hit(kind)
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


def _replay_store(settings: Settings) -> RedisReplayRepository | None:
    """The Redis replay guard when ``KEYTURN_REPLAY_STORE=redis``; else None (the database)."""
    if settings.replay_store != "redis" or settings.redis_url is None:
        return None
    return RedisReplayRepository(settings.redis_url.get_secret_value())


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return get() if callable(get) else None


def _configured_policy(settings: Settings) -> ClaimsPolicy | None:
    """The claims policy in ``policy_file``, or None for the default policy.

    Raises:
        KeyturnError: the file cannot be read or parsed; the message names the file,
            the variable it came from, and (for TOML syntax) the line.
    """
    path = settings.policy_file
    if path is None:
        return None
    where = f"the claims policy {path} ({settings.source('policy_file')})"
    try:
        return ClaimsPolicy.from_toml_file(path)
    except OSError as exc:
        raise KeyturnError(f"cannot read {where}: {exc.strerror}") from exc
    except ValueError as exc:  # tomllib.TOMLDecodeError included: it names the line
        raise KeyturnError(f"{where} is invalid: {exc}") from exc


def _configured_signing_key(settings: Settings) -> SigningKey | None:
    """The signing key named by ``signing_key_pem`` / ``signing_key_file`` (migration).

    Raises:
        SigningKeyError: unreadable or not a usable private key; the message names the
            variable it came from (and the file), never the key.
    """
    if settings.signing_key_pem is not None:
        pem = settings.signing_key_pem.get_secret_value().encode()
        where = f"the signing key in {settings.source('signing_key_pem')}"
    elif settings.signing_key_file is not None:
        path = settings.signing_key_file
        where = f"the signing key file {path} ({settings.source('signing_key_file')})"
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise KeyturnError(f"cannot read {where}: {exc.strerror}") from exc
    else:
        return None
    try:
        key = SigningKey.from_pem(pem)
    except SigningKeyError as exc:
        raise SigningKeyError(f"{where}: {_pem_problem(pem, exc.message)}") from exc
    logger.info("signing key kid=%s (%s) loaded from %s", key.kid, key.alg, where)
    return key


def _pem_problem(pem: bytes, message: str) -> str:
    """Why a PEM is not a usable private key, in a person's words (never its content)."""
    if b"-----BEGIN" not in pem:
        return "not PEM text (expected -----BEGIN PRIVATE KEY-----)"
    if b"PUBLIC KEY-----" in pem or b"CERTIFICATE-----" in pem:
        return "it holds a public key or certificate; a private key is needed"
    if b"ENCRYPTED" in pem:
        return "it is encrypted with a password; store it unencrypted"
    if b"PRIVATE KEY-----" in pem and message.startswith("not a usable PEM private key"):
        return "the PEM private key is damaged or truncated"
    return message
