"""Signing keys: storage, the one-active-key rule, activation and clean-up."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from keyturn.core.records import SigningKeyState
from keyturn.errors import ConflictError
from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import signing_keys

from .factories import NOW, audit_actions, count_rows, event, signing_key

ACTIVE, PENDING, RETIRED = SigningKeyState.ACTIVE, SigningKeyState.PENDING, SigningKeyState.RETIRED


async def test_add_then_list_round_trips_oldest_first(storage: SQLStorage) -> None:
    newer = signing_key("b", created_at=NOW + timedelta(minutes=1))
    older = signing_key("a-old", ACTIVE)
    retired = signing_key(
        "c",
        RETIRED,
        retired_at=NOW,
        publish_until=NOW + timedelta(days=1),
        created_at=NOW - timedelta(days=1),
    )

    for key in (newer, older, retired):
        assert await storage.signing_keys.add(key, audit=event("signing_key.created", key.kid))

    assert await storage.signing_keys.list() == [retired, older, newer]
    assert await audit_actions(storage) == ["signing_key.created"] * 3


async def test_a_second_active_key_is_refused_without_a_trace(storage: SQLStorage) -> None:
    await storage.signing_keys.add(signing_key("a", ACTIVE), audit=event("signing_key.created"))

    added = await storage.signing_keys.add(
        signing_key("b", ACTIVE), audit=event("signing_key.created")
    )

    assert added is False
    assert [key.kid for key in await storage.signing_keys.list()] == ["a"]
    assert await audit_actions(storage) == ["signing_key.created"]


async def test_pending_keys_may_be_many(storage: SQLStorage) -> None:
    await storage.signing_keys.add(signing_key("a", ACTIVE), audit=event("signing_key.created"))

    for kid in ("b", "c"):
        assert await storage.signing_keys.add(signing_key(kid), audit=event("signing_key.created"))

    assert await count_rows(storage, signing_keys) == 3


async def test_a_taken_kid_is_a_conflict(storage: SQLStorage) -> None:
    await storage.signing_keys.add(signing_key("a"), audit=event("signing_key.created"))

    with pytest.raises(ConflictError):
        await storage.signing_keys.add(signing_key("a"), audit=event("signing_key.created"))


async def test_instances_racing_on_an_empty_database_create_one_active_key(
    database_url: str,
) -> None:
    """T-ROT-05 / T-REL-08: two instances, five tries each, one active key."""
    instances = [SQLStorage(create_engine(database_url)) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(
                instances[i % 2].signing_keys.add(
                    signing_key(f"kid{i}", ACTIVE), audit=event("signing_key.created")
                )
                for i in range(10)
            )
        )

        assert results.count(True) == 1
        stored = await instances[0].signing_keys.list()
        assert [key.kid for key in stored] == [f"kid{results.index(True)}"]
        assert await audit_actions(instances[0]) == ["signing_key.created"]
    finally:
        for instance in instances:
            await instance.close()


async def test_activate_swaps_the_active_key_atomically(storage: SQLStorage) -> None:
    await storage.signing_keys.add(signing_key("old", ACTIVE), audit=event("signing_key.created"))
    await storage.signing_keys.add(signing_key("new"), audit=event("signing_key.created"))
    at, publish_until = NOW + timedelta(days=1), NOW + timedelta(days=2)

    activated = await storage.signing_keys.activate(
        "new", at=at, retired_publish_until=publish_until, audit=event("signing_key.activated")
    )

    assert activated is True
    keys = {key.kid: key for key in await storage.signing_keys.list()}
    assert (keys["new"].state, keys["new"].activated_at) == (ACTIVE, at)
    assert (keys["old"].state, keys["old"].retired_at, keys["old"].publish_until) == (
        RETIRED,
        at,
        publish_until,
    )
    assert (await audit_actions(storage))[-1] == "signing_key.activated"


async def test_activate_works_with_no_active_key(storage: SQLStorage) -> None:
    await storage.signing_keys.add(signing_key("new"), audit=event("signing_key.created"))

    assert await storage.signing_keys.activate(
        "new", at=NOW, retired_publish_until=NOW, audit=event("signing_key.activated")
    )
    assert [key.state for key in await storage.signing_keys.list()] == [ACTIVE]


@pytest.mark.parametrize("kid", ["active", "retired", "unknown"])
async def test_activate_only_a_pending_key(storage: SQLStorage, kid: str) -> None:
    await storage.signing_keys.add(signing_key("active", ACTIVE), audit=event("created"))
    await storage.signing_keys.add(
        signing_key("retired", RETIRED, publish_until=NOW), audit=event("created")
    )
    before = await storage.signing_keys.list()

    activated = await storage.signing_keys.activate(
        kid, at=NOW, retired_publish_until=NOW, audit=event("signing_key.activated")
    )

    assert activated is False
    assert await storage.signing_keys.list() == before
    assert await audit_actions(storage) == ["created", "created"]


async def test_concurrent_activations_leave_one_active_key(database_url: str) -> None:
    instances = [SQLStorage(create_engine(database_url)) for _ in range(2)]
    try:
        first = instances[0].signing_keys
        await first.add(signing_key("old", ACTIVE), audit=event("created"))
        for kid in ("p1", "p2", "p3", "p4"):
            await first.add(signing_key(kid), audit=event("created"))

        await asyncio.gather(
            *(
                instances[i % 2].signing_keys.activate(
                    kid, at=NOW, retired_publish_until=NOW, audit=event("activated")
                )
                for i, kid in enumerate(("p1", "p2", "p3", "p4"))
            )
        )

        states = [key.state for key in await first.list()]
        assert states.count(ACTIVE) == 1
        assert states.count(RETIRED) == 4
    finally:
        for instance in instances:
            await instance.close()


async def test_delete_unpublished_removes_only_retired_keys_past_their_window(
    storage: SQLStorage,
) -> None:
    for key in (
        signing_key("gone", RETIRED, publish_until=NOW - timedelta(seconds=1)),
        signing_key("still-published", RETIRED, publish_until=NOW + timedelta(seconds=1)),
        signing_key("active", ACTIVE),
        signing_key("pending"),
    ):
        await storage.signing_keys.add(key, audit=event("created"))

    deleted = await storage.signing_keys.delete_unpublished(now=NOW)

    assert deleted == 1
    kids = {key.kid for key in await storage.signing_keys.list()}
    assert kids == {"still-published", "active", "pending"}
