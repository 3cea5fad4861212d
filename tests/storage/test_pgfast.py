"""The PostgreSQL fast path returns and writes exactly what the SQLAlchemy path does.

The same verbs run once through `keyturn.storage.sql.hot_postgres` and once through SQLAlchemy
(the fast path switched off on the repositories) over the same rows; their results and
the tables they leave behind must be identical.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from keyturn.errors import ConflictError, StorageUnavailableError
from keyturn.storage.engine import autocommit, create_engine
from keyturn.storage.sql import SQLStorage, hot_postgres
from keyturn.storage.tables import metadata

from .factories import LATER, NOW, api_key, end_other_sessions, event, hash_of, refresh_token

pytestmark = pytest.mark.postgresql


def _without_fast_path(storage: SQLStorage) -> SQLStorage:
    storage.keys._hot = None
    storage.refresh_tokens._hot = None
    return storage


async def _tables(storage: SQLStorage) -> dict[str, list[tuple[Any, ...]]]:
    """Every row, audit ids left out (a sequence does not restart)."""
    async with autocommit(storage.engine).connect() as conn:
        tables = {}
        for table in metadata.sorted_tables:
            columns = [c for c in table.c if not (table.name == "audit_events" and c.name == "id")]
            rows = (await conn.execute(sa.select(*columns))).all()
            tables[table.name] = sorted(map(tuple, rows), key=repr)
        return tables


async def _clear(storage: SQLStorage) -> None:
    async with autocommit(storage.engine).connect() as conn:
        for table in reversed(metadata.sorted_tables):
            await conn.execute(sa.delete(table))


async def _scenario(storage: SQLStorage, results_cause: list[Any]) -> list[Any]:
    """Seed keys and tokens of every shape, then run every hot verb; what they return."""
    await storage.keys.add(
        api_key(
            "k1",
            name="full",
            roles=("admin", "reader"),
            scopes=("read", "write"),
            extra_claims={"tenant": "t-1", "n": 3, "nested": {"a": [1, None]}},
            metadata={"owner": "ops"},
            expires_at=LATER,
        ),
        audit=event("key.registered"),
    )
    await storage.keys.add(api_key("k2", legacy=True, identifier=None), audit=event("x"))
    await storage.keys.rotate(
        "k2", new_hash=hash_of("k2-new"), grace_until=NOW + timedelta(hours=1), audit=event("y")
    )
    await storage.keys.add(api_key("k3"), audit=event("key.registered"))
    await storage.keys.revoke("k3", at=NOW, reason="leaked", audit=event("key.revoked"))

    results: list[Any] = []
    keys, tokens = storage.keys, storage.refresh_tokens
    await tokens.add(refresh_token("t1"), audit=event("refresh.issued", "t1"))
    await tokens.add(
        refresh_token("t2", key_id=None, subject="user:u1", user_id="u1", scope=(), rotating=False),
        audit=event("refresh.issued", "t2", detail={"why": "login", "n": [1, 2]}),
    )
    for name in ("k1", "k2", "k2-new", "k3", "unknown"):
        results.append(await keys.find_by_hash(hash_of(name), now=NOW))
    results.append(await keys.find_by_hash(hash_of("k2"), now=NOW + timedelta(hours=2)))
    for name in ("t1", "t2", "unknown"):
        results.append(await tokens.find_with_key(hash_of(name)))
    successor = refresh_token("t3", parent_id="t1", created_at=NOW + timedelta(minutes=1))
    results.append(await tokens.rotate("t1", successor, now=NOW, audit=event("rotated", "t1")))
    results.append(await tokens.rotate("t1", successor, now=NOW, audit=event("rotated", "t1")))
    results.append(await tokens.rotate("t2", refresh_token("t4"), now=LATER, audit=event("z")))
    results.append(await tokens.find_with_key(hash_of("t1")))
    results.append(await tokens.find_with_key(hash_of("t3")))
    await keys.mark_used("k1", at=NOW + timedelta(minutes=5))
    await keys.mark_used("k1", at=NOW)  # never moves backwards
    await keys.mark_used("unknown", at=NOW)
    results.append(await keys.find_by_hash(hash_of("k1"), now=NOW))
    with pytest.raises(ConflictError) as conflict:
        await tokens.add(refresh_token("t9", token_hash=hash_of("t1")), audit=event("x"))
    results.append(type(conflict.value).__name__)
    # The driver's exception stays the cause: asyncpg's here, SQLAlchemy's wrapper there.
    cause = conflict.value.__cause__
    results_cause.append(getattr(cause, "orig", cause))
    return results


async def test_fast_path_and_sqlalchemy_path_agree(postgresql_database_url: str) -> None:
    storage = SQLStorage(create_engine(postgresql_database_url))
    try:
        fast_causes: list[Any] = []
        fast_results = await _scenario(storage, fast_causes)
        fast_tables = await _tables(storage)
        await _clear(storage)
        slow_results = await _scenario(_without_fast_path(storage), [])
        slow_tables = await _tables(storage)
    finally:
        await storage.close()

    assert fast_results == slow_results
    assert repr(fast_results) == repr(slow_results)  # same types and time zones too
    assert fast_tables == slow_tables
    assert fast_results[-1] == "ConflictError"
    assert isinstance(fast_causes[0], asyncpg.UniqueViolationError)
    assert fast_results[0] is not None
    assert fast_results[0].extra_claims["nested"] == {"a": [1, None]}
    assert fast_results[0].created_at.utcoffset() == timedelta(0)


async def test_fast_path_refuses_a_naive_datetime_before_sending(
    postgresql_database_url: str,
) -> None:
    storage = SQLStorage(create_engine(postgresql_database_url))
    try:
        with pytest.raises(sa.exc.StatementError) as exc_info:
            await storage.keys.find_by_hash(hash_of("k1"), now=NOW.replace(tzinfo=None))
        assert isinstance(exc_info.value.orig, ValueError)
    finally:
        await storage.close()


async def test_fast_path_drops_a_lost_connection_and_recovers(
    postgresql_database_url: str,
) -> None:
    """A server-side disconnect fails one fast-path call; the pool then reconnects."""
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=1, max_overflow=0))
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
        await end_other_sessions(postgresql_database_url)

        with pytest.raises(StorageUnavailableError) as exc_info:
            await storage.keys.find_by_hash(hash_of("k1"), now=NOW)
        assert exc_info.value.status_code == 503
        assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
        await storage.keys.mark_used("k1", at=NOW)
    finally:
        await storage.close()


def _checked_out(storage: SQLStorage) -> int:
    pool = storage.engine.sync_engine.pool
    return pool.checkedout()  # type: ignore[attr-defined, no-any-return]


async def test_leased_connections_serve_statements_without_checkouts(
    postgresql_database_url: str,
) -> None:
    """A quarter of the pool is leased; concurrent statements beyond it check out and back."""
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=8, max_overflow=0))
    checkouts: list[object] = []
    sa.event.listen(storage.engine.sync_engine, "checkout", lambda *args: checkouts.append(args))
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        checkouts.clear()
        for _ in range(5):
            assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
        assert len(checkouts) == 1  # leased once, then reused
        assert _checked_out(storage) == 1

        # Unbatched statements, all in flight at once.
        await asyncio.gather(*(storage.keys.mark_used("k1", at=NOW) for _ in range(12)))
        assert _checked_out(storage) == 2  # the lease limit: 8 // 4; the rest went back
        assert len(checkouts) == 1 + 1 + 10  # the first lease, a second, ten one-offs
    finally:
        await storage.close()
    assert _checked_out(storage) == 0


async def test_small_pools_lease_nothing(postgresql_database_url: str) -> None:
    """Under four connections the fast path checks one out per statement."""
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=3, max_overflow=0))
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
        assert _checked_out(storage) == 0
    finally:
        await storage.close()


async def test_a_leased_connection_found_closed_is_replaced_before_use(
    postgresql_database_url: str,
) -> None:
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=4, max_overflow=0))
    opened: list[asyncpg.Connection] = []
    sa.event.listen(
        storage.engine.sync_engine,
        "checkout",
        lambda dbapi, *args: opened.append(dbapi.driver_connection),
    )
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        opened.clear()
        assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
        (leased,) = opened
        await leased.close()  # as when the server ends the session between statements

        assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
        assert len(opened) == 2
        assert not opened[1].is_closed()
        assert _checked_out(storage) == 1
    finally:
        await storage.close()


async def test_a_leased_connection_lost_mid_statement_fails_once_and_is_dropped(
    postgresql_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=4, max_overflow=0))
    send = hot_postgres.send
    lost: list[asyncpg.Connection] = []

    async def _lose_once(
        connection: asyncpg.Connection, sql: str, arguments: Any, **options: Any
    ) -> Any:
        if not lost:
            lost.append(connection)
            raise ConnectionResetError("connection reset by peer")
        return await send(connection, sql, arguments, **options)

    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        monkeypatch.setattr(hot_postgres, "send", _lose_once)

        with pytest.raises(StorageUnavailableError) as exc_info:
            await storage.keys.find_by_hash(hash_of("k1"), now=NOW)
        assert exc_info.value.status_code == 503
        assert lost[0].is_closed()  # invalidated: terminated, never handed out again
        assert _checked_out(storage) == 0

        assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
        assert _checked_out(storage) == 1
    finally:
        await storage.close()


async def test_a_conflict_keeps_the_leased_connection(postgresql_database_url: str) -> None:
    """A server-reported error leaves the connection usable; it stays leased."""
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=4, max_overflow=0))
    checkouts: list[object] = []
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
        sa.event.listen(storage.engine.sync_engine, "checkout", lambda *a: checkouts.append(a))
        with pytest.raises(ConflictError):
            await storage.refresh_tokens.add(
                refresh_token("t2", token_hash=hash_of("t1")), audit=event("x")
            )
        assert await storage.refresh_tokens.find_with_key(hash_of("t1")) is not None
        assert checkouts == []
        assert _checked_out(storage) == 1
    finally:
        await storage.close()


async def test_leased_connections_recover_from_a_server_side_disconnect(
    postgresql_database_url: str,
) -> None:
    """T-REL-01 with a lease: ended sessions cost at most one 503 per leased connection."""
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=4, max_overflow=0))
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
        await end_other_sessions(postgresql_database_url)

        failures = 0
        for _ in range(2):  # the one leased connection fails at most once, then is replaced
            try:
                await storage.keys.find_by_hash(hash_of("k1"), now=NOW)
            except StorageUnavailableError:
                failures += 1
        assert failures <= 1
        assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
        await storage.keys.mark_used("k1", at=NOW)
    finally:
        await storage.close()
