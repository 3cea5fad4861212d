"""The hot paths cost one statement on PostgreSQL, sent outside any BEGIN/COMMIT.

Most of them take the asyncpg fast path (`keyturn.storage.sql.hot_postgres`), which bypasses
SQLAlchemy's execution events: statements are counted at both layers, SQLAlchemy's
``before_cursor_execute`` and `keyturn.storage.sql.hot_postgres.send`, through which every
fast-path statement reaches the server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage, hot_postgres

from .factories import NOW, api_key, event, hash_of, refresh_token

HotPath = Callable[[SQLStorage], Awaitable[object]]

# name -> (verb, the layer that sends its statement)
HOT_PATHS: dict[str, tuple[HotPath, str]] = {
    "keys.find_by_hash": (lambda s: s.keys.find_by_hash(hash_of("k1"), now=NOW), "asyncpg"),
    "keys.mark_used": (lambda s: s.keys.mark_used("k1", at=NOW), "asyncpg"),
    "refresh_tokens.find_with_key": (
        lambda s: s.refresh_tokens.find_with_key(hash_of("t1")),
        "asyncpg",
    ),
    "refresh_tokens.add": (
        lambda s: s.refresh_tokens.add(
            refresh_token("t2", family_id="f2"), audit=event("refresh.issued")
        ),
        "asyncpg",
    ),
    "refresh_tokens.rotate": (
        lambda s: s.refresh_tokens.rotate(
            "t1", refresh_token("t3", parent_id="t1"), now=NOW, audit=event("refresh.rotated")
        ),
        "asyncpg",
    ),
    "client_keys.find_client": (lambda s: s.client_keys.find_client("k1"), "asyncpg"),
    "audit.record": (lambda s: s.audit.record(event("login.failed")), "asyncpg"),
    "replays.claim": (
        lambda s: s.replays.claim("jti-1", expires_at=NOW + timedelta(minutes=5), now=NOW),
        "asyncpg",
    ),
}


@pytest.mark.postgresql
@pytest.mark.parametrize("hot_path", list(HOT_PATHS.values()), ids=list(HOT_PATHS))
async def test_hot_path_is_one_autocommit_statement(
    postgresql_database_url: str, hot_path: tuple[HotPath, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    verb, layer = hot_path
    storage = SQLStorage(create_engine(postgresql_database_url))
    sent: list[tuple[str, str | None]] = []

    def _record(conn: sa.Connection, *args: Any) -> None:
        sent.append(("sqlalchemy", conn.get_execution_options().get("isolation_level")))

    send = hot_postgres.send

    async def _counted_send(
        connection: asyncpg.Connection, sql: str, arguments: Sequence[Any], **options: Any
    ) -> Any:
        # Outside a transaction block, PostgreSQL commits the statement on its own.
        sent.append(("asyncpg", None if connection.is_in_transaction() else "AUTOCOMMIT"))
        return await send(connection, sql, arguments, **options)

    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
        sa.event.listen(storage.engine.sync_engine, "before_cursor_execute", _record)
        monkeypatch.setattr(hot_postgres, "send", _counted_send)

        await verb(storage)

        assert sent == [(layer, "AUTOCOMMIT")]
    finally:
        await storage.close()
