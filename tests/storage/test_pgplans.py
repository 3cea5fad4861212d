"""The hot PostgreSQL statements keep index plans when their tables grow (issue 19).

The fast path runs its statements as prepared statements on long-lived connections.
PostgreSQL caches a generic plan for a prepared statement after a few executions, made
from the table sizes of that moment: prepared while ``refresh_tokens`` was empty, the
batched refresh-token lookup kept a sequential scan with hash joins once the table held
tens of thousands of rows. Here every hot verb runs repeatedly on empty tables, the
tables then grow to 50,000 rows each (one ``INSERT ... SELECT generate_series``) within
the same connection's life, and the plans PostgreSQL actually executes next (captured
with ``auto_explain``, sent to the client as LOG messages) must read both tables through
their indexes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from keyturn.storage.schema import DEFAULT_SCHEMA
from keyturn.storage.sql import SQLStorage
from keyturn.storage.sql import hot_postgres as _pgfast
from keyturn.storage.sql.hot_postgres import PostgresHotPath

from .factories import NOW, api_key, event, hash_of, refresh_token

pytestmark = pytest.mark.postgresql

GROWN = 50_000
TABLES = ("refresh_tokens", "api_keys", "audit_events")

_GROW = (  # $1: how many rows
    """INSERT INTO api_keys (id, key_hash, identifier, roles, extra_claims, metadata,
        legacy, created_at)
    SELECT 'grown-' || g, sha256(('grown-' || g)::bytea), 'svc', '[]', '{}', '{}',
        false, now()
    FROM generate_series(1, $1::int) AS g""",
    """INSERT INTO refresh_tokens (id, family_id, token_hash, subject, scope, rotating,
        key_id, identifier, created_at, expires_at)
    SELECT 'grown-' || g, 'grown-' || g, sha256(('grown-token-' || g)::bytea),
        'key:grown-' || g, '[]', true, 'grown-' || g, 'svc', now(), now() + interval '1 day'
    FROM generate_series(1, $1::int) AS g""",
)


class _Plans:
    """The plans ``auto_explain`` reports for every fast-path statement, in order."""

    def __init__(self) -> None:
        self.reported: list[str] = []
        self._seen: set[int] = set()

    async def watch(self, connection: asyncpg.Connection) -> None:
        if id(connection) in self._seen:
            return
        self._seen.add(id(connection))
        await connection.execute(
            "LOAD 'auto_explain'; SET auto_explain.log_min_duration = 0;"
            " SET auto_explain.log_nested_statements = on; SET client_min_messages = log"
        )
        connection.add_log_listener(self._heard)

    def _heard(self, _connection: Any, message: Any) -> None:
        if "plan:" in message.message:
            self.reported.append(message.message)

    async def next_plans(self, run: Callable[[], Awaitable[object]], count: int) -> list[str]:
        """The plans of the ``count`` statements ``run`` sends (log messages arrive late)."""
        start = len(self.reported)
        await run()
        deadline = time.monotonic() + 5
        while len(self.reported) < start + count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return self.reported[start:]


@pytest.fixture
async def watched(
    postgresql_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[SQLStorage, _Plans]]:
    plans = _Plans()
    send = _pgfast.send

    async def watched_send(connection: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
        await plans.watch(connection)
        return await send(connection, *args, **kwargs)

    monkeypatch.setattr(_pgfast, "send", watched_send)
    # pool_size 4: the fast path leases one connection, which runs every statement here.
    storage = await SQLStorage.open(postgresql_database_url, pool_size=4)
    try:
        yield storage, plans
    finally:
        await storage.close()


async def _grow(url: str) -> None:
    connection = await asyncpg.connect(
        url.replace("postgresql+asyncpg://", "postgresql://"),
        server_settings={"search_path": DEFAULT_SCHEMA},  # where Keyturn's tables live
    )
    try:
        for statement in _GROW:
            await connection.execute(statement, GROWN)
    finally:
        await connection.close()


def _verbs(storage: SQLStorage) -> dict[str, Callable[[int], Awaitable[object]]]:
    """Each hot statement of the fast path, as a call; the int makes new rows distinct."""
    keys, tokens = storage.keys, storage.refresh_tokens

    async def batch(*calls: Awaitable[object]) -> None:
        await asyncio.gather(*calls)

    def new_token(n: int) -> Any:
        return refresh_token(f"new-{n}")

    return {
        "key by hash": lambda n: keys.find_by_hash(hash_of("k1"), now=NOW),
        "keys by hash (batch)": lambda n: batch(
            *(keys.find_by_hash(hash_of(f"k{i}"), now=NOW) for i in range(4))
        ),
        "key used": lambda n: keys.mark_used("k1", at=NOW),
        "token with key": lambda n: tokens.find_with_key(hash_of("t1")),
        "tokens with key (batch)": lambda n: batch(
            *(tokens.find_with_key(hash_of(f"t{i}")) for i in range(4))
        ),
        "token stored": lambda n: tokens.add(new_token(n), audit=event("refresh.issued")),
        "tokens stored (batch)": lambda n: batch(
            *(tokens.add(new_token(1000 * n + i), audit=event("refresh.issued")) for i in range(4))
        ),
        "token rotated": lambda n: tokens.rotate(
            f"new-{n}", refresh_token(f"successor-{n}"), now=NOW, audit=event("rotated")
        ),
    }


async def test_hot_statements_read_through_indexes_after_the_tables_grow(
    watched: tuple[SQLStorage, _Plans], postgresql_database_url: str
) -> None:
    storage, plans = watched
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    verbs = _verbs(storage)
    for n in range(1, 9):  # past the 5 custom plans after which a generic one may stick
        for verb in verbs.values():
            await verb(n)
    hot = storage._hot
    assert isinstance(hot, PostgresHotPath)
    assert hot.fast.leased == 1

    await _grow(postgresql_database_url)

    bad = {}
    for name, verb in verbs.items():
        reported = await plans.next_plans(lambda verb=verb: verb(100), 1)
        assert reported, f"no plan reported for {name}"
        scans = [
            line.strip()
            for plan in reported
            for line in plan.splitlines()
            if any(f"Seq Scan on {table}" in line for table in TABLES)
        ]
        if scans:
            bad[name] = scans
    assert bad == {}
