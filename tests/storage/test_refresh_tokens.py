"""Refresh tokens: storage, lookup with the key, the rotation compare-and-set, families."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from keyturn.errors import ConflictError
from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import audit_events, refresh_tokens

from .factories import LATER, NOW, api_key, audit_actions, count_rows, event, hash_of, refresh_token


@pytest.fixture
async def key_k1(storage: SQLStorage) -> None:
    """Key ``k1``, which the default refresh token belongs to."""
    await storage.keys.add(api_key("k1"), audit=event("key.registered", "k1"))


@pytest.mark.usefixtures("key_k1")
async def test_add_then_find_returns_the_token_and_its_key(storage: SQLStorage) -> None:
    token = refresh_token("t1", scope=("read", "write"), rotating=False)

    await storage.refresh_tokens.add(token, audit=event("refresh.issued", "t1"))
    found = await storage.refresh_tokens.find_with_key(hash_of("t1"))

    assert found is not None
    stored, key = found
    assert stored == token
    assert key == await storage.keys.get("k1")
    assert await audit_actions(storage) == ["key.registered", "refresh.issued"]


async def test_a_token_without_a_key_comes_back_alone(storage: SQLStorage) -> None:
    token = refresh_token("t1", key_id=None, user_id="u1", subject="user:u1")

    await storage.refresh_tokens.add(token, audit=event("refresh.issued", "t1"))

    assert await storage.refresh_tokens.find_with_key(hash_of("t1")) == (token, None)


async def test_find_unknown_hash_is_none(storage: SQLStorage) -> None:
    assert await storage.refresh_tokens.find_with_key(hash_of("nope")) is None


@pytest.mark.usefixtures("key_k1")
async def test_add_refuses_a_taken_hash(storage: SQLStorage) -> None:
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))

    with pytest.raises(ConflictError):
        await storage.refresh_tokens.add(
            refresh_token("t2", token_hash=hash_of("t1")), audit=event("refresh.issued")
        )

    assert await count_rows(storage, refresh_tokens) == 1
    assert await audit_actions(storage) == ["key.registered", "refresh.issued"]


@pytest.mark.usefixtures("key_k1")
async def test_add_stores_nothing_for_a_revoked_key(storage: SQLStorage) -> None:
    """Issue 18: once a key's revocation committed, no token of it is stored (issued)."""
    assert await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    await storage.keys.revoke("k1", at=NOW, reason="leaked", audit=event("key.revoked"))

    stored = await storage.refresh_tokens.add(refresh_token("t2"), audit=event("refresh.issued"))
    alone, together = await asyncio.gather(  # PostgreSQL: one batched statement
        storage.refresh_tokens.add(refresh_token("t3"), audit=event("refresh.issued")),
        storage.refresh_tokens.add(
            refresh_token("t4", key_id=None, user_id="u1", subject="user:u1"),
            audit=event("refresh.issued"),
        ),
    )

    assert stored is False
    assert alone is False
    assert together is True  # a user's token in the same batch is stored
    assert await storage.refresh_tokens.find_with_key(hash_of("t2")) is None
    assert await storage.refresh_tokens.find_with_key(hash_of("t3")) is None
    assert await count_rows(storage, refresh_tokens) == 2
    assert await audit_actions(storage) == [
        "key.registered",
        "refresh.issued",
        "key.revoked",
        "refresh.issued",
    ]


async def test_add_for_an_unknown_key_is_a_conflict(storage: SQLStorage) -> None:
    with pytest.raises(ConflictError):
        await storage.refresh_tokens.add(
            refresh_token("t1", key_id="ghost"), audit=event("refresh.issued")
        )

    assert await count_rows(storage, audit_events) == 0


