"""`SQLStorage`: the storage on SQLite or PostgreSQL, and the one place its hot path is chosen.

Each verb is one transaction, and each state change writes its audit row in it. Reads
and single-statement writes run on autocommit connections (no BEGIN/COMMIT round
trips). Every verb runs on the pooled path (`keyturn.storage.sql.pooled`); the nine hot
verbs of authentication, refresh and proof checks first try the database's hot path
(`keyturn.storage.sql.hot`), which `SQLStorage` picks once, when it is built: asyncpg
with batched one-round-trip statements on PostgreSQL (`keyturn.storage.sql.hot_postgres`),
the event loop's own ``sqlite3`` connection with group commit on a SQLite file
(`keyturn.storage.sql.hot_sqlite`). One module per repository holds its verbs
(`keyturn.storage.sql.keys`, ...), against the rows and statements built once in
`keyturn.storage.sql.rows` and `keyturn.storage.sql.statements`.

Errors: a database that cannot be reached (refused or dropped connection, pool timeout,
locked or read-only SQLite file) raises `StorageUnavailableError`, a clash with a unique
constraint raises `ConflictError`; the driver's exception is kept as the cause.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from keyturn.core.records import AuditEvent
from keyturn.storage._errors import translate_errors
from keyturn.storage.base import Storage
from keyturn.storage.engine import autocommit, create_engine, has_sqlite_hooks, sqlite_file
from keyturn.storage.migrate import upgrade_engine
from keyturn.storage.schema import DEFAULT_SCHEMA, SchemaMissingError, find_schema, is_postgresql
from keyturn.storage.sql.audit import SQLAuditRepository
from keyturn.storage.sql.client_keys import SQLClientKeyRepository, SQLReplayRepository
from keyturn.storage.sql.hot import HotPath
from keyturn.storage.sql.hot_sqlite import LitePath, SqliteHotPath
from keyturn.storage.sql.keys import SQLKeyRepository
from keyturn.storage.sql.pooled import PooledExecutor
from keyturn.storage.sql.refresh_tokens import SQLRefreshTokenRepository
from keyturn.storage.sql.revocations import SQLRevocationRepository
from keyturn.storage.sql.server_settings import SQLServerSettings
from keyturn.storage.sql.signing_keys import SQLSigningKeyRepository
from keyturn.storage.sql.users import SQLUserRepository

__all__ = ["SQLStorage"]


class SQLStorage:
    """`keyturn.storage.base.Storage` on SQLite or PostgreSQL.

    Build it from an engine made by `keyturn.storage.engine.create_engine` (the SQLite
    transaction handling lives there), or with `SQLStorage.open`.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name == "sqlite" and not has_sqlite_hooks(engine):
            raise ValueError("create SQLite engines with keyturn.storage.engine.create_engine")
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database: {engine.dialect.name}")
        self._engine = engine
        lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        pooled = PooledExecutor(engine, write_lock=lock)
        self._hot = _hot_path(engine, lock)
        self._keys = SQLKeyRepository(pooled, self._hot)
        self._refresh_tokens = SQLRefreshTokenRepository(pooled, self._hot)
        self._users = SQLUserRepository(pooled)
        self._signing_keys = SQLSigningKeyRepository(pooled)
        self._revocations = SQLRevocationRepository(pooled)
        self._audit = SQLAuditRepository(pooled, self._hot)
        self._settings = SQLServerSettings(pooled)
        self._client_keys = SQLClientKeyRepository(pooled, self._hot)
        self._replays = SQLReplayRepository(pooled, self._hot)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = False,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = None,
        echo: bool = False,
        schema: str = DEFAULT_SCHEMA,
    ) -> SQLStorage:
        """Connect to ``url``; with ``migrate``, first bring the schema up to date.

        ``schema``: the PostgreSQL schema of Keyturn's tables (`keyturn.storage.schema`).

        Raises:
            StorageUnavailableError: the database is down (PostgreSQL: it is asked which
                schema holds Keyturn's tables).
            SchemaMissingError: PostgreSQL without Keyturn's tables, and no ``migrate``.
        """
        if is_postgresql(url):
            schema, present = await find_schema(url, schema)
            if not present and not migrate:
                # One clear line instead of "relation ... does not exist" later on (e.g. a
                # JWThenticator database Keyturn was pointed at before `db upgrade`).
                raise SchemaMissingError(
                    f"the database holds no Keyturn tables (schema {schema}): run "
                    "`keyturn db upgrade` first, or set KEYTURN_MIGRATE_ON_START=true"
                )
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            echo=echo,
            schema=schema,
        )
        if migrate:
            try:
                await upgrade_engine(engine, schema=schema)
            except BaseException:
                await engine.dispose()
                raise
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        """The engine underneath (for health checks and tests)."""
        return self._engine

    @property
    def keys(self) -> SQLKeyRepository:
        """API keys."""
        return self._keys

    @property
    def refresh_tokens(self) -> SQLRefreshTokenRepository:
        """Refresh tokens."""
        return self._refresh_tokens

    @property
    def users(self) -> SQLUserRepository:
        """People who log in with a password."""
        return self._users

    @property
    def signing_keys(self) -> SQLSigningKeyRepository:
        """Signing keys."""
        return self._signing_keys

    @property
    def revocations(self) -> SQLRevocationRepository:
        """Revoked access tokens and revocation snapshots."""
        return self._revocations

    @property
    def audit(self) -> SQLAuditRepository:
        """The audit trail."""
        return self._audit

    @property
    def client_keys(self) -> SQLClientKeyRepository:
        """Public keys of clients (``private_key_jwt``)."""
        return self._client_keys

    @property
    def replays(self) -> SQLReplayRepository:
        """Single-use ids (client assertion ``jti``s)."""
        return self._replays

    async def claim_setting(self, name: str, value: str, *, at: datetime, audit: AuditEvent) -> str:
        """Store server setting ``name`` as ``value`` unless it is set; return the stored value.

        Atomic across instances: one claim inserts (and writes ``audit``), every claim
        returns the value stored.
        """
        return await self._settings.claim(name, value, at=at, audit=audit)

    async def ping(self) -> None:
        """Round-trip to the database; `StorageUnavailableError` if it is down."""
        autocommit_engine = autocommit(self._engine)
        async with translate_errors("reach the database"), autocommit_engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        """Release every connection."""
        if self._hot is not None:
            await self._hot.close()
        await self._engine.dispose()


def _hot_path(engine: AsyncEngine, write_lock: asyncio.Lock | None) -> HotPath | None:
    """The hot path for ``engine``'s database, or None: the one place that picks it.

    PostgreSQL always has one (`keyturn.storage.sql.hot_postgres`); SQLite has one for a
    file (`keyturn.storage.sql.hot_sqlite`, which falls back while the file is not in WAL
    mode), none in memory.
    """
    if engine.dialect.name == "postgresql":
        from keyturn.storage.sql.hot_postgres import (  # noqa: PLC0415 -- asyncpg is optional
            FastPath,
            PostgresHotPath,
        )

        return PostgresHotPath(FastPath(engine.sync_engine))
    path = sqlite_file(engine)
    if path is None:
        return None
    return SqliteHotPath(LitePath(path, engine.dialect, write_lock=write_lock))


if TYPE_CHECKING:
    _conforms: type[Storage] = SQLStorage  # mypy checks SQLStorage against the Protocol
