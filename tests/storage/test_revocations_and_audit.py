"""Revoked access tokens, revocation snapshots, and the audit trail."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta

import sqlalchemy as sa

from keyturn.core.keywrap import KeyEncryptionKey, KeyWrapper
from keyturn.core.records import SigningKeyState
from keyturn.core.secrets import Pepper, SecretKind, generate_secret
from keyturn.storage.engine import autocommit
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import audit_events

from .factories import NOW, api_key, audit_actions, event, refresh_token, signing_key


async def test_revoke_access_token_appears_in_the_snapshot(storage: SQLStorage) -> None:
    await storage.revocations.revoke_access_token(
        "jti-1", expires_at=NOW + timedelta(minutes=10), audit=event("token.revoked", "jti-1")
    )

    snapshot = await storage.revocations.snapshot(now=NOW)

    assert snapshot.tokens == {"jti-1": int((NOW + timedelta(minutes=10)).timestamp())}
    assert snapshot.subjects == {}
    assert await audit_actions(storage) == ["token.revoked"]


async def test_revoke_access_token_is_idempotent(storage: SQLStorage) -> None:
    """Repeating it changes nothing and writes no second audit row; a later expiry wins."""
    for minutes in (10, 10, 5):
        await storage.revocations.revoke_access_token(
            "jti-1", expires_at=NOW + timedelta(minutes=minutes), audit=event("token.revoked")
        )
    await storage.revocations.revoke_access_token(
        "jti-1", expires_at=NOW + timedelta(minutes=20), audit=event("token.revoked")
    )

    snapshot = await storage.revocations.snapshot(now=NOW)

    assert snapshot.tokens == {"jti-1": int((NOW + timedelta(minutes=20)).timestamp())}
    assert await audit_actions(storage) == ["token.revoked", "token.revoked"]


async def test_snapshot_leaves_out_tokens_that_expired(storage: SQLStorage) -> None:
    await storage.revocations.revoke_access_token(
        "old", expires_at=NOW, audit=event("token.revoked")
    )
    await storage.revocations.revoke_access_token(
        "live", expires_at=NOW + timedelta(seconds=1), audit=event("token.revoked")
    )

    snapshot = await storage.revocations.snapshot(now=NOW)

    assert set(snapshot.tokens) == {"live"}


async def test_snapshot_lists_revoked_keys_as_subjects(storage: SQLStorage) -> None:
    """Revoked at 12:00:00.5 -> 12:00:01: tokens issued in that second are refused too."""
    revoked_at = NOW + timedelta(milliseconds=500)
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))
    await storage.keys.add(api_key("k2"), audit=event("key.registered"))
    await storage.keys.revoke("k1", at=revoked_at, reason="x", audit=event("key.revoked"))

    snapshot = await storage.revocations.snapshot(now=NOW)

    assert snapshot.subjects == {"key:k1": int(NOW.timestamp()) + 1}


async def test_snapshot_leaves_out_subjects_revoked_longer_ago_than_a_token_lives(
    storage: SQLStorage,
) -> None:
    """Keys revoked over ``max_token_lifetime`` ago have no live token left to refuse."""
    revoked = {"k1": NOW - timedelta(seconds=931), "k2": NOW - timedelta(seconds=930)}
    revoked["k3"] = NOW - timedelta(seconds=60)
    for key_id, at in revoked.items():
        await storage.keys.add(api_key(key_id), audit=event("key.registered"))
        await storage.keys.revoke(key_id, at=at, reason="x", audit=event("key.revoked"))

    recent = await storage.revocations.snapshot(now=NOW, max_token_lifetime=timedelta(seconds=930))
    every = await storage.revocations.snapshot(now=NOW)

    now = int(NOW.timestamp())
    assert recent.subjects == {"key:k2": now - 930, "key:k3": now - 60}
    assert every.subjects == {"key:k1": now - 931, "key:k2": now - 930, "key:k3": now - 60}


async def test_audit_record_and_read_back_every_field(storage: SQLStorage) -> None:
    recorded = event(
        "login.failed",
        "u1",
        outcome="failure",
        actor="user:u1",
        target_type="user",
        request_id="req-1",
        detail={"reason": "bad password", "attempt": 3},
    )

    await storage.audit.record(recorded)

    (stored,) = await storage.audit.list(limit=10)
    assert stored.event == recorded
    assert stored.id >= 1


async def test_audit_list_pages_newest_first(storage: SQLStorage) -> None:
    for number in range(5):
        await storage.audit.record(event(f"action.{number}"))

    first = await storage.audit.list(limit=2)
    second = await storage.audit.list(limit=2, before=first[-1].id)
    last = await storage.audit.list(limit=2, before=second[-1].id)

    actions = [stored.event.action for stored in first + second + last]
    assert actions == ["action.4", "action.3", "action.2", "action.1", "action.0"]
    assert await storage.audit.list(limit=2, before=last[-1].id) == []


async def test_audit_list_filters_by_action_and_target(storage: SQLStorage) -> None:
    await storage.audit.record(event("key.revoked", "k1"))
    await storage.audit.record(event("key.revoked", "k2"))
    await storage.audit.record(event("key.registered", "k1"))

    revoked = await storage.audit.list(limit=10, action="key.revoked")
    about_k1 = await storage.audit.list(limit=10, target_id="k1")
    both = await storage.audit.list(limit=10, action="key.revoked", target_id="k1")

    assert [(e.event.action, e.event.target_id) for e in revoked] == [
        ("key.revoked", "k2"),
        ("key.revoked", "k1"),
    ]
    assert [e.event.action for e in about_k1] == ["key.registered", "key.revoked"]
    assert [(e.event.action, e.event.target_id) for e in both] == [("key.revoked", "k1")]


async def test_every_state_change_is_audited_and_no_audit_row_holds_a_secret(
    sql_storage: SQLStorage,
) -> None:
    """Invariant 3 of security.md §4.1: one audit row per change, none with a secret."""
    pepper = Pepper.generate()
    api_secret, new_api_secret = (generate_secret(SecretKind.API_KEY) for _ in range(2))
    refresh_secrets = [generate_secret(SecretKind.REFRESH_TOKEN) for _ in range(2)]
    hashes = [pepper.hash(api_secret.value, SecretKind.API_KEY)]
    hashes.append(pepper.hash(new_api_secret.value, SecretKind.API_KEY))
    hashes += [pepper.hash(secret.value, SecretKind.REFRESH_TOKEN) for secret in refresh_secrets]
    wrapper = KeyWrapper([KeyEncryptionKey.generate()])
    private_pem = b"-----BEGIN PRIVATE KEY-----\nnot-a-real-key\n-----END PRIVATE KEY-----\n"
    sealed = wrapper.seal("kid1", private_pem)

    await sql_storage.keys.add(
        api_key("k1", key_hash=hashes[0]), audit=event("key.registered", "k1")
    )
    await sql_storage.keys.rotate(
        "k1", new_hash=hashes[1], grace_until=NOW, audit=event("key.rotated", "k1")
    )
    # Expiring later: a key expired by then gets no refresh token (issue 19).
    await sql_storage.keys.set_expiry(
        "k1", expires_at=NOW + timedelta(hours=1), audit=event("key.expired", "k1")
    )
    await sql_storage.refresh_tokens.add(
        refresh_token("t1", token_hash=hashes[2]), audit=event("refresh.issued", "t1")
    )
    await sql_storage.refresh_tokens.rotate(
        "t1",
        refresh_token("t2", token_hash=hashes[3], parent_id="t1"),
        now=NOW,
        audit=event("refresh.rotated", "t1"),
    )
    await sql_storage.refresh_tokens.revoke_family(
        "f1", at=NOW, audit=event("refresh.revoked", "f1")
    )
    await sql_storage.signing_keys.add(
        signing_key("kid1", sealed_private_key=sealed), audit=event("signing_key.created", "kid1")
    )
    await sql_storage.signing_keys.activate(
        "kid1", at=NOW, retired_publish_until=NOW, audit=event("signing_key.activated", "kid1")
    )
    await sql_storage.revocations.revoke_access_token(
        "jti-1", expires_at=NOW, audit=event("token.revoked", "jti-1")
    )
    await sql_storage.keys.revoke("k1", at=NOW, reason="done", audit=event("key.revoked", "k1"))

    assert await audit_actions(sql_storage) == [
        "key.registered",
        "key.rotated",
        "key.expired",
        "refresh.issued",
        "refresh.rotated",
        "refresh.revoked",
        "signing_key.created",
        "signing_key.activated",
        "token.revoked",
        "key.revoked",
    ]
    assert [key.state for key in await sql_storage.signing_keys.list()] == [SigningKeyState.ACTIVE]
    secrets_as_text = [api_secret.value, new_api_secret.value]
    secrets_as_text += [secret.value for secret in refresh_secrets]
    for blob in [*hashes, sealed, private_pem]:
        secrets_as_text += [blob.hex(), base64.b64encode(blob).decode(), repr(blob)]
    async with autocommit(sql_storage.engine).connect() as conn:
        rows = (await conn.execute(sa.select(audit_events))).all()
    for row in rows:
        text = repr(tuple(row))
        assert not [secret for secret in secrets_as_text if secret in text]


async def _issuance_keys(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))
    await storage.keys.add(api_key("k2"), audit=event("key.registered"))
    await storage.keys.revoke("k2", at=NOW, reason="leaked", audit=event("key.revoked"))
    await storage.keys.add(
        api_key("k3", expires_at=NOW + timedelta(seconds=1)), audit=event("key.registered")
    )


_ISSUANCES = [
    ("k1", NOW, True),
    ("k2", NOW, False),  # revoked
    ("k3", NOW, True),
    ("k3", NOW + timedelta(seconds=1), False),  # expired by then
]


async def test_an_issuance_is_recorded_only_while_its_key_is_live(storage: SQLStorage) -> None:
    """The database decides, whatever record of the key the service holds (issue 19)."""
    await _issuance_keys(storage)

    recorded = [
        await storage.audit.record_issuance(event("token.issued", key_id, at=at, detail={"n": 1}))
        for key_id, at, _ in _ISSUANCES
    ]

    assert recorded == [live for _, _, live in _ISSUANCES]
    issued = await storage.audit.list(limit=10, action="token.issued")
    assert [(stored.event.target_id, stored.event.detail) for stored in reversed(issued)] == [
        ("k1", {"n": 1}),
        ("k3", {"n": 1}),
    ]


async def test_concurrent_issuances_are_recorded_as_sequential_ones(storage: SQLStorage) -> None:
    """On PostgreSQL one batched statement, on SQLite one group commit: the same answers."""
    await _issuance_keys(storage)

    recorded = await asyncio.gather(
        *(
            storage.audit.record_issuance(event("token.issued", key_id, at=at, request_id=key_id))
            for key_id, at, _ in _ISSUANCES
        )
    )

    assert recorded == [live for _, _, live in _ISSUANCES]
    issued = await storage.audit.list(limit=10, action="token.issued")
    assert sorted(stored.event.request_id or "" for stored in issued) == ["k1", "k3"]
