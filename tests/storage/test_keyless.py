"""Client public keys and the replay guard (issue 17), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from keyturn.core.records import ClientPublicKeyRecord
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import api_keys, client_public_keys, replay_guard

from .factories import NOW, api_key, audit_actions, count_rows, event


def public_key(kid: str, key_id: str = "k1") -> ClientPublicKeyRecord:
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": kid}
    return ClientPublicKeyRecord(key_id=key_id, kid=kid, alg="EdDSA", jwk=jwk, created_at=NOW)


async def test_a_key_and_its_public_keys_are_stored_together(storage: SQLStorage) -> None:
    await storage.client_keys.create_key(
        api_key(), [public_key("a"), public_key("b")], audit=event("key.created")
    )

    assert [k.kid for k in await storage.client_keys.list("k1")] == ["a", "b"]
    assert (await storage.client_keys.list("k1"))[0] == public_key("a")
    assert await audit_actions(storage) == ["key.created"]


async def test_adding_past_the_limit_writes_nothing(storage: SQLStorage) -> None:
    await storage.client_keys.create_key(api_key(), [public_key("a")], audit=event("key.created"))

    kept = await storage.client_keys.add(
        [public_key("a"), public_key("b")], limit=2, audit=event("key.public_keys_added")
    )
    refused = await storage.client_keys.add(
        [public_key("c")], limit=2, audit=event("key.public_keys_added")
    )

    assert kept is not None
    assert [k.kid for k in kept] == ["a", "b"]  # "a" again changes nothing
    assert refused is None
    assert await count_rows(storage, client_public_keys) == 2
    assert await audit_actions(storage) == ["key.created", "key.public_keys_added"]


async def test_removing_a_public_key(storage: SQLStorage) -> None:
    await storage.client_keys.create_key(
        api_key(), [public_key("a"), public_key("b")], audit=event("key.created")
    )

    assert await storage.client_keys.remove("k1", "a", audit=event("key.public_key_removed"))
    assert not await storage.client_keys.remove("k1", "a", audit=event("key.public_key_removed"))
    assert [k.kid for k in await storage.client_keys.list("k1")] == ["b"]
    assert await audit_actions(storage) == ["key.created", "key.public_key_removed"]


async def test_a_client_is_read_with_its_public_keys_in_one_call(storage: SQLStorage) -> None:
    await storage.client_keys.create_key(
        api_key(), [public_key("b"), public_key("a")], audit=event("key.created")
    )
    await storage.client_keys.create_key(
        api_key("k2"), [public_key("c", "k2")], audit=event("key.created")
    )
    await storage.keys.add(api_key("k3"), audit=event("key.created"))

    record, keys = await storage.client_keys.find_client("k1")
    assert record == await storage.keys.get("k1")
    assert keys == [public_key("a"), public_key("b")]  # oldest first, then by kid
    assert await storage.client_keys.find_client("k3") == (await storage.keys.get("k3"), [])
    assert await storage.client_keys.find_client("nope") == (None, [])

    # Exact reads: a revocation and a removal show at once.
    await storage.keys.revoke("k1", at=NOW, reason="gone", audit=event("key.revoked"))
    await storage.client_keys.remove("k1", "a", audit=event("key.public_key_removed"))
    record, keys = await storage.client_keys.find_client("k1")
    assert record is not None
    assert record.revoked_at == NOW
    assert keys == [public_key("b")]


async def test_a_client_is_read_on_the_pooled_path_too(sql_storage: SQLStorage) -> None:
    await sql_storage.client_keys.create_key(
        api_key(), [public_key("a")], audit=event("key.created")
    )
    sql_storage.client_keys._hot = None  # what a Busy hot path falls back to

    record, keys = await sql_storage.client_keys.find_client("k1")

    assert record == await sql_storage.keys.get("k1")
    assert keys == [public_key("a")]
    assert await sql_storage.client_keys.find_client("nope") == (None, [])


async def test_deleting_an_api_key_deletes_its_public_keys(sql_storage: SQLStorage) -> None:
    await sql_storage.client_keys.create_key(
        api_key(), [public_key("a"), public_key("b")], audit=event("key.created")
    )

    async with sql_storage.engine.begin() as conn:
        await conn.execute(api_keys.delete())

    assert await sql_storage.client_keys.list("k1") == []  # ON DELETE CASCADE


async def test_a_replay_id_is_claimed_once_until_it_expires(storage: SQLStorage) -> None:
    until = NOW + timedelta(minutes=5)

    first = await storage.replays.claim("j1", expires_at=until, now=NOW)
    again = await storage.replays.claim("j1", expires_at=until, now=NOW + timedelta(minutes=1))
    other = await storage.replays.claim("j2", expires_at=until, now=NOW)
    after_expiry = await storage.replays.claim(
        "j1", expires_at=until + timedelta(minutes=10), now=until
    )

    assert (first, again, other, after_expiry) == (True, False, True, True)
    assert await storage.replays.delete_expired(before=until + timedelta(seconds=1)) == 1
    assert await count_rows(storage, replay_guard) == 1


async def test_concurrent_claims_of_one_id_let_exactly_one_through(storage: SQLStorage) -> None:
    until = NOW + timedelta(minutes=5)
    results = await asyncio.gather(
        *(storage.replays.claim("same", expires_at=until, now=NOW) for _ in range(8))
    )
    assert sorted(results) == [False] * 7 + [True]
