"""API keys: every verb of `KeyRepository`, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, timedelta, timezone

import pytest

from keyturn.errors import ConflictError
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import api_keys, audit_events

from .factories import NOW, api_key, audit_actions, count_rows, event, hash_of, refresh_token

LATER_EXPIRY = NOW + timedelta(days=60)


async def test_add_then_get_round_trips_every_field(storage: SQLStorage) -> None:
    key = api_key(
        "k1",
        name="billing",
        roles=("reader", "writer"),
        scopes=("read", "write"),
        extra_claims={"tenant": "t-1", "level": 2},
        metadata={"team": "payments", "tags": ["a", "b"]},
        legacy=True,
        expires_at=NOW + timedelta(days=90),
        last_used_at=NOW,
        previous_hash=hash_of("old"),
        previous_expires_at=NOW + timedelta(hours=1),
    )

    await storage.keys.add(key, audit=event("key.registered", "k1"))

    assert await storage.keys.get("k1") == key
    assert await audit_actions(storage) == ["key.registered"]


async def test_times_come_back_aware_and_in_utc(storage: SQLStorage) -> None:
    """A time given in another zone is stored as the same instant and read back in UTC."""
    paris = timezone(timedelta(hours=1))
    await storage.keys.add(
        api_key("k1", created_at=NOW.astimezone(paris)), audit=event("key.registered")
    )

    stored = await storage.keys.get("k1")

    assert stored is not None
    assert stored.created_at == NOW
    assert stored.created_at.tzinfo is UTC


async def test_no_scopes_is_kept_apart_from_empty_scopes(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1", scopes=None), audit=event("key.registered"))
    await storage.keys.add(api_key("k2", scopes=()), audit=event("key.registered"))

    first, second = await storage.keys.get("k1"), await storage.keys.get("k2")

    assert first is not None
    assert first.scopes is None
    assert second is not None
    assert second.scopes == ()


async def test_get_unknown_key_is_none(storage: SQLStorage) -> None:
    assert await storage.keys.get("nope") is None


@pytest.mark.parametrize(
    "clash",
    [
        pytest.param({"key_hash": hash_of("other")}, id="same-id"),
        pytest.param({"id": "k2"}, id="same-hash"),
    ],
)
async def test_add_refuses_a_taken_id_or_hash(storage: SQLStorage, clash: dict[str, str]) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))

    with pytest.raises(ConflictError):
        await storage.keys.add(api_key("k1", **clash), audit=event("key.registered"))

    assert await count_rows(storage, api_keys) == 1
    assert await count_rows(storage, audit_events) == 1


async def test_find_by_hash_finds_the_current_hash(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))

    found = await storage.keys.find_by_hash(hash_of("k1"), now=NOW)

    assert found is not None
    assert found.id == "k1"
    assert await storage.keys.find_by_hash(hash_of("unknown"), now=NOW) is None


async def test_find_by_hash_returns_revoked_and_expired_keys_too(storage: SQLStorage) -> None:
    """The service decides what an unusable key means; storage only finds it."""
    await storage.keys.add(api_key("k1", expires_at=NOW), audit=event("key.registered"))
    await storage.keys.revoke("k1", at=NOW, reason="test", audit=event("key.revoked"))

    found = await storage.keys.find_by_hash(hash_of("k1"), now=NOW + timedelta(days=1))

    assert found is not None
    assert found.revoked_at == NOW


async def test_rotate_keeps_the_old_secret_working_until_grace_ends(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))
    grace_until = NOW + timedelta(hours=1)

    rotated = await storage.keys.rotate(
        "k1", new_hash=hash_of("k1-new"), grace_until=grace_until, audit=event("key.rotated")
    )

    assert rotated is not None
    assert rotated.key_hash == hash_of("k1-new")
    assert rotated.previous_hash == hash_of("k1")
    assert rotated.previous_expires_at == grace_until
    for presented in (hash_of("k1"), hash_of("k1-new")):
        found = await storage.keys.find_by_hash(presented, now=grace_until - timedelta(seconds=1))
        assert found is not None
        assert found.id == "k1"
    assert await storage.keys.find_by_hash(hash_of("k1"), now=grace_until) is None
    assert await storage.keys.find_by_hash(hash_of("k1-new"), now=grace_until) is not None
    assert await audit_actions(storage) == ["key.registered", "key.rotated"]


@pytest.mark.parametrize(
    "state",
    [
        pytest.param({"revoked_at": NOW - timedelta(days=1)}, id="revoked"),
        pytest.param({"expires_at": NOW}, id="expired"),
    ],
)
async def test_rotate_refuses_an_unusable_key(
    storage: SQLStorage, state: dict[str, object]
) -> None:
    await storage.keys.add(api_key("k1", **state), audit=event("key.registered"))

    rotated = await storage.keys.rotate(
        "k1", new_hash=hash_of("new"), grace_until=NOW, audit=event("key.rotated", at=NOW)
    )

    assert rotated is None
    stored = await storage.keys.get("k1")
    assert stored is not None
    assert stored.key_hash == hash_of("k1")
    assert await audit_actions(storage) == ["key.registered"]


async def test_rotate_unknown_key_is_none(storage: SQLStorage) -> None:
    rotated = await storage.keys.rotate(
        "nope", new_hash=hash_of("new"), grace_until=NOW, audit=event("key.rotated")
    )

    assert rotated is None
    assert await count_rows(storage, audit_events) == 0


async def test_rotate_to_a_hash_in_use_is_a_conflict(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))
    await storage.keys.add(api_key("k2"), audit=event("key.registered"))

    with pytest.raises(ConflictError):
        await storage.keys.rotate(
            "k1", new_hash=hash_of("k2"), grace_until=NOW, audit=event("key.rotated")
        )

    assert await audit_actions(storage) == ["key.registered", "key.registered"]


async def test_revoke_revokes_the_key_and_its_refresh_tokens(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))
    await storage.keys.add(api_key("k2"), audit=event("key.registered"))
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    await storage.refresh_tokens.add(
        refresh_token("t2", family_id="f2", key_id="k2", subject="key:k2"),
        audit=event("refresh.issued"),
    )
    at = NOW + timedelta(minutes=5)

    revoked = await storage.keys.revoke("k1", at=at, reason="leaked", audit=event("key.revoked"))

    assert revoked is not None
    assert (revoked.revoked_at, revoked.revoked_reason) == (at, "leaked")
    found = await storage.refresh_tokens.find_with_key(hash_of("t1"))
    assert found is not None
    assert found[0].revoked_at == at
    other = await storage.refresh_tokens.find_with_key(hash_of("t2"))
    assert other is not None
    assert other[0].revoked_at is None
    assert (await audit_actions(storage)).count("key.revoked") == 1


async def test_revoking_twice_changes_nothing_and_audits_once(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))
    first = await storage.keys.revoke("k1", at=NOW, reason="first", audit=event("key.revoked"))

    again = await storage.keys.revoke(
        "k1", at=NOW + timedelta(days=1), reason="second", audit=event("key.revoked")
    )

    assert again == first
    assert await audit_actions(storage) == ["key.registered", "key.revoked"]


async def test_revoke_unknown_key_is_none(storage: SQLStorage) -> None:
    assert await storage.keys.revoke("nope", at=NOW, reason="x", audit=event("key.revoked")) is None
    assert await count_rows(storage, audit_events) == 0


async def test_set_expiry_moves_the_deadline(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))

    updated = await storage.keys.set_expiry("k1", expires_at=NOW, audit=event("key.expired"))

    assert updated is not None
    assert updated.expires_at == NOW
    assert not updated.is_usable(NOW)
    assert await storage.keys.set_expiry("nope", expires_at=NOW, audit=event("x")) is None
    assert await audit_actions(storage) == ["key.registered", "key.expired"]


async def test_mark_used_records_the_latest_use_only(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))

    await storage.keys.mark_used("k1", at=NOW + timedelta(minutes=2))
    await storage.keys.mark_used("k1", at=NOW + timedelta(minutes=1))
    await storage.keys.mark_used("nope", at=NOW)

    stored = await storage.keys.get("k1")
    assert stored is not None
    assert stored.last_used_at == NOW + timedelta(minutes=2)
    assert await audit_actions(storage) == ["key.registered"]


async def test_list_pages_by_id(storage: SQLStorage) -> None:
    for key_id in ("k3", "k1", "k5", "k2", "k4"):
        await storage.keys.add(api_key(key_id), audit=event("key.registered"))

    first = await storage.keys.list(limit=2)
    second = await storage.keys.list(limit=2, after=first[-1].id)
    last = await storage.keys.list(limit=2, after=second[-1].id)

    assert [key.id for key in first + second + last] == ["k1", "k2", "k3", "k4", "k5"]
    assert await storage.keys.list(limit=2, after="k5") == []


async def test_list_filters_by_identifier_and_revocation(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1", identifier="a"), audit=event("key.registered"))
    await storage.keys.add(api_key("k2", identifier="b"), audit=event("key.registered"))
    await storage.keys.add(api_key("k3", identifier="a"), audit=event("key.registered"))
    await storage.keys.revoke("k3", at=NOW, reason="x", audit=event("key.revoked"))

    by_identifier = await storage.keys.list(limit=10, identifier="a")
    live = await storage.keys.list(limit=10, include_revoked=False)

    assert [key.id for key in by_identifier] == ["k1", "k3"]
    assert [key.id for key in live] == ["k1", "k2"]


async def test_register_legacy_stores_a_new_key(storage: SQLStorage) -> None:
    key = api_key("k1", legacy=True, expires_at=NOW + timedelta(days=1))

    stored = await storage.keys.register_legacy(key, audit=event("key.registered", "k1"))

    assert stored == key
    assert await storage.keys.get("k1") == key
    assert await audit_actions(storage) == ["key.registered"]


async def test_register_legacy_again_renews_the_stored_key(storage: SQLStorage) -> None:
    """Same secret, same identifier: the expiry moves, the stored id stays."""
    await storage.keys.register_legacy(
        api_key("k1", legacy=True, expires_at=NOW + timedelta(days=1)),
        audit=event("key.registered", "k1"),
    )
    renewal = api_key("k-new", key_hash=hash_of("k1"), legacy=True, expires_at=LATER_EXPIRY)

    stored = await storage.keys.register_legacy(renewal, audit=event("key.registered", "k-new"))

    assert stored.id == "k1"
    assert stored.expires_at == LATER_EXPIRY
    assert await count_rows(storage, api_keys) == 1
    events = await storage.audit.list(limit=10)
    assert [stored_event.event.target_id for stored_event in events] == ["k1", "k1"]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param({"identifier": "a"}, {"identifier": "b"}, id="other-identifier"),
        pytest.param({"identifier": None}, {"identifier": "b"}, id="unbound-to-bound"),
        pytest.param({"identifier": "a"}, {"identifier": None}, id="bound-to-unbound"),
    ],
)
async def test_register_legacy_never_rebinds_a_key(
    storage: SQLStorage, first: dict[str, str | None], second: dict[str, str | None]
) -> None:
    """T-AZ-07: the same secret under another identifier is refused, not rebound."""
    await storage.keys.register_legacy(
        api_key("k1", legacy=True, **first), audit=event("key.registered")
    )

    with pytest.raises(ConflictError):
        await storage.keys.register_legacy(
            api_key("k2", key_hash=hash_of("k1"), legacy=True, expires_at=LATER_EXPIRY, **second),
            audit=event("key.registered"),
        )

    stored = await storage.keys.get("k1")
    assert stored is not None
    assert stored.identifier == first["identifier"]
    assert stored.expires_at is None
    assert await count_rows(storage, audit_events) == 1


async def test_register_legacy_never_revives_a_revoked_key(storage: SQLStorage) -> None:
    await storage.keys.register_legacy(api_key("k1", legacy=True), audit=event("key.registered"))
    await storage.keys.revoke("k1", at=NOW, reason="x", audit=event("key.revoked"))

    with pytest.raises(ConflictError):
        await storage.keys.register_legacy(
            api_key("k2", key_hash=hash_of("k1"), legacy=True), audit=event("key.registered")
        )

    assert await audit_actions(storage) == ["key.registered", "key.revoked"]


async def test_register_legacy_with_a_taken_id_is_a_conflict(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.registered"))

    with pytest.raises(ConflictError):
        await storage.keys.register_legacy(
            api_key("k1", key_hash=hash_of("other"), legacy=True), audit=event("key.registered")
        )
