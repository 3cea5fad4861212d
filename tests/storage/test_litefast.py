"""The SQLite fast path: hot verbs on the loop's own connection, group commit, fallback.

See `keyturn.storage.sql.hot_sqlite`. The hot verbs must not touch the pooled (aiosqlite)
path while the database is free, must fall back to it -- and wait there -- when another
writer holds the file, and a write that fails in a group commit must not take the others
with it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from keyturn.errors import ConflictError, StorageUnavailableError
from keyturn.storage.engine import create_engine, sqlite_file
from keyturn.storage.sql import SQLStorage, hot_sqlite
from keyturn.storage.sql.pooled import PooledExecutor
from keyturn.storage.tables import audit_events, refresh_tokens

from .factories import NOW, api_key, audit_actions, count_rows, event, hash_of, refresh_token


@pytest.fixture
async def lite_storage(sqlite_database_url: str) -> AsyncIterator[SQLStorage]:
    """Storage on a SQLite file, with key ``k1`` stored."""
    store = SQLStorage(create_engine(sqlite_database_url))
    try:
        await store.keys.add(api_key("k1"), audit=event("key.registered", "k1"))
        yield store
    finally:
        await store.close()


@pytest.fixture
def pooled_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the pooled (aiosqlite) path was asked to do, in order."""
    calls: list[str] = []
    original = PooledExecutor._run

    async def run(self: PooledExecutor, doing: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(doing)
        return await original(self, doing, *args, **kwargs)

    monkeypatch.setattr(PooledExecutor, "_run", run)
    return calls


def _lite(storage: SQLStorage) -> hot_sqlite.LitePath:
    """The loop's connection that the storage's hot path runs on."""
    assert isinstance(storage._hot, hot_sqlite.SqliteHotPath)
    return storage._hot.lite


def _database_path(storage: SQLStorage) -> str:
    path = sqlite_file(storage.engine)
    assert path is not None
    return path


async def test_hot_verbs_never_use_the_pooled_path(
    lite_storage: SQLStorage, pooled_calls: list[str]
) -> None:
    token = refresh_token("t1")
    successor = refresh_token("t2", parent_id="t1")

    found_key = await lite_storage.keys.find_by_hash(hash_of("k1"), now=NOW)
    await lite_storage.keys.mark_used("k1", at=NOW)
    await lite_storage.refresh_tokens.add(token, audit=event("refresh.issued", "t1"))
    found = await lite_storage.refresh_tokens.find_with_key(hash_of("t1"))
    rotated = await lite_storage.refresh_tokens.rotate(
        "t1", successor, now=NOW, audit=event("refresh.rotated", "t1")
    )
    client, public_keys = await lite_storage.client_keys.find_client("k1")

    assert pooled_calls == []
    assert client == await lite_storage.keys.get("k1")
    assert public_keys == []
    assert found_key is not None
    assert found_key.id == "k1"
    assert found == (token, await lite_storage.keys.get("k1"))
    assert rotated is True
    assert (await lite_storage.keys.get("k1")).last_used_at == NOW  # type: ignore[union-attr]
    assert await audit_actions(lite_storage) == [
        "key.registered",
        "refresh.issued",
        "refresh.rotated",
    ]


async def test_rows_read_back_exactly_as_the_pooled_path_reads_them(
    lite_storage: SQLStorage, pooled_calls: list[str]
) -> None:
    key = api_key("k2", roles=("admin",), scopes=("read",), extra_claims={"level": 2.0})
    await lite_storage.keys.add(key, audit=event("key.registered", "k2"))

    fast = await lite_storage.keys.find_by_hash(hash_of("k2"), now=NOW)
    pooled = await lite_storage.keys.get("k2")

    assert fast == pooled == key


async def test_a_locked_database_falls_back_to_the_pooled_path_and_waits(
    lite_storage: SQLStorage, pooled_calls: list[str]
) -> None:
    other = sqlite3.connect(_database_path(lite_storage), isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        write = asyncio.create_task(
            lite_storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
        )
        async with asyncio.timeout(10):
            while not pooled_calls:  # the fast path gave up at once, without waiting
                await asyncio.sleep(0)
        assert not write.done()
        other.execute("COMMIT")
        async with asyncio.timeout(10):
            await write
    finally:
        other.close()

    assert pooled_calls == ["store the refresh token"]
    assert await count_rows(lite_storage, refresh_tokens) == 1


async def test_writers_queued_in_this_process_keep_their_order(
    lite_storage: SQLStorage, pooled_calls: list[str]
) -> None:
    lock = lite_storage.refresh_tokens._pooled._write_lock
    assert lock is not None
    async with lock:  # a pooled-path writer is in the middle of a transaction
        write = asyncio.create_task(
            lite_storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
        )
        async with asyncio.timeout(10):
            while not pooled_calls:
                await asyncio.sleep(0)
        assert not write.done()
    async with asyncio.timeout(10):
        await write

    assert pooled_calls == ["store the refresh token"]
    assert await count_rows(lite_storage, refresh_tokens) == 1


async def test_concurrent_writes_share_one_commit_and_a_failure_stays_its_own(
    lite_storage: SQLStorage,
) -> None:
    lite = _lite(lite_storage)
    await lite_storage.refresh_tokens.add(refresh_token("t0"), audit=event("refresh.issued"))
    commits = lite._commits
    writes = [
        lite_storage.refresh_tokens.add(refresh_token(f"t{n}"), audit=event("refresh.issued"))
        for n in range(1, 9)
    ]
    clash = lite_storage.refresh_tokens.add(
        refresh_token("t9", token_hash=hash_of("t0")), audit=event("refresh.issued")
    )

    results = await asyncio.gather(*writes, clash, return_exceptions=True)

    assert results[:8] == [True] * 8
    assert isinstance(results[8], ConflictError)
    assert lite._commits == commits + 1  # nine writers, one transaction
    assert await count_rows(lite_storage, refresh_tokens) == 9
    assert await count_rows(lite_storage, audit_events) == 1 + 9  # none for the clash


async def test_only_one_of_concurrent_rotations_wins(lite_storage: SQLStorage) -> None:
    await lite_storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))

    results = await asyncio.gather(
        *(
            lite_storage.refresh_tokens.rotate(
                "t1",
                refresh_token(f"s{n}", parent_id="t1"),
                now=NOW,
                audit=event("refresh.rotated"),
            )
            for n in range(20)
        )
    )

    assert results.count(True) == 1
    assert await count_rows(lite_storage, refresh_tokens) == 2
    assert (await audit_actions(lite_storage)).count("refresh.rotated") == 1


