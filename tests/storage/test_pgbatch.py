"""Concurrent hot statements on PostgreSQL go as one statement, with each call's own answer.

`keyturn.storage.sql._batch.Batcher` is exercised alone (no database), then through the
repositories: calls gathered in one event-loop turn must return and store exactly what
the same calls made one after another do, in one round trip.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from keyturn.errors import ConflictError, StorageUnavailableError
from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage, hot_postgres
from keyturn.storage.sql._batch import MAX_BATCH, Batcher

from .factories import LATER, NOW, api_key, event, hash_of, refresh_token
from .test_pgfast import _clear, _tables

# --- the batcher alone ----------------------------------------------------------------


class Recorder:
    """``alone`` and ``together`` for a `Batcher` of ints, failing where told."""

    def __init__(self, *, refuse: int | None = None, fail_together: Exception | None = None):
        self.calls: list[tuple[str, list[int]]] = []
        self.refuse = refuse
        self.fail_together = fail_together
        self.release = asyncio.Event()
        self.release.set()

    async def alone(self, item: int) -> int:
        self.calls.append(("alone", [item]))
        if item == self.refuse:
            raise ConflictError("taken")
        return item * 10

    async def together(self, items: list[int]) -> Sequence[int]:
        self.calls.append(("together", list(items)))
        await self.release.wait()
        if self.fail_together is not None:
            raise self.fail_together
        if self.refuse in items:
            raise ConflictError("one of them is taken")
        return [item * 10 for item in items]

    def batcher(self) -> Batcher[int, int]:
        return Batcher(self.alone, self.together)


async def test_calls_of_one_turn_go_together_and_each_gets_its_own_result() -> None:
    recorder = Recorder()
    batcher = recorder.batcher()

    results = await asyncio.gather(*(batcher(item) for item in range(5)))

    assert results == [0, 10, 20, 30, 40]
    assert recorder.calls == [("together", [0, 1, 2, 3, 4])]
    assert batcher.groups_sent == 1


async def test_a_lone_call_goes_alone() -> None:
    recorder = Recorder()
    batcher = recorder.batcher()

    assert await batcher(7) == 70
    assert await batcher(8) == 80

    assert recorder.calls == [("alone", [7]), ("alone", [8])]
    assert batcher.groups_sent == 0


async def test_a_conflict_sends_each_again_alone() -> None:
    recorder = Recorder(refuse=2)
    batcher = recorder.batcher()

    results = await asyncio.gather(*(batcher(item) for item in range(4)), return_exceptions=True)

    assert results[:2] == [0, 10]
    assert isinstance(results[2], ConflictError)
    assert results[3] == 30
    assert recorder.calls[0] == ("together", [0, 1, 2, 3])
    assert recorder.calls[1:] == [("alone", [item]) for item in range(4)]


async def test_an_outage_is_every_callers_answer() -> None:
    outage = StorageUnavailableError("cannot: the database is unavailable")
    recorder = Recorder(fail_together=outage)
    batcher = recorder.batcher()

    results = await asyncio.gather(*(batcher(item) for item in range(3)), return_exceptions=True)

    assert results == [outage, outage, outage]
    assert recorder.calls == [("together", [0, 1, 2])]  # nothing sent again


async def test_a_leader_cancelled_before_sending_leaves_the_others_served() -> None:
    recorder = Recorder()
    batcher = recorder.batcher()
    calls = [asyncio.ensure_future(batcher(item)) for item in (1, 2, 3)]
    await asyncio.sleep(0)  # 1 leads and waits out its turn; 2 and 3 have joined it
    calls[0].cancel()

    # Guarded: a group whose leader left must still be sent, or these wait for ever.
    assert await asyncio.wait_for(asyncio.gather(*calls[1:]), timeout=10) == [20, 30]
    assert calls[0].cancelled()
    assert recorder.calls == [("together", [2, 3])]


async def test_a_caller_cancelled_mid_statement_does_not_disturb_the_others() -> None:
    recorder = Recorder()
    recorder.release.clear()
    batcher = recorder.batcher()
    calls = [asyncio.ensure_future(batcher(item)) for item in range(3)]
    while not recorder.calls:  # the group's statement is under way
        await asyncio.sleep(0)
    calls[0].cancel()  # the leader
    calls[2].cancel()
    recorder.release.set()

    assert await calls[1] == 10
    assert calls[0].cancelled()
    assert calls[2].cancelled()


async def test_a_full_group_starts_another() -> None:
    recorder = Recorder()
    batcher = recorder.batcher()

    results = await asyncio.gather(*(batcher(item) for item in range(MAX_BATCH + 3)))

    assert results == [item * 10 for item in range(MAX_BATCH + 3)]
    assert [len(items) for _, items in recorder.calls] == [MAX_BATCH, 3]


# --- through the repositories, on PostgreSQL ---------------------------------------------


@pytest.fixture
async def pg_storage(postgresql_database_url: str) -> Any:
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=8, max_overflow=0))
    try:
        yield storage
    finally:
        await storage.close()


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every fast-path statement sent from now on."""
    sent: list[str] = []
    send = hot_postgres.send

    async def _counted(connection: asyncpg.Connection, sql: str, arguments: Any, **kw: Any) -> Any:
        sent.append(sql)
        return await send(connection, sql, arguments, **kw)

    monkeypatch.setattr(hot_postgres, "send", _counted)
    return sent


