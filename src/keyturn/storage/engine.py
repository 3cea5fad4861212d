"""Async engines for SQLite and PostgreSQL, set up the way the repositories rely on.

* URLs are normalised to the async drivers: ``postgresql://`` -> ``postgresql+asyncpg://``,
  ``sqlite:///path`` -> ``sqlite+aiosqlite:///path``.
* Bound parameters never appear in error messages or logs (``hide_parameters=True``).
* SQLite runs in WAL mode with ``synchronous=NORMAL``, foreign keys on and a 5 s busy
  timeout. Every write transaction starts with ``BEGIN IMMEDIATE``: writers queue on the
  database lock up front instead of failing with "database is locked" when a read
  transaction tries to become a write transaction.
* A new SQLite file is created with mode 0600 in a directory created with mode 0700
  (T-KEY-03): it holds sealed signing keys and key hashes.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any, Final

from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Dialect, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

from keyturn.storage.schema import DEFAULT_SCHEMA, check_schema_name

__all__ = [
    "DEFAULT_SQLITE_FILENAME",
    "autocommit",
    "autocommit_options",
    "create_engine",
    "default_sqlite_url",
    "has_sqlite_hooks",
    "normalize_url",
    "sqlite_file",
]

DEFAULT_SQLITE_FILENAME: Final = "keyturn.db"
_AUTOCOMMIT_OPTION: Final = "keyturn_autocommit"
_SQLITE_PRAGMAS: Final = (
    "PRAGMA busy_timeout = 5000",  # first: the WAL switch below may need to wait
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)
_DRIVERS: Final = {
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "sqlite": "sqlite+aiosqlite",
}


def default_sqlite_url(data_dir: Path) -> str:
    """The URL of the zero-setup database: ``keyturn.db`` in ``data_dir``."""
    return f"sqlite+aiosqlite:///{data_dir.absolute() / DEFAULT_SQLITE_FILENAME}"


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and point it at the async driver for its database."""
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    return parsed if driver is None else parsed.set(drivername=driver)


def create_engine(
    url: str,
    *,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout: float = 5.0,
    connect_timeout: float = 5.0,
    statement_timeout: float | None = None,
    pool_pre_ping: bool = False,
    echo: bool = False,
    schema: str = DEFAULT_SCHEMA,
) -> AsyncEngine:
    """Create the async engine Keyturn's storage runs on.

    Args:
        url: a SQLite or PostgreSQL URL; plain ``sqlite://`` and ``postgresql://`` work.
        pool_size: connections kept open (size it to the concurrent requests per worker).
        max_overflow: extra connections opened under bursts, closed when returned.
        pool_timeout: seconds to wait for a free connection before giving up (then the
            storage raises `StorageUnavailableError`: a 503, never a hang).
        connect_timeout: seconds to wait for PostgreSQL to accept a connection.
        statement_timeout: PostgreSQL ``statement_timeout`` in seconds, or None for none.
        pool_pre_ping: test each connection on checkout (one extra round trip per
            operation). Off by default: a dead connection fails one operation with
            `StorageUnavailableError` and the pool replaces every stale connection.
        echo: log every statement (parameters stay hidden).
        schema: PostgreSQL only: the one schema on every connection's ``search_path``
            (`keyturn.storage.schema`; resolve a database's with ``resolve_schema``).
    """
    parsed = normalize_url(url)
    options: dict[str, Any] = {"echo": echo, "hide_parameters": True}
    if parsed.get_backend_name() == "sqlite":
        if not _is_sqlite_memory(parsed):
            options |= {
                "pool_size": pool_size,
                "max_overflow": max_overflow,
                "pool_timeout": pool_timeout,
                "pool_pre_ping": pool_pre_ping,
            }
        engine = create_async_engine(parsed, **options)
        _install_sqlite_hooks(engine, parsed)
        return engine
    connect_args: dict[str, Any] = {"timeout": connect_timeout}
    # Sent in the startup packet: Keyturn's tables, and only they, resolve unqualified.
    connect_args["server_settings"] = {"search_path": check_schema_name(schema)}
    if statement_timeout is not None:
        connect_args["server_settings"]["statement_timeout"] = str(int(statement_timeout * 1000))
    options |= {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": pool_timeout,
        "pool_pre_ping": pool_pre_ping,
        "connect_args": connect_args,
    }
    return create_async_engine(parsed, **options)


def autocommit(engine: AsyncEngine) -> AsyncEngine:
    """A view of ``engine`` (same pool) whose connections run each statement on its own.

    Reads and single-statement writes use it: no BEGIN/COMMIT round trips, and a single
    statement is atomic by itself on both databases.
    """
    return engine.execution_options(**autocommit_options(engine))


def autocommit_options(engine: AsyncEngine) -> dict[str, Any]:
    """The execution options `autocommit` sets, to set on one connection instead.

    Set per connection, they spare the engine the ``engine_connect`` listener through
    which a view applies an isolation level: with any listener registered, SQLAlchemy
    dispatches events around every statement of every connection of that view.
    """
    if engine.dialect.name == "sqlite":
        # The driver already runs in autocommit mode; only skip our BEGIN IMMEDIATE.
        return {_AUTOCOMMIT_OPTION: True}
    return {"isolation_level": "AUTOCOMMIT"}


def has_sqlite_hooks(engine: AsyncEngine) -> bool:
    """True when ``engine`` is SQLite with the transaction handling set up here."""
    return event.contains(engine.sync_engine, "begin", _begin_immediate)


def sqlite_file(engine: AsyncEngine) -> str | None:
    """The path of ``engine``'s SQLite file; None for other databases, memory or URI forms."""
    url = engine.url
    if engine.dialect.name != "sqlite" or _is_sqlite_memory(url) or url.query.get("uri"):
        return None
    return url.database


def _is_sqlite_memory(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _install_sqlite_hooks(engine: AsyncEngine, url: URL) -> None:
    sync_engine = engine.sync_engine
    if not _is_sqlite_memory(url) and not url.query.get("uri") and url.database:
        path = Path(url.database)

        @event.listens_for(sync_engine, "do_connect")
        def _prepare_file(
            dialect: Dialect, record: ConnectionPoolEntry, cargs: Any, cparams: Any
        ) -> None:
            _create_private_file(path)

    event.listen(sync_engine, "connect", _configure_sqlite_connection)
    event.listen(sync_engine, "begin", _begin_immediate)


def _create_private_file(path: Path) -> None:
    """Create the database file 0600 (and its directory 0700) if it does not exist yet."""
    if path.exists():
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:  # another connection or process created it first
        return
    os.close(fd)


def _configure_sqlite_connection(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    # SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL": stop the
    # driver from issuing its own deferred BEGIN; `_begin_immediate` emits ours.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in _SQLITE_PRAGMAS:
            _execute_waiting_for_lock(cursor, pragma)
    finally:
        cursor.close()


def _execute_waiting_for_lock(cursor: Any, statement: str, attempts: int = 50) -> None:
    """Run a pragma, retrying while another connection holds the lock it needs.

    Switching a brand-new file to WAL takes an exclusive lock, and SQLite answers
    "database is locked" at once -- without waiting out ``busy_timeout`` -- when two
    processes open the file together. Retry with a short, bounded back-off.
    """
    for attempt in range(attempts):
        try:
            cursor.execute(statement)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _begin_immediate(conn: Connection) -> None:
    if not conn.get_execution_options().get(_AUTOCOMMIT_OPTION, False):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
