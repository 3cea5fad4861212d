"""How Keyturn starts: `Settings` become storage, secrets, a claims policy and the service.

`Runtime.open` is the composition root that the server and the command line share. The
HTTP server adds its rate limiter, metrics and pollers on top (`keyturn.server.state`);
the CLI opens a `Runtime` alone, so creating a key never builds a rate limiter or a
Prometheus registry. Files named in the settings (the claims policy, an imported signing
key) are read here, before the database is touched: the core never reads a file.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from keyturn.config import Settings
from keyturn.core.passwords import PasswordHasher
from keyturn.core.policy import ClaimsPolicy
from keyturn.core.signing import SigningKey
from keyturn.errors import KeyturnError, SigningKeyError
from keyturn.observer import ServiceObserver
from keyturn.runtime.secrets import load_server_secrets
from keyturn.service import KeyturnService, utc_now
from keyturn.storage.redis_replay import RedisReplayRepository
from keyturn.storage.sql import SQLStorage

__all__ = ["Runtime"]

logger = logging.getLogger("keyturn.server")


@dataclass
class Runtime:
    """The settings, the open storage and the started service; built by `open`."""

    settings: Settings
    storage: SQLStorage
    service: KeyturnService

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utc_now,
        password_hasher: PasswordHasher | None = None,
        observer: ServiceObserver | None = None,
        create_secrets: bool = True,
    ) -> Runtime:
        """Connect storage (migrating if configured), load secrets, policy and keys, start.

        ``clock`` is the service's time source (tests pass a `keyturn.testing.FakeClock`).
        ``password_hasher`` replaces the OWASP argon2id parameters (tests use cheap ones).
        ``observer`` receives the service's events (the server's Prometheus metrics).
        ``create_secrets=False`` refuses to generate a missing KEK or pepper file (the
        CLI's read-only commands never create anything).

        Raises:
            KeyturnError: storage, secrets or keys are unusable (message says which).
        """
        # The files named in the settings first: a mistake there is reported before the
        # database is touched (or migrated).
        policy = _configured_policy(settings)
        imported = _configured_signing_key(settings)
        storage = await _open_storage(settings)
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
                observer=observer,
                replays=_replay_store(settings),
            )
            if imported is not None:
                await service.import_signing_key(imported)
            await service.start()
        except BaseException:
            await storage.close()
            raise
        return cls(settings=settings, storage=storage, service=service)

    async def close(self) -> None:
        """Release the Redis replay guard (if any) and the database (engine disposed)."""
        if isinstance(self.service.replays, RedisReplayRepository):
            await self.service.replays.close()
        await self.storage.close()


async def _open_storage(settings: Settings) -> SQLStorage:
    """The database the settings name, migrated first when they say so."""
    return await SQLStorage.open(
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
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyturnError(f"cannot read {where}: {exc.strerror}") from exc
    except ValueError as exc:  # not UTF-8
        raise KeyturnError(f"{where} is invalid: {exc}") from exc
    try:
        return ClaimsPolicy.from_toml(text)
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
