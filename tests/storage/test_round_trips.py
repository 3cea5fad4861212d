"""The hot paths cost one statement on PostgreSQL, sent outside any BEGIN/COMMIT."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import sqlalchemy as sa

from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage

from .factories import NOW, api_key, event, hash_of, refresh_token

HotPath = Callable[[SQLStorage], Awaitable[object]]

HOT_PATHS: dict[str, HotPath] = {
    "keys.find_by_hash": lambda s: s.keys.find_by_hash(hash_of("k1"), now=NOW),
    "keys.mark_used": lambda s: s.keys.mark_used("k1", at=NOW),
    "refresh_tokens.find_with_key": lambda s: s.refresh_tokens.find_with_key(hash_of("t1")),
    "refresh_tokens.add": lambda s: s.refresh_tokens.add(
        refresh_token("t2", family_id="f2"), audit=event("refresh.issued")
    ),
    "refresh_tokens.rotate": lambda s: s.refresh_tokens.rotate(
        "t1", refresh_token("t3", parent_id="t1"), now=NOW, audit=event("refresh.rotated")
    ),
    "audit.record": lambda s: s.audit.record(event("login.failed")),
}


@pytest.mark.postgresql
@pytest.mark.parametrize("hot_path", list(HOT_PATHS.values()), ids=list(HOT_PATHS))
async def test_hot_path_is_one_autocommit_statement(
    postgresql_database_url: str, hot_path: HotPath
) -> None:
    storage = SQLStorage(create_engine(postgresql_database_url))
    sent: list[str | None] = []

    def _record(conn: sa.Connection, *args: Any) -> None:
        sent.append(conn.get_execution_options().get("isolation_level"))

    try:
        await storage.keys.add(api_key("k1"), audit=event("key.registered"))
        await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
        sa.event.listen(storage.engine.sync_engine, "before_cursor_execute", _record)

        await hot_path(storage)

        assert sent == ["AUTOCOMMIT"]
    finally:
        await storage.close()