@pytest.mark.usefixtures("key_k1")
async def test_rotate_marks_the_token_used_and_stores_its_successor(storage: SQLStorage) -> None:
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    successor = refresh_token("t2", parent_id="t1", created_at=NOW + timedelta(minutes=1))
    at = NOW + timedelta(minutes=1)

    rotated = await storage.refresh_tokens.rotate(
        "t1", successor, now=at, audit=event("refresh.rotated", "t1", detail={"successor": "t2"})
    )

    assert rotated is True
    old = await storage.refresh_tokens.find_with_key(hash_of("t1"))
    assert old is not None
    assert (old[0].used_at, old[0].replaced_by) == (at, "t2")
    new = await storage.refresh_tokens.find_with_key(hash_of("t2"))
    assert new is not None
    assert new[0] == successor
    latest = (await storage.audit.list(limit=1))[0].event
    assert (latest.action, latest.target_id, latest.detail) == (
        "refresh.rotated",
        "t1",
        {"successor": "t2"},
    )


@pytest.mark.parametrize(
    "state",
    [
        pytest.param({"used_at": NOW}, id="used"),
        pytest.param({"revoked_at": NOW}, id="revoked"),
        pytest.param({"expires_at": NOW + timedelta(minutes=1)}, id="expired"),
    ],
)
@pytest.mark.usefixtures("key_k1")
async def test_rotate_refuses_a_dead_token_and_writes_nothing(
    storage: SQLStorage, state: dict[str, object]
) -> None:
    await storage.refresh_tokens.add(refresh_token("t1", **state), audit=event("refresh.issued"))

    rotated = await storage.refresh_tokens.rotate(
        "t1",
        refresh_token("t2", parent_id="t1"),
        now=NOW + timedelta(minutes=1),
        audit=event("refresh.rotated"),
    )

    assert rotated is False
    assert await storage.refresh_tokens.find_with_key(hash_of("t2")) is None
    assert await audit_actions(storage) == ["key.registered", "refresh.issued"]


async def test_rotate_unknown_token_is_false(storage: SQLStorage) -> None:
    rotated = await storage.refresh_tokens.rotate(
        "nope", refresh_token("t2", key_id=None), now=NOW, audit=event("refresh.rotated")
    )

    assert rotated is False
    assert await count_rows(storage, refresh_tokens) == 0
    assert await count_rows(storage, audit_events) == 0


@pytest.mark.usefixtures("key_k1")
async def test_rotate_to_a_taken_hash_rolls_everything_back(storage: SQLStorage) -> None:
    """A failure after the compare-and-set leaves the token unused (T-REL-05)."""
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    clash = refresh_token("t2", parent_id="t1", token_hash=hash_of("t1"))

    with pytest.raises(ConflictError):
        await storage.refresh_tokens.rotate("t1", clash, now=NOW, audit=event("refresh.rotated"))

    found = await storage.refresh_tokens.find_with_key(hash_of("t1"))
    assert found is not None
    assert (found[0].used_at, found[0].replaced_by) == (None, None)
    assert await count_rows(storage, refresh_tokens) == 1
    assert await audit_actions(storage) == ["key.registered", "refresh.issued"]


async def test_fifty_concurrent_rotations_let_exactly_one_through(database_url: str) -> None:
    """T-RT-03: one token presented 50 times at once, on 50 connections of 5 instances.

    Five storages stand for five server processes: each serialises its own SQLite
    writers, so the database itself must settle the race between them.
    """
    instances = [
        SQLStorage(create_engine(database_url, pool_size=10, max_overflow=0)) for _ in range(5)
    ]
    try:
        await instances[0].keys.add(api_key("k1"), audit=event("key.registered", "k1"))
        await instances[0].refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
        successors = [refresh_token(f"s{i}", parent_id="t1") for i in range(50)]

        results = await asyncio.gather(
            *(
                instances[i % 5].refresh_tokens.rotate(
                    "t1", successor, now=NOW, audit=event("refresh.rotated", "t1")
                )
                for i, successor in enumerate(successors)
            )
        )

        assert results.count(True) == 1
        winner = successors[results.index(True)]
        parent = await instances[0].refresh_tokens.find_with_key(hash_of("t1"))
        assert parent is not None
        assert parent[0].replaced_by == winner.id
        assert await count_rows(instances[0], refresh_tokens) == 2
        assert (await audit_actions(instances[0])).count("refresh.rotated") == 1
    finally:
        for instance in instances:
            await instance.close()


