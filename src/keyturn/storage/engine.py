"""Async engines for SQLite and PostgreSQL, set up the way the repositories rely on.

* URLs are normalised to the async drivers: ``postgresql://`` -> ``postgresql+asyncpg://``,
  ``sqlite:///path`` -> ``sqlite+aiosqlite:///path``.
* Bound parameters never appear in error messages or logs (``hide_parameters=True``).
* SQLite runs in WAL mode with ``synchronous=NORMAL``, foreign keys on and a busy
  timeout of ``statement_timeout`` (5 s when None). Every write transaction starts with
  ``BEGIN IMMEDIATE``: writers queue on the database lock up front instead of failing
  with "database is locked" when a read transaction tries to become a write transaction.
* Every PostgreSQL wait is bounded (issue 18): connecting (``connect_timeout``), waiting
  for a pooled connection (``pool_timeout``) and, with ``statement_timeout``, each
  statement, commit and rollback on the client (asyncpg's ``command_timeout``, so a
  server that stops answering cannot hold a request), the same on the server
  (``statement_timeout``, ``idle_in_transaction_session_timeout``), and TCP keepalives
  both ways, so a dead peer's idle connection is noticed.
* A new SQLite file is created with mode 0600 in a directory created with mode 0700
  (T-KEY-03): it holds sealed signing keys and key hashes.
"""

from __future__ import annotations

import functools
import os
import socket
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
_SQLITE_BUSY_TIMEOUT: Final = 5.0
_SQLITE_PRAGMAS: Final = (
    # After "PRAGMA busy_timeout", which comes first: the WAL switch may need to wait.
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
)
#: TCP keepalive on PostgreSQL connections: first probe after this many idle seconds, then
#: every `KEEPALIVE_INTERVAL` seconds; `KEEPALIVE_COUNT` unanswered probes drop it.
KEEPALIVE_IDLE: Final = 15
KEEPALIVE_INTERVAL: Final = 5
KEEPALIVE_COUNT: Final = 3
#: A client-side statement bound this much above the server's: a server that is alive
#: cancels the statement itself, and the connection stays usable.
_CLIENT_MARGIN: Final = 0.5
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
        statement_timeout: seconds one statement (or commit) may take, or None for no
            bound. PostgreSQL: the server's ``statement_timeout`` and
            ``idle_in_transaction_session_timeout``, and asyncpg's ``command_timeout``
            half a second later on the client (a server that stops answering); the pool
            discards a connection that timed out. Connections are closed at once, never
            waiting on the server. SQLite: the busy timeout (waiting for another writer).
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
        busy = _SQLITE_BUSY_TIMEOUT if statement_timeout is None else statement_timeout
        _install_sqlite_hooks(engine, parsed, busy_timeout=busy)
        return engine
    options |= {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": pool_timeout,
        "pool_pre_ping": pool_pre_ping,
        "connect_args": _postgresql_connect_args(connect_timeout, statement_timeout, schema),
    }
    engine = create_async_engine(parsed, **options)
    event.listen(engine.sync_engine, "connect", _keep_alive)
    event.listen(engine.sync_engine, "close", _close_at_once)
    return engine


def _postgresql_connect_args(
    connect_timeout: float, statement_timeout: float | None, schema: str
) -> dict[str, Any]:
    """asyncpg's connect arguments: timeouts, keepalives and the ``search_path``."""
    connect_args: dict[str, Any] = {"timeout": connect_timeout}
    settings = {
        # Sent in the startup packet: Keyturn's tables, and only they, resolve unqualified.
        "search_path": check_schema_name(schema),
        "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
        "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
        "tcp_keepalives_count": str(KEEPALIVE_COUNT),
    }
    if statement_timeout is not None:
        milliseconds = str(int(statement_timeout * 1000))
        settings |= {
            "statement_timeout": milliseconds,
            "idle_in_transaction_session_timeout": milliseconds,
        }
        connect_args["command_timeout"] = statement_timeout + _CLIENT_MARGIN
    connect_args["server_settings"] = settings
    return connect_args


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


def _install_sqlite_hooks(engine: AsyncEngine, url: URL, *, busy_timeout: float) -> None:
    sync_engine = engine.sync_engine
    if not _is_sqlite_memory(url) and not url.query.get("uri") and url.database:
        path = Path(url.database)

        @event.listens_for(sync_engine, "do_connect")
        def _prepare_file(
            dialect: Dialect, record: ConnectionPoolEntry, cargs: Any, cparams: Any
        ) -> None:
            _create_private_file(path)

    configure = functools.partial(_configure_sqlite_connection, busy_timeout=busy_timeout)
    event.listen(sync_engine, "connect", configure)
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


def _configure_sqlite_connection(
    dbapi_connection: Any, record: ConnectionPoolEntry, *, busy_timeout: float
) -> None:
    # SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL": stop the
    # driver from issuing its own deferred BEGIN; `_begin_immediate` emits ours.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        busy = f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}"
        for pragma in (busy, *_SQLITE_PRAGMAS):
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


def _keep_alive(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """Turn TCP keepalive on for a new PostgreSQL connection (not on a Unix socket)."""
    transport = getattr(dbapi_connection.driver_connection, "_transport", None)
    sock = None if transport is None else transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        if hasattr(socket, option):  # Linux; macOS has TCP_KEEPALIVE for the idle time
            sock.setsockopt(socket.IPPROTO_TCP, getattr(socket, option), value)


def _close_at_once(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """Close a PostgreSQL connection the pool lets go of at once, without a goodbye.

    A graceful close sends Terminate and waits for the server to hang up (after any
    pending cancellation), up to the statement bound or 2 s when invalidating: a server
    that stopped answering would hold a request that long beyond its bound, and a
    shutdown that long per pooled connection, one after another. Closing the socket ends
    the server's session just as well (quietly, outside a transaction).
    """
    driver = getattr(dbapi_connection, "driver_connection", None)
    terminate = getattr(driver, "terminate", None)
    if callable(terminate):
        terminate()
