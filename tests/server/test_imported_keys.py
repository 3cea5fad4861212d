"""Keys imported from JWThenticator (SHA-512 hash) at the HTTP routes, fast path included."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import httpx
import pytest

from keyturn.core.records import ApiKeyRecord, AuditEvent
from keyturn.server import KeyturnState
from tests.server.conftest import IDENTIFIER, LEGACY_KEY, START, legacy_tokens, v1_tokens


async def _import(state: KeyturnState, key: str = LEGACY_KEY) -> None:
    record = ApiKeyRecord(
        id="jwt1",
        key_hash=hashlib.sha512(key.encode()).digest(),
        created_at=START,
        identifier=IDENTIFIER,
        legacy=True,
        expires_at=START + timedelta(days=2),
    )
    await state.storage.keys.add(record, audit=AuditEvent(at=START, action="key.imported"))


@pytest.mark.parametrize("route", ["/authenticate", "/v1/token"])
async def test_an_imported_key_authenticates_once_then_carries_the_pepper(
    state: KeyturnState, public: httpx.AsyncClient, route: str
) -> None:
    await _import(state)

    if route == "/authenticate":
        await legacy_tokens(public)
    else:
        await v1_tokens(public, LEGACY_KEY, identifier=IDENTIFIER)

    stored = await state.service.get_key("jwt1")
    assert not stored.legacy_hash
    await legacy_tokens(public)  # and keeps working under its new hash


async def test_a_wrong_key_gets_the_uniform_401(
    state: KeyturnState, public: httpx.AsyncClient
) -> None:
    await _import(state)

    response = await public.post(
        "/authenticate", json={"key": LEGACY_KEY + "x", "identifier": IDENTIFIER}
    )

    assert (response.status_code, response.json()) == (401, {})
    assert (await state.service.get_key("jwt1")).legacy_hash
