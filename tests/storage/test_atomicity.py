"""Atomicity: a verb that fails half-way leaves no partial rows (security.md §4.1, item 4).

The failure is injected as an audit event whose ``detail`` cannot be stored as JSON, so
it strikes after the change itself was sent (SQLite) or while the single statement
carrying both is prepared (PostgreSQL).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa

from keyturn.core.records import AuditEvent, SigningKeyState
from keyturn.storage.engine import autocommit
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import metadata

from .factories import NOW, api_key, event, hash_of, refresh_token, signing_key

BROKEN = event("broken", detail={"not json": object()})

Verb = Callable[[SQLStorage, AuditEvent], Awaitable[object]]


async def _snapshot(storage: SQLStorage) -> dict[str, list[tuple[object, ...]]]:
    async with autocommit(storage.engine).connect() as conn:
        return {
            table.name: sorted(map(tuple, (await conn.execute(sa.select(table))).all()), key=repr)
            for table in metadata.sorted_tables
        }


async def _seed(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    await storage.signing_keys.add(
        signing_key("active", SigningKeyState.ACTIVE), audit=event("signing_key.created")
    )
    await storage.signing_keys.add(signing_key("pending"), audit=event("signing_key.created"))


VERBS: dict[str, Verb] = {
    "keys.add": lambda s, audit: s.keys.add(api_key("k2"), audit=audit),
    "keys.register_legacy": lambda s, audit: s.keys.register_legacy(
        api_key("k1-again", key_hash=hash_of("k1"), expires_at=NOW), audit=audit
    ),
    "keys.revoke": lambda s, audit: s.keys.revoke("k1", at=NOW, reason="x", audit=audit),
    "keys.rotate": lambda s, audit: s.keys.rotate(
        "k1", new_hash=hash_of("new"), grace_until=NOW, audit=audit
    ),
    "keys.set_expiry": lambda s, audit: s.keys.set_expiry("k1", expires_at=NOW, audit=audit),
    "refresh_tokens.add": lambda s, audit: s.refresh_tokens.add(
        refresh_token("t2", family_id="f2"), audit=audit
    ),
    "refresh_tokens.rotate": lambda s, audit: s.refresh_tokens.rotate(
        "t1", refresh_token("t2", parent_id="t1"), now=NOW, audit=audit
    ),
    "refresh_tokens.revoke_family": lambda s, audit: s.refresh_tokens.revoke_family(
        "f1", at=NOW, audit=audit
    ),
    "signing_keys.add": lambda s, audit: s.signing_keys.add(signing_key("new"), audit=audit),
    "signing_keys.activate": lambda s, audit: s.signing_keys.activate(
        "pending", at=NOW, retired_publish_until=NOW + timedelta(days=1), audit=audit
    ),
    "revocations.revoke_access_token": lambda s, audit: s.revocations.revoke_access_token(
        "jti-1", expires_at=NOW + timedelta(minutes=5), audit=audit
    ),
    "claim_setting": lambda s, audit: s.claim_setting("name", "value", at=NOW, audit=audit),
}


@pytest.mark.parametrize("verb", list(VERBS.values()), ids=list(VERBS))
async def test_a_failure_mid_verb_leaves_every_table_unchanged(
    sql_storage: SQLStorage, verb: Verb
) -> None:
    await _seed(sql_storage)
    before = await _snapshot(sql_storage)

    with pytest.raises(sa.exc.StatementError):
        await verb(sql_storage, BROKEN)

    assert await _snapshot(sql_storage) == before
