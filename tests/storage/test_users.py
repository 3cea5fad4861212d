"""The users repository, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from keyturn.errors import ConflictError
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import users

from .factories import NOW, audit_actions, count_rows, event, refresh_token, user


async def test_add_then_get_round_trips_every_field(storage: SQLStorage) -> None:
    record = user(scopes=None, password_changed_at=NOW, failed_logins=2, last_login_at=NOW)

    await storage.users.add(record, audit=event("user.created", "u1"))

    assert await storage.users.get("u1") == record
    assert await audit_actions(storage) == ["user.created"]


async def test_find_by_email_compares_the_case_folded_key(storage: SQLStorage) -> None:
    await storage.users.add(user(email="Alice@Example.com"), audit=event("user.created"))

    found = await storage.users.find_by_email("alice@example.com")

    assert found is not None
    assert found.email == "Alice@Example.com"  # stored as given
    assert await storage.users.find_by_email("bob@example.com") is None


async def test_an_email_differing_only_in_case_is_a_conflict(storage: SQLStorage) -> None:
    await storage.users.add(user("u1", "alice@example.com"), audit=event("user.created"))

    with pytest.raises(ConflictError):
        await storage.users.add(user("u2", "ALICE@example.com"), audit=event("user.created"))

    assert await count_rows(storage, users) == 1
    assert await audit_actions(storage) == ["user.created"]  # the failed add wrote nothing


async def test_list_pages_by_id_and_can_leave_out_disabled(storage: SQLStorage) -> None:
    for n in range(3):
        await storage.users.add(user(f"u{n}", f"user{n}@example.com"), audit=event("user.created"))
    await storage.users.set_disabled(
        "u1", disabled_at=NOW, reason="left", audit=event("user.disabled", "u1")
    )

    assert [u.id for u in await storage.users.list(limit=2)] == ["u0", "u1"]
    assert [u.id for u in await storage.users.list(limit=5, after="u0")] == ["u1", "u2"]
    assert [u.id for u in await storage.users.list(limit=5, include_disabled=False)] == [
        "u0",
        "u2",
    ]


async def test_disabling_revokes_the_users_refresh_tokens(storage: SQLStorage) -> None:
    await storage.users.add(user(), audit=event("user.created"))
    token = refresh_token("t1", key_id=None, user_id="u1", subject="user:u1")
    await storage.refresh_tokens.add(token, audit=event("token.issued"))

    disabled = await storage.users.set_disabled(
        "u1", disabled_at=NOW, reason="left", audit=event("user.disabled", "u1")
    )

    assert disabled is not None
    assert (disabled.disabled_at, disabled.disabled_reason) == (NOW, "left")
    found = await storage.refresh_tokens.find_with_key(token.token_hash)
    assert found is not None
    assert found[0].revoked_at == NOW
    assert found[1] is None  # a user's token has no API key


async def test_disabling_twice_changes_and_audits_nothing(storage: SQLStorage) -> None:
    await storage.users.add(user(), audit=event("user.created"))
    await storage.users.set_disabled(
        "u1", disabled_at=NOW, reason="a", audit=event("user.disabled")
    )

    again = await storage.users.set_disabled(
        "u1", disabled_at=NOW + timedelta(hours=1), reason="b", audit=event("user.disabled")
    )

    assert again is not None
    assert (again.disabled_at, again.disabled_reason) == (NOW, "a")
    assert await audit_actions(storage) == ["user.created", "user.disabled"]


async def test_enable_clears_the_disabled_state(storage: SQLStorage) -> None:
    await storage.users.add(user(disabled_at=NOW, disabled_reason="x"), audit=event("user.created"))

    enabled = await storage.users.set_disabled(
        "u1", disabled_at=None, reason=None, audit=event("user.enabled")
    )

    assert enabled is not None
    assert enabled.is_active
    assert enabled.disabled_reason is None


async def test_unknown_ids_return_none(storage: SQLStorage) -> None:
    assert await storage.users.get("nope") is None
    assert (
        await storage.users.set_disabled("nope", disabled_at=NOW, reason=None, audit=event("x"))
        is None
    )
    assert (
        await storage.users.set_password("nope", password_hash="h", at=NOW, audit=event("x"))
        is None
    )
    assert await audit_actions(storage) == []


async def test_set_password_replaces_the_hash_clears_failures_and_revokes_tokens(
    storage: SQLStorage,
) -> None:
    await storage.users.add(user(failed_logins=3, last_failed_login_at=NOW), audit=event("c"))
    token = refresh_token("t1", key_id=None, user_id="u1", subject="user:u1")
    await storage.refresh_tokens.add(token, audit=event("token.issued"))
    later = NOW + timedelta(minutes=5)

    changed = await storage.users.set_password(
        "u1", password_hash="$argon2id$new", at=later, audit=event("user.password_changed")
    )

    assert changed is not None
    assert (changed.password_hash, changed.password_changed_at) == ("$argon2id$new", later)
    assert (changed.failed_logins, changed.last_failed_login_at) == (0, None)
    found = await storage.refresh_tokens.find_with_key(token.token_hash)
    assert found is not None
    assert found[0].revoked_at == later


async def test_failed_logins_count_up_and_a_login_resets_them(storage: SQLStorage) -> None:
    await storage.users.add(user(), audit=event("user.created"))
    for minutes in (1, 2):
        await storage.users.record_failed_login(
            "u1", at=NOW + timedelta(minutes=minutes), audit=event("user.login_failed")
        )
    counted = await storage.users.get("u1")
    assert counted is not None
    assert (counted.failed_logins, counted.last_failed_login_at) == (2, NOW + timedelta(minutes=2))

    later = NOW + timedelta(minutes=3)
    await storage.users.record_login(
        "u1", at=later, audit=event("user.login"), rehashed_password="$argon2id$rehashed"
    )

    reset = await storage.users.get("u1")
    assert reset is not None
    assert (reset.failed_logins, reset.last_login_at) == (0, later)
    assert reset.password_hash == "$argon2id$rehashed"
    assert await audit_actions(storage) == [
        "user.created",
        "user.login_failed",
        "user.login_failed",
        "user.login",
    ]


async def test_snapshot_lists_users_disabled_even_once_as_subjects(storage: SQLStorage) -> None:
    """Enabling a user again does not revive the tokens issued before they were disabled."""
    await storage.users.add(user("u1", "a@example.com"), audit=event("c"))
    await storage.users.add(user("u2", "b@example.com"), audit=event("c"))
    await storage.users.set_disabled("u1", disabled_at=NOW, reason=None, audit=event("d"))
    await storage.users.set_disabled("u1", disabled_at=None, reason=None, audit=event("e"))

    snapshot = await storage.revocations.snapshot(now=NOW)
    recent = await storage.revocations.snapshot(
        now=NOW + timedelta(hours=1), max_token_lifetime=timedelta(minutes=15)
    )

    assert snapshot.subjects == {"user:u1": int(NOW.timestamp())}
    assert recent.subjects == {}  # every token it could have had has expired
