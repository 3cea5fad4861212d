"""Where Keyturn's tables live on PostgreSQL: a schema of their own (``keyturn``).

Keyturn shares a PostgreSQL database with other applications safely (JWThenticator's
``keys`` and ``refresh_tokens`` in ``public``, for one): every connection of Keyturn's
engines (`keyturn.storage.engine.create_engine`, argument ``schema``) runs with
``search_path`` set to Keyturn's schema alone, so the SQLAlchemy
statements, the raw SQL of the fast paths (`keyturn.storage.sql.hot_postgres`,
`keyturn.storage.sql._batch`) and Alembic's scripts and ``alembic_version`` all land there
without naming it. ``search_path`` is sent as a startup parameter of the connection (no
extra round trip).

The schema is ``KEYTURN_DATABASE_SCHEMA`` (default ``keyturn``); ``keyturn db upgrade``
creates it. A database made before schemas existed keeps its tables in ``public``: when
the configured schema holds no Keyturn tables and ``public`` holds Keyturn's, Keyturn keeps
using ``public`` (`resolve_schema`). SQLite has no schemas; nothing here applies to it.
"""

from __future__ import annotations

import re
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from keyturn.errors import KeyturnError
from keyturn.storage._errors import translate_errors
from keyturn.storage.tables import metadata

__all__ = [
    "DEFAULT_SCHEMA",
    "LEGACY_SCHEMA",
    "SchemaClashError",
    "SchemaMissingError",
    "check_schema_name",
    "find_clash",
    "find_schema",
    "is_postgresql",
    "resolve_schema",
    "use_schema",
]
# keyturn.storage.engine imports this module (create_engine sets the search_path); its
# names are imported inside the functions here.

DEFAULT_SCHEMA: Final = "keyturn"
#: Where a Keyturn database made before this setting existed keeps its tables.
LEGACY_SCHEMA: Final = "public"
_NAME: Final = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_VERSION_TABLE: Final = "alembic_version"
#: Tables every Keyturn schema revision has; their presence marks a Keyturn schema.
_MARKERS: Final = ("api_keys", "signing_keys")


class SchemaClashError(KeyturnError):
    """The schema Keyturn would create its tables in holds another application's tables."""

    error_code = "schema_clash"
    status_code = 500


class SchemaMissingError(KeyturnError):
    """The database holds no Keyturn schema yet: ``keyturn db upgrade`` has not been run."""

    error_code = "schema_missing"
    status_code = 503


def check_schema_name(name: str) -> str:
    """Validate a schema name: lower-case letters, digits and ``_``, at most 63 characters.

    Raises:
        ValueError: anything else (no quoting games in ``search_path``), or ``pg_*``.
    """
    if _NAME.fullmatch(name) is None or name.startswith("pg_"):
        raise ValueError(
            "a database schema name is 1-63 lower-case letters, digits or '_', "
            "not starting with a digit or 'pg_'"
        )
    return name


def is_postgresql(url: str) -> bool:
    """True for a PostgreSQL URL (the only database with schemas here)."""
    from keyturn.storage.engine import normalize_url  # noqa: PLC0415 -- import cycle

    return normalize_url(url).get_backend_name() == "postgresql"


def use_schema(engine: AsyncEngine, schema: str) -> None:
    """Make every new connection of ``engine`` (PostgreSQL) resolve names in ``schema`` only.

    `keyturn.storage.engine.create_engine` does this itself (its ``schema`` argument);
    this is for engines made otherwise. Call it before the engine's first connection.
    No-op on other databases.
    """
    if engine.dialect.name != "postgresql":
        return
    search_path = check_schema_name(schema)

    @event.listens_for(engine.sync_engine, "do_connect")
    def _search_path(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        # asyncpg sends server_settings in the startup packet: no round trip (SQLAlchemy
        # docs, "Setting Alternate Search Paths on Connect", without the extra SET).
        settings = dict(cparams.get("server_settings") or {})
        settings["search_path"] = search_path
        cparams["server_settings"] = settings


async def resolve_schema(url: str, configured: str) -> str:
    """The schema Keyturn's tables are in, or go in, for the database at ``url``.

    ``configured``, unless it holds no Keyturn schema and ``public`` does (a database made
    before schemas existed): then ``public``. For SQLite, ``configured`` unchanged.

    Raises:
        StorageUnavailableError: the database cannot be reached.
    """
    schema, _ = await find_schema(url, configured)
    return schema


async def find_schema(url: str, configured: str) -> tuple[str, bool]:
    """`resolve_schema`, and whether Keyturn's tables are there already (always True for
    SQLite, which is not inspected here).

    Raises:
        StorageUnavailableError: the database cannot be reached.
    """
    from keyturn.storage.engine import create_engine  # noqa: PLC0415 -- import cycle

    check_schema_name(configured)
    if not is_postgresql(url):
        return configured, True
    engine = create_engine(url, pool_size=1, max_overflow=0)
    try:
        async with translate_errors("read the database schemas"), engine.connect() as conn:
            if await conn.run_sync(_is_keyturn_schema, configured):
                return configured, True
            if configured != LEGACY_SCHEMA and await conn.run_sync(
                _is_keyturn_schema, LEGACY_SCHEMA
            ):
                return LEGACY_SCHEMA, True
            return configured, False
    finally:
        await engine.dispose()


def _is_keyturn_schema(connection: sa.Connection, schema: str) -> bool:
    names = set(sa.inspect(connection).get_table_names(schema=schema))
    return _VERSION_TABLE in names and all(marker in names for marker in _MARKERS)


def find_clash(connection: sa.Connection, schema: str | None) -> list[str]:
    """Keyturn's table names already taken in ``schema`` by tables that are not Keyturn's.

    Empty when the schema is Keyturn's (it has ``alembic_version`` and Keyturn's marker
    tables) or holds none of Keyturn's names.
    """
    names = set(sa.inspect(connection).get_table_names(schema=schema))
    if _VERSION_TABLE in names and all(marker in names for marker in _MARKERS):
        return []
    ours = set(metadata.tables)
    if _VERSION_TABLE in names and not names & ours:
        # Another Alembic-managed application: its version table is not ours either.
        return [_VERSION_TABLE]
    return sorted(names & ours)
