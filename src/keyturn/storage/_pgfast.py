"""The PostgreSQL fast path: hot statements sent straight to the pooled asyncpg connection.

SQLAlchemy's execution layer (connection, cursor adapter, result) costs more CPU than the
statement itself on a hot verb. `FastStatement` renders a prebuilt statement once for the
asyncpg dialect -- the same SQL, ``$n`` placeholders in their order, the same bind casts
and bind processors -- and `FastPath` runs it on a connection checked out from the
engine's own pool (so pool sizing, ``pool_timeout``, pre-ping and disposal stay there),
with asyncpg's prepared-statement cache. Outside a transaction each statement commits on
its own, as the autocommit SQLAlchemy path does.

Rows come back as asyncpg records: ``bytea`` as bytes, ``timestamptz`` as aware UTC
datetimes, and JSON decoded by the codec SQLAlchemy installs on every connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.util import await_only, greenlet_spawn

from keyturn.storage._errors import driver_error, storage_error
from keyturn.storage._prebuilt import PrebuiltStatement

__all__ = ["FastPath", "FastStatement"]


class FastStatement(PrebuiltStatement):
    """A prebuilt statement rendered once for asyncpg, and its parameters in order."""

    __slots__ = ()

    def __init__(self, statement: sa.ClauseElement, dialect: Dialect) -> None:
        super().__init__(statement, dialect, dialect_types=False)


async def send(connection: asyncpg.Connection, sql: str, arguments: Sequence[Any]) -> Any:
    """One round trip: run ``sql`` and return its first row (None if it has none).

    The single place a fast-path statement reaches the server (tests count calls here).
    """
    return await connection.fetchrow(sql, *arguments)


def _fetchrow(engine: sa.Engine, doing: str, sql: str, arguments: Sequence[Any]) -> Any:
    """Check a connection out, run ``sql`` on its asyncpg connection, give it back.

    Runs in one greenlet, like the SQLAlchemy path. Errors become Keyturn's as there:
    the checkout's through `storage_error` (the pool and the connect step are shared with
    that path), the statement's through `driver_error`; the driver's exception stays the
    cause. A connection that failed other than by a server-reported error (lost, timed
    out, cancelled mid-statement) is invalidated, so the pool replaces it instead of
    handing it out again.
    """
    try:
        pooled = engine.raw_connection()
    except Exception as exc:
        error = storage_error(exc, doing)
        if error is None:
            raise
        raise error from exc
    try:
        connection: asyncpg.Connection = pooled.driver_connection
        try:
            return await_only(send(connection, sql, arguments))
        except BaseException as exc:
            if not isinstance(exc, asyncpg.PostgresError) or connection.is_closed():
                pooled.invalidate(exc if isinstance(exc, Exception) else None)
            error = driver_error(exc, doing) if isinstance(exc, Exception) else None
            if error is None:
                raise
            raise error from exc
    finally:
        pooled.close()


class FastPath:
    """Runs `FastStatement`s on the pooled asyncpg connections of a PostgreSQL engine."""

    __slots__ = ("_engine",)

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def prepare(self, statement: sa.ClauseElement) -> FastStatement:
        """Render ``statement`` for this engine's dialect."""
        return FastStatement(statement, self._engine.dialect)

    async def fetchrow(
        self, doing: str, statement: FastStatement, params: Mapping[str, Any]
    ) -> Any:
        """Run ``statement`` with ``params``; its first row, or None.

        `StorageUnavailableError` or `ConflictError` as on the SQLAlchemy path.
        """
        arguments = statement.arguments(params)
        return await greenlet_spawn(_fetchrow, self._engine, doing, statement.sql, arguments)
