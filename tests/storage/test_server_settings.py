"""Server settings: claimed once, then read back unchanged by every instance."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import server_settings

from .factories import NOW, audit_actions, count_rows, event


async def test_the_first_claim_stores_its_value_with_an_audit_row(storage: SQLStorage) -> None:
    stored = await storage.claim_setting(
        "pepper_fingerprint", "first", at=NOW, audit=event("server_setting.claimed")
    )

    assert stored == "first"
    assert await count_rows(storage, server_settings) == 1
    assert await audit_actions(storage) == ["server_setting.claimed"]


async def test_a_later_claim_gets_the_stored_value_and_changes_nothing(
    storage: SQLStorage,
) -> None:
    await storage.claim_setting("s", "first", at=NOW, audit=event("server_setting.claimed"))

    stored = await storage.claim_setting(
        "s", "second", at=NOW + timedelta(days=1), audit=event("server_setting.claimed")
    )

    assert stored == "first"
    assert await count_rows(storage, server_settings) == 1
    assert await audit_actions(storage) == ["server_setting.claimed"]  # no second row


async def test_settings_are_independent_by_name(storage: SQLStorage) -> None:
    a = await storage.claim_setting("a", "1", at=NOW, audit=event("server_setting.claimed"))
    b = await storage.claim_setting("b", "2", at=NOW, audit=event("server_setting.claimed"))

    assert (a, b) == ("1", "2")
    assert await count_rows(storage, server_settings) == 2


async def test_concurrent_claims_from_two_instances_agree_on_one_value(
    database_url: str,
) -> None:
    """Two instances starting together, five claims each with its own value: one wins,
    and every claim returns the winner's value."""
    instances = [SQLStorage(create_engine(database_url)) for _ in range(2)]
    try:
        results = await asyncio.gather(
            *(
                instances[i % 2].claim_setting(
                    "s", f"value-{i}", at=NOW, audit=event("server_setting.claimed")
                )
                for i in range(10)
            )
        )

        assert len(set(results)) == 1
        assert results[0] in {f"value-{i}" for i in range(10)}
        assert (
            await instances[1].claim_setting(
                "s", "late", at=NOW, audit=event("server_setting.claimed")
            )
            == results[0]
        )
        assert await count_rows(instances[0], server_settings) == 1
        assert await audit_actions(instances[0]) == ["server_setting.claimed"]
    finally:
        for instance in instances:
            await instance.close()
