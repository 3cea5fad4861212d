"""Alembic environment for Keyturn's schema.

Run by `keyturn.storage.migrate` with a connection in ``config.attributes``; developers
may also run the ``alembic`` command with the repository's ``alembic.ini``, which takes
the database from ``sqlalchemy.url`` or ``KEYTURN_DATABASE_URL`` (and the PostgreSQL schema
from ``KEYTURN_DATABASE_SCHEMA``, default ``keyturn``).
"""

from __future__ import annotations

import asyncio
import os

import sqlalchemy as sa
from alembic import context

from keyturn.storage.engine import create_engine, normalize_url
from keyturn.storage.schema import DEFAULT_SCHEMA, check_schema_name
from keyturn.storage.tables import metadata

config = context.config


def _configure(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters tables by copying them; let autogenerate write it that way.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url") or os.environ.get("KEYTURN_DATABASE_URL")
    if not url:
        raise RuntimeError("set sqlalchemy.url or KEYTURN_DATABASE_URL")
    return url


async def _run_with_new_engine(url: str) -> None:
    schema = check_schema_name(os.environ.get("KEYTURN_DATABASE_SCHEMA", DEFAULT_SCHEMA))
    engine = create_engine(url, pool_size=1, max_overflow=0, schema=schema)
    try:
        async with engine.begin() as conn:
            if conn.dialect.name == "postgresql":  # as keyturn db upgrade does
                await conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {schema}"))
            await conn.run_sync(_configure)
    finally:
        await engine.dispose()


def _run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
    elif context.is_offline_mode():
        context.configure(url=normalize_url(_url()), target_metadata=metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
    else:
        asyncio.run(_run_with_new_engine(_url()))


_run()
