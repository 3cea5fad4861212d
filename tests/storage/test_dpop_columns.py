"""DPoP's stored facts (migration 0005), on SQLite, PostgreSQL and in memory.

A key's ``dpop_required`` and a refresh token's ``dpop_jkt`` (the DPoP key its family is
bound to) round-trip through every read, and a rotation's successor keeps the binding.
"""

from __future__ import annotations

from keyturn.storage.sql import SQLStorage

from .factories import NOW, api_key, event, hash_of, refresh_token

JKT = "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"


async def test_a_keys_dpop_required_round_trips(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1", dpop_required=True), audit=event("key.created", "k1"))
    await storage.keys.add(api_key("k2", key_hash=hash_of("k2")), audit=event("key.created"))

    strict = await storage.keys.get("k1")
    found = await storage.keys.find_by_hash(hash_of("k1"), now=NOW)
    plain = await storage.keys.get("k2")

    assert strict is not None
    assert strict.dpop_required is True
    assert found is not None
    assert found.dpop_required is True
    assert plain is not None
    assert plain.dpop_required is False


async def test_a_bound_refresh_token_and_its_successor_keep_the_dpop_key(
    storage: SQLStorage,
) -> None:
    bound = refresh_token("t1", key_id=None, user_id="u1", subject="user:u1", dpop_jkt=JKT)
    successor = refresh_token(
        "t2", key_id=None, user_id="u1", subject="user:u1", parent_id="t1", dpop_jkt=JKT
    )
    await storage.refresh_tokens.add(bound, audit=event("refresh.issued", "t1"))

    found = await storage.refresh_tokens.find_with_key(hash_of("t1"))
    rotated = await storage.refresh_tokens.rotate(
        "t1", successor, now=NOW, audit=event("refresh.rotated")
    )
    next_found = await storage.refresh_tokens.find_with_key(hash_of("t2"))

    assert found is not None
    assert found[0].dpop_jkt == JKT
    assert rotated
    assert next_found is not None
    assert next_found[0] == successor


async def test_an_unbound_refresh_token_has_no_dpop_key(storage: SQLStorage) -> None:
    await storage.keys.add(api_key("k1"), audit=event("key.created", "k1"))
    await storage.refresh_tokens.add(refresh_token("t1"), audit=event("refresh.issued"))

    found = await storage.refresh_tokens.find_with_key(hash_of("t1"))

    assert found is not None
    assert found[0].dpop_jkt is None