async def _seed_keys(storage: SQLStorage) -> None:
    await storage.keys.add(
        api_key("k1", roles=("admin",), scopes=(), extra_claims={"n": [1, None]}),
        audit=event("key.registered"),
    )
    await storage.keys.add(api_key("k2", identifier=None, legacy=True), audit=event("x"))
    await storage.keys.rotate(
        "k2", new_hash=hash_of("k2-new"), grace_until=NOW + timedelta(hours=1), audit=event("y")
    )
    await storage.keys.add(api_key("k3"), audit=event("key.registered"))
    await storage.keys.revoke("k3", at=NOW, reason="leaked", audit=event("key.revoked"))


_LOOKUPS = [
    ("k1", NOW),
    ("k2", NOW),  # the previous hash, in its grace period
    ("k2", NOW + timedelta(hours=2)),  # ... and after it
    ("k2-new", NOW),
    ("k3", NOW),
    ("unknown", NOW),
    ("k1", LATER),
]


@pytest.mark.postgresql
async def test_concurrent_key_lookups_answer_as_sequential_ones_in_one_round_trip(
    pg_storage: SQLStorage, round_trips: list[str]
) -> None:
    await _seed_keys(pg_storage)
    one_by_one = [await pg_storage.keys.find_by_hash(hash_of(n), now=at) for n, at in _LOOKUPS]
    round_trips.clear()

    together = await asyncio.gather(
        *(pg_storage.keys.find_by_hash(hash_of(name), now=at) for name, at in _LOOKUPS)
    )

    assert together == one_by_one
    assert repr(together) == repr(one_by_one)  # same types and time zones
    assert [record is None for record in together] == [
        False,
        False,
        True,
        False,
        False,
        True,
        False,
    ]
    assert len(round_trips) == 1
    assert "unnest" in round_trips[0]


def _tokens() -> list[tuple[Any, Any]]:
    """Refresh tokens of every shape, with their audit events."""
    return [
        (refresh_token("t1"), event("token.issued", "k1", detail={"jti": "j1"})),
        (refresh_token("t2", scope=(), rotating=False), event("token.issued", "k1")),
        (
            refresh_token(
                "t3", key_id=None, subject="user:u1", user_id="u1", identifier=None, scope=()
            ),
            event("login.succeeded", "u1", detail={"nested": {"a": [1, None]}}, request_id="r"),
        ),
        (
            refresh_token("t4", family_id="t1", parent_id="t1", used_at=NOW, replaced_by="t5"),
            event("token.refreshed", "k1", actor="key:k1"),
        ),
    ]


@pytest.mark.postgresql
async def test_concurrent_token_stores_write_what_sequential_ones_write(
    pg_storage: SQLStorage, round_trips: list[str]
) -> None:
    await _seed_keys(pg_storage)
    for token, audit in _tokens():
        await pg_storage.refresh_tokens.add(token, audit=audit)
    one_by_one = await _tables(pg_storage)
    await _clear(pg_storage)
    await _seed_keys(pg_storage)
    round_trips.clear()

    await asyncio.gather(
        *(pg_storage.refresh_tokens.add(token, audit=audit) for token, audit in _tokens())
    )

    assert await _tables(pg_storage) == one_by_one
    assert len(round_trips) == 1


