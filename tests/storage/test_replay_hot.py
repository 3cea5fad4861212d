"""Claiming single-use ids on the hot path: batched on PostgreSQL, group-committed on SQLite.

A DPoP proof or a ``private_key_jwt`` assertion is let through only if its ``jti`` was
never claimed: concurrent claims sent as one statement (or one commit) must still give
each id to exactly one caller, within a batch and across instances, and a failure is an
error, never a True.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from keyturn.errors import StorageUnavailableError
from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage, hot_postgres
from keyturn.storage.sql.hot import Busy
from keyturn.storage.tables import replay_guard

from .factories import NOW

UNTIL = NOW + timedelta(minutes=5)


async def _expiries(storage: SQLStorage) -> dict[str, Any]:
    async with storage.engine.connect() as conn:
        rows = (await conn.execute(sa.select(replay_guard))).all()
    return {row.id: row.expires_at for row in rows}


async def test_a_batch_with_an_id_twice_gives_it_to_its_first_caller_only(
    sql_storage: SQLStorage,
) -> None:
    await sql_storage.replays.claim("expired", expires_at=NOW, now=NOW - timedelta(minutes=5))
    await sql_storage.replays.claim("live", expires_at=UNTIL, now=NOW)
    claims = [
        ("a", UNTIL),
        ("b", UNTIL),
        ("a", UNTIL + timedelta(minutes=1)),  # the same id again, in the same batch
        ("live", UNTIL),
        ("expired", UNTIL),  # taken over
        ("b", UNTIL),
        ("expired", UNTIL),
    ]

    results = await asyncio.gather(
        *(sql_storage.replays.claim(i, expires_at=until, now=NOW) for i, until in claims)
    )

    assert results == [True, True, False, False, True, False, False]
    stored = await _expiries(sql_storage)
    assert sorted(stored) == ["a", "b", "expired", "live"]
    assert stored["a"] == UNTIL  # the first caller's claim, not the refused one's
    assert stored["expired"] == UNTIL


@pytest.mark.postgresql
async def test_a_batch_of_claims_is_one_round_trip(
    postgresql_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=8, max_overflow=0))
    sent: list[str] = []
    send = hot_postgres.send

    async def _counted(connection: asyncpg.Connection, sql: str, arguments: Any, **kw: Any) -> Any:
        sent.append(sql)
        return await send(connection, sql, arguments, **kw)

    monkeypatch.setattr(hot_postgres, "send", _counted)
    try:
        results = await asyncio.gather(
            *(storage.replays.claim(i, expires_at=UNTIL, now=NOW) for i in "abcab")
        )
    finally:
        await storage.close()

    assert results == [True, True, True, False, False]
    assert len(sent) == 1
    assert "unnest" in sent[0]


@pytest.mark.postgresql
async def test_two_instances_claiming_the_same_ids_at_once_give_each_id_once(
    postgresql_database_url: str,
) -> None:
    instances = [
        SQLStorage(create_engine(postgresql_database_url, pool_size=8, max_overflow=0))
        for _ in range(2)
    ]
    ids = [f"jti-{n}" for n in range(12)]
    try:
        # Each instance batches its claims; the second one claims in the reverse order.
        results = await asyncio.gather(
            *(instances[0].replays.claim(i, expires_at=UNTIL, now=NOW) for i in ids),
            *(instances[1].replays.claim(i, expires_at=UNTIL, now=NOW) for i in reversed(ids)),
            *(instances[1].replays.claim("same", expires_at=UNTIL, now=NOW) for _ in range(4)),
            *(instances[0].replays.claim("same", expires_at=UNTIL, now=NOW) for _ in range(4)),
        )
    finally:
        for instance in instances:
            await instance.close()

    first, second = results[:12], results[12:24][::-1]
    assert [a + b for a, b in zip(first, second, strict=True)] == [1] * 12
    assert sorted(results[24:]) == [False] * 7 + [True]


@pytest.mark.postgresql
async def test_a_connection_lost_under_a_batch_of_claims_lets_none_through(
    postgresql_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=8, max_overflow=0))

    async def _lost(connection: asyncpg.Connection, sql: str, arguments: Any, **kw: Any) -> Any:
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(hot_postgres, "send", _lost)
    try:
        results = await asyncio.gather(
            *(storage.replays.claim(i, expires_at=UNTIL, now=NOW) for i in "abc"),
            return_exceptions=True,
        )
    finally:
        await storage.close()

    assert all(isinstance(result, StorageUnavailableError) for result in results)


async def test_a_busy_hot_path_claims_on_the_pooled_path(
    sql_storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    hot = sql_storage._hot
    assert hot is not None

    async def _busy(self: object, params: Any) -> bool:
        raise Busy("claim the single-use id")

    monkeypatch.setattr(type(hot), "claim_replay", _busy)

    first = await sql_storage.replays.claim("j1", expires_at=UNTIL, now=NOW)
    again = await sql_storage.replays.claim("j1", expires_at=UNTIL, now=NOW)

    assert (first, again) == (True, False)
    assert list(await _expiries(sql_storage)) == ["j1"]