@pytest.mark.usefixtures("key_k1")
async def test_revoke_family_revokes_every_unrevoked_token(storage: SQLStorage) -> None:
    """RFC 9700 §4.14.2: reuse of a rotated token revokes the whole family."""
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    await storage.refresh_tokens.rotate(
        "t1", refresh_token("t2", parent_id="t1"), now=NOW, audit=event("refresh.rotated")
    )
    await storage.refresh_tokens.add(
        refresh_token("other", family_id="f2"), audit=event("refresh.issued")
    )
    at = NOW + timedelta(hours=1)

    live = await storage.refresh_tokens.revoke_family(
        "f1", at=at, audit=event("refresh.reuse_detected", "f1")
    )

    assert live == 1  # t2; t1 was already used
    for token_id in ("t1", "t2"):
        found = await storage.refresh_tokens.find_with_key(hash_of(token_id))
        assert found is not None
        assert found[0].revoked_at == at
    other = await storage.refresh_tokens.find_with_key(hash_of("other"))
    assert other is not None
    assert other[0].revoked_at is None
    assert (await audit_actions(storage)).count("refresh.reuse_detected") == 1


@pytest.mark.usefixtures("key_k1")
async def test_revoke_family_twice_changes_and_audits_nothing(storage: SQLStorage) -> None:
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    await storage.refresh_tokens.revoke_family("f1", at=NOW, audit=event("refresh.revoked"))

    again = await storage.refresh_tokens.revoke_family(
        "f1", at=NOW + timedelta(hours=1), audit=event("refresh.revoked")
    )
    unknown = await storage.refresh_tokens.revoke_family(
        "nope", at=NOW, audit=event("refresh.revoked")
    )

    assert (again, unknown) == (0, 0)
    assert (await audit_actions(storage)).count("refresh.revoked") == 1


@pytest.mark.usefixtures("key_k1")
async def test_delete_expired_deletes_only_tokens_past_their_deadline(storage: SQLStorage) -> None:
    await storage.refresh_tokens.add(
        refresh_token("old", expires_at=NOW), audit=event("refresh.issued")
    )
    await storage.refresh_tokens.add(refresh_token("live"), audit=event("refresh.issued"))

    deleted = await storage.refresh_tokens.delete_expired(before=NOW + timedelta(seconds=1))

    assert deleted == 1
    assert await storage.refresh_tokens.find_with_key(hash_of("old")) is None
    assert await storage.refresh_tokens.find_with_key(hash_of("live")) is not None
    assert await storage.refresh_tokens.delete_expired(before=LATER) == 0


@pytest.mark.usefixtures("key_k1")
async def test_revoke_family_records_its_access_token_entry_in_the_snapshot(
    storage: SQLStorage,
) -> None:
    """RFC 7009 §2.1: the family's entry is stored with it, and written again (extended)
    when the family was revoked before; without ``access_tokens_until`` there is none."""
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))
    await storage.refresh_tokens.add(
        refresh_token("other", family_id="f2"), audit=event("refresh.issued")
    )
    until = NOW + timedelta(minutes=16)

    await storage.refresh_tokens.revoke_family("f2", at=NOW, audit=event("refresh.revoked"))
    await storage.refresh_tokens.revoke_family(
        "f1", at=NOW, audit=event("refresh.revoked"), access_tokens_until=until
    )
    again = await storage.refresh_tokens.revoke_family(
        "f1",
        at=NOW,
        audit=event("refresh.revoked"),
        access_tokens_until=until + timedelta(minutes=1),
    )

    assert again == 0
    snapshot = await storage.revocations.snapshot(now=NOW)
    assert snapshot.tokens == {"family:f1": int((until + timedelta(minutes=1)).timestamp())}
    assert (await storage.revocations.snapshot(now=until + timedelta(minutes=2))).tokens == {}
