"""A database that cannot be reached raises `StorageUnavailableError` (503), never a 401.

security.md §0.6 and §4.3 (T-REL-01, -02, -06): refused connections, dropped connections,
an exhausted pool and an unwritable SQLite file all end as the same retryable error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from keyturn.errors import ConflictError, StorageUnavailableError
from keyturn.storage.engine import create_engine
from keyturn.storage.migrate import current_revision, upgrade
from keyturn.storage.sql import SQLStorage

from .factories import NOW, api_key, end_other_sessions, event, hash_of, refresh_token

Verb = Callable[[SQLStorage], Awaitable[object]]

VERBS: dict[str, Verb] = {
    "ping": lambda s: s.ping(),
    "keys.find_by_hash": lambda s: s.keys.find_by_hash(hash_of("k1"), now=NOW),
    "keys.add": lambda s: s.keys.add(api_key("k9"), audit=event("key.registered")),
    "keys.mark_used": lambda s: s.keys.mark_used("k1", at=NOW),
    "refresh_tokens.find_with_key": lambda s: s.refresh_tokens.find_with_key(hash_of("t1")),
    "refresh_tokens.add": lambda s: s.refresh_tokens.add(
        refresh_token("t9", key_id=None), audit=event("refresh.issued")
    ),
    "refresh_tokens.rotate": lambda s: s.refresh_tokens.rotate(
        "t1", refresh_token("t9", key_id=None), now=NOW, audit=event("refresh.rotated")
    ),
    "signing_keys.list": lambda s: s.signing_keys.list(),
    "revocations.snapshot": lambda s: s.revocations.snapshot(now=NOW),
    "audit.record": lambda s: s.audit.record(event("x")),
}


@pytest.fixture
async def unreachable_postgresql() -> SQLStorage:
    """A storage pointed at a port where nothing listens."""
    return SQLStorage(create_engine("postgresql://postgres:pw@127.0.0.1:1/x", connect_timeout=2))


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
async def test_refused_postgresql_connection_is_unavailable(
    unreachable_postgresql: SQLStorage, verb: Verb
) -> None:
    try:
        with pytest.raises(StorageUnavailableError) as exc_info:
            await verb(unreachable_postgresql)
    finally:
        await unreachable_postgresql.close()

    assert exc_info.value.status_code == 503
    assert exc_info.value.retry_after >= 1
    assert isinstance(exc_info.value.__cause__, OSError)
    assert "pw" not in str(exc_info.value)


async def test_migrating_an_unreachable_database_is_unavailable() -> None:
    with pytest.raises(StorageUnavailableError):
        await upgrade("postgresql://postgres@127.0.0.1:1/x")
    with pytest.raises(StorageUnavailableError):
        await current_revision("postgresql://postgres@127.0.0.1:1/x")


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
async def test_sqlite_file_that_cannot_be_created_is_unavailable(
    tmp_path: Path, verb: Verb
) -> None:
    """The data directory would have to live inside a regular file."""
    (tmp_path / "not-a-dir").write_text("")
    storage = SQLStorage(create_engine(f"sqlite:///{tmp_path}/not-a-dir/data/keyturn.db"))
    try:
        with pytest.raises(StorageUnavailableError):
            await verb(storage)
    finally:
        await storage.close()


async def test_read_only_sqlite_refuses_writes_and_still_serves_reads(
    sqlite_database_url: str,
) -> None:
    """T-REL-06: writes to a read-only database are a 503; reads keep working."""
    path = sqlite_database_url.removeprefix("sqlite+aiosqlite:///")
    writable = SQLStorage(create_engine(sqlite_database_url))
    await writable.keys.add(api_key("k1"), audit=event("key.registered"))
    await writable.close()
    read_only = SQLStorage(create_engine(f"sqlite:///file:{path}?mode=ro&uri=true"))
    try:
        with pytest.raises(StorageUnavailableError):
            await read_only.keys.add(api_key("k2"), audit=event("key.registered"))
        with pytest.raises(StorageUnavailableError):
            await read_only.keys.mark_used("k1", at=NOW)
        assert await read_only.keys.find_by_hash(hash_of("k1"), now=NOW) is not None
    finally:
        await read_only.close()


async def test_exhausted_pool_is_unavailable_quickly(database_url: str) -> None:
    """T-REL-02: no free connection within ``pool_timeout`` is a 503, not a hang."""
    storage = SQLStorage(create_engine(database_url, pool_size=1, max_overflow=0, pool_timeout=0.2))
    try:
        async with storage.engine.connect() as held:
            await held.execute(sa.text("SELECT 1"))
            with pytest.raises(StorageUnavailableError) as exc_info:
                await storage.keys.get("k1")
        assert isinstance(exc_info.value.__cause__, sa.exc.TimeoutError)
        assert await storage.keys.get("k1") is None  # the pool serves again
    finally:
        await storage.close()


@pytest.mark.postgresql
async def test_dropped_postgresql_connections_fail_once_then_recover(
    postgresql_database_url: str,
) -> None:
    """T-REL-01: a server-side disconnect costs one 503; the pool then reconnects."""
    storage = SQLStorage(create_engine(postgresql_database_url, pool_size=1, max_overflow=0))
    try:
        await storage.ping()
        await end_other_sessions(postgresql_database_url)

        with pytest.raises(StorageUnavailableError):
            await storage.keys.get("k1")
        assert await storage.keys.get("k1") is None
    finally:
        await storage.close()


async def test_conflict_messages_name_no_hash(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))

    with pytest.raises(ConflictError) as exc_info:
        await storage.keys.add(api_key("k2", key_hash=hash_of("k1")), audit=event("x"))

    assert hash_of("k1").hex() not in str(exc_info.value)
    assert exc_info.value.status_code == 409


@pytest.mark.postgresql
async def test_statement_timeout_is_unavailable(postgresql_database_url: str) -> None:
    """T-REL-07: a statement stuck behind a lock past ``statement_timeout`` is a 503."""
    storage = SQLStorage(create_engine(postgresql_database_url, statement_timeout=0.2))
    blocker = await asyncpg.connect(
        postgresql_database_url, server_settings={"search_path": "keyturn"}
    )
    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        async with blocker.transaction():
            await blocker.execute("UPDATE api_keys SET name = 'locked' WHERE id = 'k1'")
            with pytest.raises(StorageUnavailableError):
                await storage.keys.revoke("k1", at=NOW, reason="x", audit=event("key.revoked"))
    finally:
        await blocker.close()
        await storage.close()


@pytest.mark.postgresql
async def test_read_only_postgresql_refuses_writes_and_still_serves_reads(
    postgresql_database_url: str,
) -> None:
    """T-REL-06: SQLSTATE 25006 (read-only transaction) on a write is a 503."""
    storage = SQLStorage(create_engine(postgresql_database_url))

    @sa.event.listens_for(storage.engine.sync_engine, "connect")
    def _read_only(dbapi_connection: Any, record: object) -> None:
        dbapi_connection.run_async(
            lambda conn: conn.execute("SET default_transaction_read_only = on")
        )

    try:
        with pytest.raises(StorageUnavailableError):
            await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        with pytest.raises(StorageUnavailableError):
            await storage.refresh_tokens.add(
                refresh_token("t1", key_id=None), audit=event("refresh.issued")
            )
        assert await storage.keys.find_by_hash(hash_of("k1"), now=NOW) is None
    finally:
        await storage.close()