async def test_a_cancelled_writer_does_not_disturb_the_others(lite_storage: SQLStorage) -> None:
    first = asyncio.create_task(
        lite_storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    )
    second = asyncio.create_task(
        lite_storage.refresh_tokens.add(refresh_token("t2"), audit=event("refresh.issued"))
    )
    await asyncio.sleep(0)  # both are queued for the same commit
    first.cancel()

    await second

    assert first.cancelled()
    assert await count_rows(lite_storage, refresh_tokens) == 1


async def test_checkpoints_run_off_the_loop_every_so_many_commits(
    lite_storage: SQLStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpointed: list[str] = []
    monkeypatch.setattr(hot_sqlite, "CHECKPOINT_EVERY", 2)
    monkeypatch.setattr(hot_sqlite, "_checkpoint", checkpointed.append)

    for n in range(5):
        await lite_storage.refresh_tokens.add(refresh_token(f"t{n}"), audit=event("x"))
    await lite_storage.close()

    assert checkpointed == [_database_path(lite_storage)] * 2


def test_a_checkpoint_moves_the_wal_into_the_database(tmp_path: Path) -> None:
    path = str(tmp_path / "wal.db")
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (x)")
    writer.execute("INSERT INTO t VALUES (1)")
    before = Path(path).stat().st_size  # the table's pages are only in the WAL

    hot_sqlite._checkpoint(path)

    after = Path(path).stat().st_size
    writer.close()
    assert before < after
    assert after >= 2 * 4096  # the schema page and the table's page


async def test_a_broken_file_is_unavailable_and_the_connection_is_replaced(
    lite_storage: SQLStorage,
) -> None:
    lite = _lite(lite_storage)

    def broken(conn: hot_sqlite.LiteConnection) -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    with pytest.raises(StorageUnavailableError, match="store it"):
        await lite.write("store it", broken)
    with pytest.raises(StorageUnavailableError, match="read it"):
        lite.read("read it", broken)

    assert lite._connection is None  # the next verb opens a fresh one
    assert await lite_storage.keys.find_by_hash(hash_of("k1"), now=NOW) is not None


async def test_a_database_not_in_wal_mode_gets_no_fast_path(
    tmp_path: Path, pooled_calls: list[str]
) -> None:
    path = tmp_path / "rollback.db"
    sqlite3.connect(path).close()
    lite = hot_sqlite.LitePath(str(path), create_engine(f"sqlite:///{path}").dialect)
    read: Callable[[hot_sqlite.LiteConnection], None] = lambda conn: None  # noqa: E731

    with pytest.raises(hot_sqlite.Busy):
        lite.read("read it", read)
    await lite.close()


async def test_memory_databases_have_no_fast_path() -> None:
    store = SQLStorage(create_engine("sqlite://"))
    try:
        assert store._hot is None
    finally:
        await store.close()
