"""The PostgreSQL fast path: hot statements sent straight to leased asyncpg connections.

SQLAlchemy's execution layer (connection, cursor adapter, result) costs more CPU than the
statement itself on a hot verb, and so does checking a connection out of the pool and
back for each statement. `FastStatement` renders a prebuilt statement once for the
asyncpg dialect -- the same SQL, ``$n`` placeholders in their order, the same bind casts
and bind processors -- and `FastPath` runs it on a connection it keeps leased from the
engine's own pool (so connecting, the pool's size and disposal stay there), with
asyncpg's prepared-statement cache. Outside a transaction each statement commits on its
own, as the autocommit SQLAlchemy path does.

Every connection the fast path sends a statement on plans each execution afresh
(``plan_cache_mode = force_custom_plan``, set once per connection, see `custom_plans`):
a generic plan cached while a table was small (a sequential scan with hash joins) would
otherwise stay in use on the long-lived connection as the table grows (issue 19).

Rows come back as asyncpg records: ``bytea`` as bytes, ``timestamptz`` as aware UTC
datetimes, and JSON decoded by the codec SQLAlchemy installs on every connection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import asyncpg
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import await_only, greenlet_spawn

from keyturn.storage._errors import driver_error, storage_error
from keyturn.storage.sql._batch import Batcher
from keyturn.storage.sql._prebuilt import PrebuiltStatement
from keyturn.storage.sql.statements import (
    ADD_REFRESH_TOKEN_WITH_AUDIT,
    ADD_REFRESH_TOKENS_WITH_AUDIT,
    CLAIM_REPLAY,
    CLAIM_REPLAYS,
    FIND_CLIENT,
    FIND_KEY_BY_HASH,
    FIND_KEYS_BY_HASH,
    FIND_REFRESH_TOKEN_WITH_KEY,
    FIND_REFRESH_TOKENS_WITH_KEY,
    INSERT_AUDIT_EVENT,
    INSERT_AUDIT_EVENTS,
    MARK_KEY_USED,
    RECORD_ISSUANCE,
    RECORD_ISSUANCES,
    ROTATE_WITH_SUCCESSOR_AND_AUDIT,
)

__all__ = ["FastPath", "FastStatement", "PostgresHotPath", "custom_plans", "lease_limit"]

#: The setting that makes PostgreSQL plan every execution of a prepared statement with
#: its parameters and the tables' current size, never from a cached generic plan.
CUSTOM_PLANS = "SET plan_cache_mode = force_custom_plan"
_CUSTOM_PLANS_SET = "keyturn.custom_plans"


class FastStatement(PrebuiltStatement):
    """A prebuilt statement rendered once for asyncpg, and its parameters in order."""

    __slots__ = ()

    def __init__(self, statement: sa.ClauseElement, dialect: Dialect) -> None:
        super().__init__(statement, dialect, dialect_types=False)


async def send(
    connection: asyncpg.Connection, sql: str, arguments: Sequence[Any], *, every_row: bool = False
) -> Any:
    """One round trip: run ``sql``; its first row (None if it has none), or ``every_row``.

    The single place a fast-path statement reaches the server (tests count calls here).
    """
    if every_row:
        return await connection.fetch(sql, *arguments)
    return await connection.fetchrow(sql, *arguments)


async def custom_plans(pooled: PoolProxiedConnection) -> None:
    """Make ``pooled`` plan every execution afresh, once for the connection's life.

    The hot statements are prepared once per connection and then run for hours; with
    PostgreSQL's default ``plan_cache_mode = auto`` a statement may switch to a generic
    plan after five executions, made from the table sizes of that moment and kept until
    the statement is prepared again (asyncpg's cache: after 300 s) or the table's
    statistics change (never, with autovacuum off). On a table that was empty then, that
    plan is a sequential scan, and it stays one however large the table grows meanwhile.
    A custom plan costs a planning per execution (tens of microseconds of the server's
    CPU, measured in ``bench/README.md``), and is right at any size. The setting stays
    with the pooled connection, so the SQLAlchemy path run on it later, which also
    prepares statements, plans the same way.
    """
    if pooled.info.get(_CUSTOM_PLANS_SET):
        return
    connection: asyncpg.Connection = pooled.driver_connection
    await connection.execute(CUSTOM_PLANS)
    pooled.info[_CUSTOM_PLANS_SET] = True


def _check_out(engine: sa.Engine, doing: str) -> PoolProxiedConnection:
    """A pooled connection, or Keyturn's error for why none could be had (in a greenlet)."""
    try:
        return engine.raw_connection()
    except Exception as exc:
        error = storage_error(exc, doing)
        if error is None:
            raise
        raise error from exc


def _checked_out(
    engine: sa.Engine, doing: str, sql: str, arguments: Sequence[Any], every_row: bool
) -> Any:
    """Check a connection out, run ``sql`` on its asyncpg connection, give it back.

    The path for when every leased connection is busy: one greenlet, like the SQLAlchemy
    path, with errors mapped as `FastPath.fetchrow` maps them.
    """
    pooled = _check_out(engine, doing)
    try:
        return await_only(_run(pooled, doing, sql, arguments, every_row))
    finally:
        pooled.close()


async def _run(
    pooled: PoolProxiedConnection,
    doing: str,
    sql: str,
    arguments: Sequence[Any],
    every_row: bool,
) -> Any:
    """Send ``sql`` on ``pooled``'s asyncpg connection; Keyturn's errors for what fails.

    The statement's errors become Keyturn's through `driver_error`, the driver's exception
    staying the cause. A connection that failed other than by a server-reported error
    (lost, timed out, cancelled mid-statement) is invalidated, so it is never used again.
    """
    connection: asyncpg.Connection = pooled.driver_connection
    try:
        await custom_plans(pooled)
        return await send(connection, sql, arguments, every_row=every_row)
    except BaseException as exc:
        if not isinstance(exc, asyncpg.PostgresError) or connection.is_closed():
            pooled.invalidate(exc if isinstance(exc, Exception) else None)
        error = driver_error(exc, doing) if isinstance(exc, Exception) else None
        if error is None:
            raise
        raise error from exc


def _arrays(calls: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """A batch's parameters: ``each_<name>``, the list of every call's ``name``, in order."""
    return {f"each_{name}": [call[name] for call in calls] for name in calls[0]}


def lease_limit(pool_size: int) -> int:
    """How many of a pool's connections the fast path keeps: a quarter, none under four.

    The rest stay in the pool for everything else, so a small pool (a test's, a CLI's)
    never has its only connection held by the fast path.
    """
    return pool_size // 4


class FastPath:
    """Runs `FastStatement`s on asyncpg connections leased from a PostgreSQL engine's pool.

    Checking a connection out of SQLAlchemy's pool and back for every statement costs
    more CPU than the statement itself (a greenlet, the checkout, the reset on return).
    So the fast path keeps up to ``limit`` connections checked out for as long as it lives
    and hands each to one statement at a time from a free list, without awaiting. They
    count against the pool's size (its metrics show them checked out); when every leased
    connection is busy, or ``limit`` is 0, a statement checks one out of the pool for
    itself. A leased connection found closed (the server restarted, an idle timeout) is
    dropped before use, and one that fails other than by a server-reported error is
    invalidated and dropped; the next statement leases afresh. `close` gives them all
    back; the storage calls it before it disposes of the engine.
    """

    __slots__ = ("_closed", "_engine", "_free", "_leased", "_limit")

    def __init__(self, engine: sa.Engine, *, limit: int | None = None) -> None:
        self._engine = engine
        if limit is None:
            size = getattr(engine.pool, "size", None)
            limit = lease_limit(size()) if callable(size) else 0
        self._limit = limit
        self._free: list[PoolProxiedConnection] = []
        self._leased = 0
        self._closed = False

    def prepare(self, statement: sa.ClauseElement) -> FastStatement:
        """Render ``statement`` for this engine's dialect."""
        return FastStatement(statement, self._engine.dialect)

    @property
    def leased(self) -> int:
        """Connections held right now, busy or free."""
        return self._leased

    async def fetchrow(
        self, doing: str, statement: FastStatement, params: Mapping[str, Any]
    ) -> Any:
        """Run ``statement`` with ``params``; its first row, or None.

        `StorageUnavailableError` or `ConflictError` as on the SQLAlchemy path.
        """
        return await self._execute(doing, statement, params, every_row=False)

    async def fetch(
        self, doing: str, statement: FastStatement, params: Mapping[str, Any]
    ) -> list[Any]:
        """Run ``statement`` with ``params``; every row it returns."""
        rows: list[Any] = await self._execute(doing, statement, params, every_row=True)
        return rows

    def batched_lookups(
        self, doing: str, one: sa.ClauseElement, many: sa.ClauseElement
    ) -> Batcher[Mapping[str, Any], Any]:
        """Calls of the lookup ``one``, batched: each gets its row (a sequence) or None.

        ``many`` is ``one`` over arrays (``each_<parameter>``), answering ``(n, *row)``
        for the ``n``-th call (from 1) of a batch that found a row.
        """
        single, batched = self.prepare(one), self.prepare(many)

        async def alone(params: Mapping[str, Any]) -> Any:
            return await self.fetchrow(doing, single, params)

        async def together(calls: list[Mapping[str, Any]]) -> list[Any]:
            found: list[Any] = [None] * len(calls)
            for row in await self.fetch(doing, batched, _arrays(calls)):
                found[row[0] - 1] = row[1:]
            return found

        return Batcher(alone, together)

    def batched_writes(
        self, doing: str, one: sa.ClauseElement, many: sa.ClauseElement
    ) -> Batcher[Mapping[str, Any], None]:
        """Calls of the write ``one``, batched into ``many`` (``one`` over arrays)."""
        single, batched = self.prepare(one), self.prepare(many)

        async def alone(params: Mapping[str, Any]) -> None:
            await self.fetchrow(doing, single, params)

        async def together(calls: list[Mapping[str, Any]]) -> list[None]:
            await self.fetchrow(doing, batched, _arrays(calls))
            return [None] * len(calls)

        return Batcher(alone, together)

    async def _execute(
        self, doing: str, statement: FastStatement, params: Mapping[str, Any], *, every_row: bool
    ) -> Any:
        sql, arguments = statement.sql, statement.arguments(params)
        pooled = await self._acquire(doing)
        if pooled is None:
            return await greenlet_spawn(
                _checked_out, self._engine, doing, sql, arguments, every_row
            )
        try:
            return await _run(pooled, doing, sql, arguments, every_row)
        finally:
            if pooled.is_valid and not self._closed:
                self._free.append(pooled)
            else:
                await self._drop(pooled)

    async def _acquire(self, doing: str) -> PoolProxiedConnection | None:
        """A free leased connection, a newly leased one, or None when at the limit."""
        free = self._free
        while free:
            pooled = free.pop()
            connection: asyncpg.Connection | None = pooled.driver_connection
            if connection is not None and not connection.is_closed():
                return pooled
            pooled.invalidate()
            await self._drop(pooled)
        if self._closed or self._leased >= self._limit:
            return None
        self._leased += 1
        try:
            return await greenlet_spawn(_check_out, self._engine, doing)
        except BaseException:
            self._leased -= 1
            raise

    async def _drop(self, pooled: PoolProxiedConnection) -> None:
        """Stop leasing ``pooled`` and return it to the pool (which replaces it if invalid)."""
        self._leased -= 1
        await greenlet_spawn(pooled.close)

    async def close(self) -> None:
        """Give every leased connection back to the pool; later statements check out."""
        self._closed = True
        while self._free:
            await self._drop(self._free.pop())


class PostgresHotPath:
    """The hot verbs on PostgreSQL (`keyturn.storage.sql.hot.HotPath`), through `FastPath`.

    Lookups and stores of refresh tokens, audit rows appended alone, and claims of
    single-use ids are batched per
    event-loop turn (each caller resumes once its batch's statement committed); storing a
    refresh token and rotating one are one data-modifying CTE each (the token, its audit
    row, and for a rotation the compare-and-set), hence one round trip.
    """

    __slots__ = (
        "_add_token",
        "_audit",
        "_claim",
        "_find_client",
        "_find_key",
        "_find_token",
        "_issuance",
        "_mark_key_used",
        "_rotate",
        "fast",
    )

    def __init__(self, fast: FastPath) -> None:
        self.fast: Final = fast
        self._find_key: Final = fast.batched_lookups(
            "look up the API key", FIND_KEY_BY_HASH, FIND_KEYS_BY_HASH
        )
        self._find_client: Final = fast.prepare(FIND_CLIENT)
        self._mark_key_used: Final = fast.prepare(MARK_KEY_USED)
        self._add_token: Final = fast.batched_lookups(
            "store the refresh token", ADD_REFRESH_TOKEN_WITH_AUDIT, ADD_REFRESH_TOKENS_WITH_AUDIT
        )
        self._find_token: Final = fast.batched_lookups(
            "look up the refresh token", FIND_REFRESH_TOKEN_WITH_KEY, FIND_REFRESH_TOKENS_WITH_KEY
        )
        self._rotate: Final = fast.prepare(ROTATE_WITH_SUCCESSOR_AND_AUDIT)
        self._issuance: Final = fast.batched_lookups(
            "record the token's issuance", RECORD_ISSUANCE, RECORD_ISSUANCES
        )
        self._audit: Final = fast.batched_writes(
            "record the audit event", INSERT_AUDIT_EVENT, INSERT_AUDIT_EVENTS
        )
        self._claim: Final = fast.batched_lookups(
            "claim the single-use id", CLAIM_REPLAY, CLAIM_REPLAYS
        )

    async def find_key_by_hash(self, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The key's row, batched with the lookups of the same turn."""
        row: Sequence[Any] | None = await self._find_key(params)
        return row

    async def find_client(self, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """The client's key and public keys, one statement on a leased connection."""
        rows: Sequence[Sequence[Any]] = await self.fast.fetch(
            "read the client", self._find_client, params
        )
        return rows

    async def mark_key_used(self, params: Mapping[str, Any]) -> None:
        """Record the key's use (never moves ``last_used_at`` backwards)."""
        await self.fast.fetchrow("record the API key's use", self._mark_key_used, params)

    async def add_refresh_token(self, token: Mapping[str, Any], audit: Mapping[str, Any]) -> bool:
        """Store the token and its audit row in one statement, unless its key is dead."""
        return await self._add_token({**token, **audit}) is not None

    async def find_refresh_token(self, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The token's row joined to its key's, batched with the same turn's lookups."""
        row: Sequence[Any] | None = await self._find_token(params)
        return row

    async def rotate_refresh_token(
        self, used: Mapping[str, Any], successor: Mapping[str, Any], audit: Mapping[str, Any]
    ) -> bool:
        """The compare-and-set, the successor and the audit row in one statement."""
        params = {**used, **successor, **audit}
        row = await self.fast.fetchrow("rotate the refresh token", self._rotate, params)
        return bool(row[0])

    async def record_issuance(self, audit: Mapping[str, Any]) -> bool:
        """The issuance's audit row unless its key is dead, batched with the same turn's."""
        return await self._issuance(audit) is not None

    async def record_audit(self, audit: Mapping[str, Any]) -> None:
        """Append the audit row, batched with the same turn's (one autocommit statement)."""
        await self._audit(audit)

    async def claim_replay(self, params: Mapping[str, Any]) -> bool:
        """Claim the id, batched with the same turn's claims (one autocommit statement);
        an id twice in one batch is claimed by its first call only."""
        return await self._claim(params) is not None

    async def close(self) -> None:
        """Give the leased connections back to the pool."""
        await self.fast.close()
