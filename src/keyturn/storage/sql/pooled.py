"""The portable path every verb has: its work on a pooled SQLAlchemy connection.

A verb's work is a plain function of a synchronous `sa.Connection`, run in one greenlet by
`greenlet_spawn`, the way `AsyncConnection` runs each of its calls: one switch per verb
instead of one each for the checkout, every statement and the release. Autocommit is set
per connection (`autocommit_options`), not through an engine view, which would make
SQLAlchemy dispatch events around every statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from keyturn.storage._errors import storage_error
from keyturn.storage.engine import autocommit_options
from keyturn.storage.sql.hot import HotPath

__all__ = ["PooledExecutor", "Repository"]

_T = TypeVar("_T")


def _on_connection(
    engine: sa.Engine, options: Mapping[str, Any] | None, work: Callable[[sa.Connection], _T]
) -> _T:
    """Run ``work`` with the autocommit ``options``, or in a transaction when None."""
    if options is None:
        with engine.begin() as conn:
            return work(conn)
    with engine.connect() as conn:
        return work(conn.execution_options(**options))


class PooledExecutor:
    """Runs a verb's work on a connection of the engine's pool, with Keyturn's errors.

    ``write_lock`` (SQLite) queues this process's writers in the event loop: SQLite
    admits one writer at a time anyway, and waiting here is cheaper and fairer than
    sleeping in SQLite's busy handler while holding a pooled connection. A writer waits
    there no longer than the pool's timeout, as for a pooled connection: then the
    database is unavailable (503) rather than a queue seconds long.
    """

    def __init__(self, engine: AsyncEngine, *, write_lock: asyncio.Lock | None = None) -> None:
        self._engine = engine.sync_engine
        self._autocommit = autocommit_options(engine)
        #: Whether the database is PostgreSQL (else SQLite).
        self.postgresql = engine.dialect.name == "postgresql"
        self._write_lock = write_lock
        timeout = getattr(self._engine.pool, "timeout", None)
        self._queue_timeout: float | None = timeout() if callable(timeout) else None

    async def read(self, doing: str, work: Callable[[sa.Connection], _T]) -> _T:
        """Run ``work`` on an autocommit connection (reads)."""
        return await self._run(doing, work, self._autocommit, writes=False)

    async def write(self, doing: str, work: Callable[[sa.Connection], _T]) -> _T:
        """Run ``work``, a single statement that writes, on an autocommit connection."""
        return await self._run(doing, work, self._autocommit, writes=True)

    async def write_transaction(self, doing: str, work: Callable[[sa.Connection], _T]) -> _T:
        """Run ``work`` in one write transaction (``BEGIN IMMEDIATE`` on SQLite).

        An exception rolls it back; returning commits it.
        """
        return await self._run(doing, work, None, writes=True)

    async def _run(
        self,
        doing: str,
        work: Callable[[sa.Connection], _T],
        options: Mapping[str, Any] | None,
        *,
        writes: bool,
    ) -> _T:
        try:
            lock = self._write_lock
            if writes and lock is not None:
                if lock.locked():  # queue behind this process's writers, for a bounded time
                    async with asyncio.timeout(self._queue_timeout):
                        await lock.acquire()
                else:
                    await lock.acquire()
                try:
                    return await greenlet_spawn(_on_connection, self._engine, options, work)
                finally:
                    lock.release()
            return await greenlet_spawn(_on_connection, self._engine, options, work)
        except Exception as exc:
            error = storage_error(exc, doing)
            if error is None:
                raise
            raise error from exc

    def insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        """The dialect's INSERT, which knows ``ON CONFLICT``."""
        return postgresql.insert(table) if self.postgresql else sqlite.insert(table)


class Repository:
    """What every repository runs on: the pooled path, and the hot path if it has one.

    A verb with a fast version is written ``if self._hot is not None: try it`` (a `Busy`
    from the hot path falls through), then the pooled path; every other verb is pooled.
    """

    def __init__(self, pooled: PooledExecutor, hot: HotPath | None = None) -> None:
        self._pooled = pooled
        self._hot = hot