@pytest.mark.postgresql
async def test_concurrent_issuances_and_audit_events_go_in_one_round_trip_each(
    pg_storage: SQLStorage, round_trips: list[str]
) -> None:
    await _seed_keys(pg_storage)  # k3 is revoked
    round_trips.clear()

    recorded = await asyncio.gather(
        *(pg_storage.audit.record_issuance(event("token.issued", k)) for k in ("k1", "k3", "k2"))
    )
    await asyncio.gather(*(pg_storage.audit.record(event("login.failed")) for _ in range(3)))

    assert recorded == [True, False, True]
    assert len(round_trips) == 2
    assert all("unnest" in sql for sql in round_trips)
    issued = await pg_storage.audit.list(limit=10, action="token.issued")
    assert [stored.event.target_id for stored in issued] == ["k2", "k1"]
    assert len(await pg_storage.audit.list(limit=10, action="login.failed")) == 3


@pytest.mark.postgresql
async def test_concurrent_token_lookups_answer_as_sequential_ones(
    pg_storage: SQLStorage, round_trips: list[str]
) -> None:
    await _seed_keys(pg_storage)
    for token, audit in _tokens():
        await pg_storage.refresh_tokens.add(token, audit=audit)
    names = ["t1", "t3", "unknown", "t4", "t2"]
    one_by_one = [await pg_storage.refresh_tokens.find_with_key(hash_of(n)) for n in names]
    round_trips.clear()

    together = await asyncio.gather(
        *(pg_storage.refresh_tokens.find_with_key(hash_of(name)) for name in names)
    )

    assert together == one_by_one
    assert repr(together) == repr(one_by_one)
    assert together[2] is None
    assert together[1] is not None
    assert together[1][1] is None  # a person's token has no key
    assert len(round_trips) == 1


@pytest.mark.postgresql
async def test_a_clash_in_a_batch_fails_only_its_own_call(pg_storage: SQLStorage) -> None:
    await _seed_keys(pg_storage)
    await pg_storage.refresh_tokens.add(refresh_token("t0"), audit=event("token.issued"))
    clash = refresh_token("t9", token_hash=hash_of("t0"))

    results = await asyncio.gather(
        pg_storage.refresh_tokens.add(refresh_token("t1"), audit=event("token.issued")),
        pg_storage.refresh_tokens.add(clash, audit=event("token.issued")),
        pg_storage.refresh_tokens.add(refresh_token("t2"), audit=event("token.issued")),
        return_exceptions=True,
    )

    assert results[0] is True
    assert isinstance(results[1], ConflictError)
    assert results[2] is True
    assert await pg_storage.refresh_tokens.find_with_key(hash_of("t1")) is not None
    assert await pg_storage.refresh_tokens.find_with_key(hash_of("t2")) is not None
    assert await pg_storage.refresh_tokens.find_with_key(hash_of("t9")) is None


@pytest.mark.postgresql
async def test_a_refused_value_in_a_batch_fails_only_its_own_call(pg_storage: SQLStorage) -> None:
    await _seed_keys(pg_storage)
    naive = refresh_token("t2", created_at=NOW.replace(tzinfo=None))

    results = await asyncio.gather(
        pg_storage.refresh_tokens.add(refresh_token("t1"), audit=event("token.issued")),
        pg_storage.refresh_tokens.add(naive, audit=event("token.issued")),
        return_exceptions=True,
    )

    assert results[0] is True
    assert isinstance(results[1], sa.exc.StatementError)
    assert await pg_storage.refresh_tokens.find_with_key(hash_of("t1")) is not None


@pytest.mark.postgresql
async def test_a_connection_lost_under_a_batch_fails_every_call_once(
    pg_storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _seed_keys(pg_storage)
    send = hot_postgres.send

    async def _lose_batches(
        connection: asyncpg.Connection, sql: str, arguments: Any, **kw: Any
    ) -> Any:
        if "unnest" in sql:
            raise ConnectionResetError("connection reset by peer")
        return await send(connection, sql, arguments, **kw)

    monkeypatch.setattr(hot_postgres, "send", _lose_batches)
    results = await asyncio.gather(
        *(
            pg_storage.refresh_tokens.add(refresh_token(f"t{n}"), audit=event("x"))
            for n in range(3)
        ),
        return_exceptions=True,
    )

    assert all(isinstance(result, StorageUnavailableError) for result in results)
    monkeypatch.setattr(hot_postgres, "send", send)
    assert await pg_storage.refresh_tokens.find_with_key(hash_of("t0")) is None
    await pg_storage.refresh_tokens.add(refresh_token("t0"), audit=event("x"))  # recovered
