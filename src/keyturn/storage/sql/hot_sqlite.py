"""The SQLite fast path: hot statements run on the event loop's own ``sqlite3`` connection.

aiosqlite gives every connection a thread and hands each driver call to it: a cursor, the
statement, the fetch, the close, ``BEGIN`` and ``COMMIT`` are each a round trip between
threads, about sixteen for an authentication. On a WAL-mode file the statements
themselves take microseconds, far less than those hand-offs, so the hot verbs run
synchronously on one private connection owned by the event loop instead, with the same
SQL and the same bind and result processing as the SQLAlchemy path.

The loop must never wait on a lock, so that connection has ``busy_timeout = 0``: if
another writer holds the database (a writer of this process on the pooled path, another
worker, the CLI), the statement fails at once with "database is locked" and the caller
falls back to the pooled path, which waits in its thread (`Busy`). WAL readers never
block. The connection does not checkpoint on commit (that would ``fsync`` on the loop);
every `CHECKPOINT_EVERY` commits a passive checkpoint runs in a worker thread instead.

Only a file database already in WAL mode gets a fast path (`LitePath.open`).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from keyturn.errors import ConflictError, StorageUnavailableError
from keyturn.storage.sql._prebuilt import PrebuiltStatement
from keyturn.storage.sql.hot import Busy
from keyturn.storage.sql.statements import (
    CLAIM_REPLAY,
    FIND_CLIENT,
    FIND_KEY_BY_HASH,
    FIND_REFRESH_TOKEN_WITH_KEY,
    INSERT_AUDIT_EVENT,
    INSERT_REFRESH_TOKEN,
    ISSUANCE_KEY_IS_LIVE,
    KEY_IS_LIVE,
    MARK_KEY_USED,
    MARK_REFRESH_TOKEN_USED,
)

__all__ = [
    "CHECKPOINT_EVERY",
    "Busy",
    "LiteConnection",
    "LitePath",
    "LiteStatement",
    "SqliteHotPath",
]

#: Commits on the fast connection between two passive WAL checkpoints (SQLite's own
#: automatic checkpoint runs at 1000 WAL pages; a hot commit writes about three).
CHECKPOINT_EVERY: Final = 300
_PRAGMAS: Final = (
    "PRAGMA busy_timeout = 0",
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA wal_autocheckpoint = 0",
)

_T = TypeVar("_T")


class LiteStatement(PrebuiltStatement):
    """A prebuilt statement rendered once for SQLite, with its bind and result processing."""

    __slots__ = ("_results",)

    def __init__(self, statement: sa.ClauseElement, dialect: Dialect) -> None:
        # The dialect's own implementation of each type, as SQLAlchemy's execution uses:
        # SQLite keeps datetimes as text, JSON as text, booleans as integers.
        super().__init__(statement, dialect, dialect_types=True)
        columns = getattr(statement, "exported_columns", ())
        self._results: Final = tuple(
            column.type.dialect_impl(dialect).result_processor(dialect, None) for column in columns
        )

    def row(self, raw: Sequence[Any]) -> tuple[Any, ...]:
        """A result row with each column through its type's result processor."""
        return tuple(
            value if process is None else process(value)
            for value, process in zip(raw, self._results, strict=True)
        )


