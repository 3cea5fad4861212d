"""Schema migrations: Alembic scripts shipped inside the package, run programmatically.

No ``alembic.ini`` is needed at run time. ``keyturn db upgrade`` and the server's
opt-in "migrate on start" both call `upgrade`. Concurrent upgrades of one database are
safe: on PostgreSQL they queue on an advisory lock, on SQLite on ``BEGIN IMMEDIATE``,
and the whole upgrade is one transaction on both (their DDL is transactional).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from keyturn.storage._errors import translate_errors
from keyturn.storage.engine import autocommit, create_engine, normalize_url
from keyturn.storage.schema import (
    DEFAULT_SCHEMA,
    SchemaClashError,
    find_clash,
    resolve_schema,
)

__all__ = [
    "SCRIPT_LOCATION",
    "alembic_config",
    "current_revision",
    "head_revision",
    "upgrade",
    "upgrade_engine",
]

SCRIPT_LOCATION: Final = "keyturn.storage:migrations"
# pg_advisory_xact_lock key: the first 8 bytes of sha256(b"keyturn.migrations"), signed.
_ADVISORY_LOCK_KEY: Final = -0x5B95_2824_2BA3_589B


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic configuration for the shipped scripts, optionally bound to a connection."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The newest revision this version of Keyturn ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships a revision
        raise RuntimeError("no migration scripts found")
    return head


async def upgrade(url: str, revision: str = "head", *, schema: str = DEFAULT_SCHEMA) -> None:
    """Bring the database at ``url`` up to ``revision`` (default: the newest).

    On PostgreSQL the tables go in ``schema`` (created if missing), or stay in ``public``
    for a database made before schemas existed (`keyturn.storage.schema`).

    Raises:
        StorageUnavailableError: the database cannot be reached.
        SchemaClashError: the schema holds another application's tables of the same names.
    """
    schema = await resolve_schema(url, schema)
    engine = create_engine(url, pool_size=1, max_overflow=0, schema=schema)
    try:
        await upgrade_engine(engine, revision, schema=schema)
    finally:
        await engine.dispose()


async def upgrade_engine(
    engine: AsyncEngine, revision: str = "head", *, schema: str | None = None
) -> None:
    """`upgrade`, over an engine made by `keyturn.storage.engine.create_engine`.

    ``schema``: the PostgreSQL schema the engine's ``search_path`` names
    (`keyturn.storage.engine.create_engine`'s ``schema``), created here if missing.
    """
    async with translate_errors("migrate the database"), engine.begin() as conn:
        postgresql = conn.dialect.name == "postgresql"
        if postgresql:
            # Held until COMMIT: a second instance starting at once waits, then finds
            # the schema current and does nothing.
            await conn.execute(
                sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ADVISORY_LOCK_KEY}
            )
            if schema is not None:
                # The name was checked by use_schema: letters, digits and '_' only.
                await conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
        clash = await conn.run_sync(find_clash, schema if postgresql else None)
        if clash:
            where = f" in schema {schema}" if postgresql and schema is not None else ""
            raise SchemaClashError(
                f"the database already holds tables that are not Keyturn's{where} "
                f"({', '.join(clash)}); point Keyturn at a schema of its own "
                "(KEYTURN_DATABASE_SCHEMA, default keyturn) or another database"
            )
        await conn.run_sync(_run_upgrade, revision)


async def current_revision(url: str, *, schema: str = DEFAULT_SCHEMA) -> str | None:
    """The revision the database at ``url`` is at; None for an empty database.

    Raises:
        StorageUnavailableError: the database cannot be reached.
    """
    if _is_missing_sqlite_file(url):
        return None  # reading must not create the database
    schema = await resolve_schema(url, schema)
    engine = create_engine(url, pool_size=1, max_overflow=0, schema=schema)
    try:
        async with (
            translate_errors("read the schema revision"),
            autocommit(engine).connect() as conn,
        ):
            return await conn.run_sync(_read_revision)
    finally:
        await engine.dispose()


def _is_missing_sqlite_file(url: str) -> bool:
    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return False
    return not parsed.query and not Path(parsed.database).exists()


def _run_upgrade(connection: sa.Connection, revision: str) -> None:
    command.upgrade(alembic_config(connection), revision)


def _read_revision(connection: sa.Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()