class LiteConnection:
    """What a verb's work sees: run statements on the fast connection."""

    __slots__ = ("_connection",)

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def first(self, statement: LiteStatement, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run ``statement``; its first row (processed), or None."""
        cursor = self._connection.execute(statement.sql, statement.arguments(params))
        try:
            raw = cursor.fetchone()
        finally:
            cursor.close()
        return None if raw is None else statement.row(raw)

    def all(self, statement: LiteStatement, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run ``statement``; every row (processed)."""
        cursor = self._connection.execute(statement.sql, statement.arguments(params))
        try:
            return [statement.row(raw) for raw in cursor.fetchall()]
        finally:
            cursor.close()

    def execute(self, statement: LiteStatement, params: Mapping[str, Any]) -> int:
        """Run ``statement``; the number of rows it changed."""
        cursor = self._connection.execute(statement.sql, statement.arguments(params))
        try:
            return cursor.rowcount
        finally:
            cursor.close()


class LitePath:
    """The event loop's private connection to a WAL-mode SQLite file."""

    __slots__ = (
        "_checkpoints",
        "_commits",
        "_connection",
        "_dialect",
        "_path",
        "_pending",
        "_write_lock",
    )

    def __init__(
        self, path: str, dialect: Dialect, *, write_lock: asyncio.Lock | None = None
    ) -> None:
        self._path = path
        self._dialect = dialect
        self._write_lock = write_lock
        self._connection: sqlite3.Connection | None = None
        self._commits = 0
        self._checkpoints: set[asyncio.Future[None]] = set()
        self._pending: list[_Write] = []

    def prepare(self, statement: sa.ClauseElement) -> LiteStatement:
        """Render ``statement`` for SQLite."""
        return LiteStatement(statement, self._dialect)

    def read(self, doing: str, work: Callable[[LiteConnection], _T]) -> _T:
        """Run ``work`` (statements that only read) on the fast connection.

        Raises:
            Busy: the fast path cannot run it now (not in WAL mode, or locked).
            StorageUnavailableError: the file cannot be read.
        """
        connection = self._open(doing)
        try:
            return work(LiteConnection(connection))
        except sqlite3.Error as exc:
            raise self._failure(exc, doing) from exc

    async def write(self, doing: str, work: Callable[[LiteConnection], _T]) -> _T:
        """Run ``work`` in a ``BEGIN IMMEDIATE`` transaction; an exception undoes all of it.

        Group commit: the writes that arrive in one turn of the event loop share one
        transaction (each in its own savepoint, so one failing leaves the others), which
        writes the shared pages to the WAL once. Each caller resumes after the COMMIT.

        Raises:
            Busy: another writer is queued or holds the database; nothing was written.
            ConflictError: a unique constraint refused a row (``work`` was rolled back).
            StorageUnavailableError: the file cannot be written.
        """
        if self._write_lock is not None and self._write_lock.locked():
            raise Busy(doing)  # writers of this process are queued on the pooled path
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append(_Write(doing, work, done))
        result: _T = await done
        return result

    def _flush(self) -> None:
        """Run the writes queued in this turn of the loop in one transaction."""
        writes = [write for write in self._pending if not write.done.cancelled()]
        self._pending = []
        if not writes:
            return
        doing = writes[0].doing
        try:
            connection = self._open(doing)
            connection.execute("BEGIN IMMEDIATE")
            outcomes = _run_all(connection, writes)
            connection.execute("COMMIT")
        except Exception as exc:
            if self._connection is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._connection.execute("ROLLBACK")
            failure = self._failure(exc, doing)
            for write in writes:
                write.fail(failure)
            return
        self._committed()
        for write, value, error in outcomes:
            if error is None:
                write.succeed(value)
            else:
                write.fail(self._failure(error, write.doing))

    async def close(self) -> None:
        """Wait for running checkpoints, then close the connection."""
        if self._checkpoints:
            await asyncio.gather(*self._checkpoints, return_exceptions=True)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _open(self, doing: str) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        try:
            connection = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False, cached_statements=64
            )
        except sqlite3.Error as exc:
            raise self._failure(exc, doing) from exc
        try:
            (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                raise Busy(f"{doing}: the database is not in WAL mode")
            for pragma in _PRAGMAS:
                connection.execute(pragma)
        except BaseException as exc:
            connection.close()
            if isinstance(exc, sqlite3.Error):
                raise self._failure(exc, doing) from exc
            raise
        self._connection = connection
        return connection

    def _failure(self, exc: Exception, doing: str) -> Exception:
        """What to raise for ``exc``: Keyturn's error for a driver error, else ``exc`` itself."""
        if not isinstance(exc, sqlite3.Error):
            return exc
        if isinstance(exc, sqlite3.IntegrityError):
            return ConflictError(f"cannot {doing}: it clashes with a stored record")
        if isinstance(exc, sqlite3.OperationalError) and _is_lock_error(exc):
            return Busy(doing)
        # Anything else (I/O error, read-only or corrupt file): start afresh next time.
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None
        return StorageUnavailableError(f"cannot {doing}: the database is unavailable")

    def _committed(self) -> None:
        self._commits += 1
        if self._commits % CHECKPOINT_EVERY:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - repositories run on a loop
            return
        future = loop.run_in_executor(None, _checkpoint, self._path)
        self._checkpoints.add(future)
        future.add_done_callback(self._checkpoints.discard)


class _Write:
    """A write waiting for the next group commit."""

    __slots__ = ("doing", "done", "work")

    def __init__(
        self, doing: str, work: Callable[[LiteConnection], Any], done: asyncio.Future[Any]
    ) -> None:
        self.doing = doing
        self.work = work
        self.done = done

    def succeed(self, value: Any) -> None:
        if not self.done.done():
            self.done.set_result(value)

    def fail(self, error: BaseException) -> None:
        if not self.done.done():
            self.done.set_exception(error)


def _run_all(
    connection: sqlite3.Connection, writes: list[_Write]
) -> list[tuple[_Write, Any, Exception | None]]:
    """Run each write in its own savepoint: a failing one is undone, the others stay.

    A lone write needs no savepoint (its failure rolls the transaction back).
    """
    if len(writes) == 1:
        return [(writes[0], writes[0].work(LiteConnection(connection)), None)]
    outcomes: list[tuple[_Write, Any, Exception | None]] = []
    for write in writes:
        connection.execute("SAVEPOINT keyturn_write")
        try:
            value = write.work(LiteConnection(connection))
        except Exception as exc:
            connection.execute("ROLLBACK TO keyturn_write")
            connection.execute("RELEASE keyturn_write")
            outcomes.append((write, None, exc))
            continue
        connection.execute("RELEASE keyturn_write")
        outcomes.append((write, value, None))
    return outcomes


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    # The primary result code is the low byte of the extended one.
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _checkpoint(path: str) -> None:
    """A passive WAL checkpoint on a short-lived connection (runs in a worker thread)."""
    with contextlib.suppress(sqlite3.Error):
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout = 1000")
            connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            connection.close()


class SqliteHotPath:
    """The hot verbs on a SQLite file (`keyturn.storage.sql.hot.HotPath`), through `LitePath`.

    Every call raises `Busy` when the loop's connection cannot run it now (another
    writer holds the file, or it is not in WAL mode): the verb then runs pooled.
    """

    __slots__ = (
        "_claim",
        "_find_client",
        "_find_key",
        "_find_token",
        "_insert_audit",
        "_insert_token",
        "_issuance_key_is_live",
        "_key_is_live",
        "_mark_key_used",
        "_mark_token_used",
        "lite",
    )

    def __init__(self, lite: LitePath) -> None:
        self.lite: Final = lite
        self._find_key: Final = lite.prepare(FIND_KEY_BY_HASH)
        self._find_client: Final = lite.prepare(FIND_CLIENT)
        self._mark_key_used: Final = lite.prepare(MARK_KEY_USED)
        self._find_token: Final = lite.prepare(FIND_REFRESH_TOKEN_WITH_KEY)
        self._key_is_live: Final = lite.prepare(KEY_IS_LIVE)
        self._mark_token_used: Final = lite.prepare(MARK_REFRESH_TOKEN_USED)
        self._insert_token: Final = lite.prepare(INSERT_REFRESH_TOKEN)
        self._insert_audit: Final = lite.prepare(INSERT_AUDIT_EVENT)
        self._issuance_key_is_live: Final = lite.prepare(ISSUANCE_KEY_IS_LIVE)
        self._claim: Final = lite.prepare(CLAIM_REPLAY)

    async def find_key_by_hash(self, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The key's row, read on the loop's connection."""
        find = self._find_key
        return self.lite.read("look up the API key", lambda conn: conn.first(find, params))

    async def find_client(self, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """The client's key and public keys, read on the loop's connection."""
        find = self._find_client
        return self.lite.read("read the client", lambda conn: conn.all(find, params))

    async def mark_key_used(self, params: Mapping[str, Any]) -> None:
        """Record the key's use, in the next group commit."""
        mark = self._mark_key_used
        await self.lite.write("record the API key's use", lambda conn: conn.execute(mark, params))

    async def add_refresh_token(self, token: Mapping[str, Any], audit: Mapping[str, Any]) -> bool:
        """Store the token and its audit row, unless its key is revoked or expired."""

        def store(conn: LiteConnection) -> bool:
            if conn.first(self._key_is_live, token) is None:
                return False
            conn.execute(self._insert_token, token)
            conn.execute(self._insert_audit, audit)
            return True

        return await self.lite.write("store the refresh token", store)

    async def find_refresh_token(self, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """The token's row joined to its key's, read on the loop's connection."""
        find = self._find_token
        return self.lite.read("look up the refresh token", lambda conn: conn.first(find, params))

    async def rotate_refresh_token(
        self, used: Mapping[str, Any], successor: Mapping[str, Any], audit: Mapping[str, Any]
    ) -> bool:
        """The compare-and-set, the successor and the audit row, in one group commit."""

        def rotate(conn: LiteConnection) -> bool:
            if conn.first(self._mark_token_used, used) is None:
                return False
            conn.execute(self._insert_token, successor)
            conn.execute(self._insert_audit, audit)
            return True

        return await self.lite.write("rotate the refresh token", rotate)

    async def record_issuance(self, audit: Mapping[str, Any]) -> bool:
        """The issuance's audit row unless its key is dead, in the next group commit."""

        def record(conn: LiteConnection) -> bool:
            if conn.first(self._issuance_key_is_live, audit) is None:
                return False
            conn.execute(self._insert_audit, audit)
            return True

        return await self.lite.write("record the token's issuance", record)

    async def record_audit(self, audit: Mapping[str, Any]) -> None:
        """Append the audit row, in the next group commit."""
        insert = self._insert_audit
        await self.lite.write("record the audit event", lambda conn: conn.execute(insert, audit))

    async def claim_replay(self, params: Mapping[str, Any]) -> bool:
        """Claim the id, in the next group commit (an id twice in one: the first wins)."""
        claim = self._claim
        return await self.lite.write(
            "claim the single-use id", lambda conn: conn.first(claim, params) is not None
        )

    async def close(self) -> None:
        """Wait for running checkpoints, then close the loop's connection."""
        await self.lite.close()
