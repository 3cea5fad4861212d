"""The service's API-key use cases (`keyturn.service.keys`), on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from keyturn.core.secrets import SecretKind, generate_secret
from keyturn.errors import (
    ConflictError,
    InvalidGrantError,
    NotFoundError,
    PolicyViolation,
    RevokedTokenError,
)
from keyturn.service import KeyturnService
from keyturn.storage.base import Storage
from keyturn.testing import FakeClock

IDENTIFIER = str(uuid.UUID(int=7))


async def test_generated_key_authenticates_to_a_verifiable_token(service: KeyturnService) -> None:
    created = await service.create_key(name="ci")

    pair = await service.authenticate(created.secret)

    token = service.validate(pair.access.token)
    assert token.subject == f"key:{created.record.id}"
    assert token.client_id == created.record.id
    assert token.claims["iss"] == "https://kt.test"
    assert pair.refresh_token is not None
    assert pair.refresh_token.startswith("ktr_")


async def test_the_secret_is_stored_only_as_a_hash(
    service: KeyturnService, storage: Storage
) -> None:
    created = await service.create_key()

    stored = await storage.keys.get(created.record.id)

    assert stored is not None
    assert created.secret.encode() not in stored.key_hash
    assert len(stored.key_hash) == 32


@pytest.mark.parametrize(
    "presented",
    [
        pytest.param(lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"), id="checksum-broken"),
        pytest.param(lambda s: generate_secret(SecretKind.API_KEY).value, id="unknown-key"),
        pytest.param(lambda s: "some-legacy-key-never-registered", id="unknown-legacy"),
        pytest.param(lambda s: "", id="empty"),
    ],
)
async def test_bad_keys_fail_with_one_uniform_error(service: KeyturnService, presented) -> None:
    created = await service.create_key()

    with pytest.raises(InvalidGrantError) as exc_info:
        await service.authenticate(presented(created.secret))

    assert exc_info.value.message == "the API key is not valid"
    assert exc_info.value.error_code == "invalid_grant"


async def test_malformed_generated_key_is_refused_before_storage(
    service: KeyturnService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A key with a broken checksum never costs a database round trip."""
    calls: list[bytes] = []

    async def spy(key_hash: bytes, *, now: object) -> None:
        calls.append(key_hash)

    monkeypatch.setattr(service.storage.keys, "find_by_hash", spy)
    secret = generate_secret(SecretKind.API_KEY).value

    with pytest.raises(InvalidGrantError):
        await service.authenticate(secret[:-2] + "zz")

    assert calls == []


async def test_legacy_key_needs_its_registered_identifier(service: KeyturnService) -> None:
    await service.register_key("legacy-key-1", IDENTIFIER)

    pair = await service.authenticate("legacy-key-1", identifier=IDENTIFIER, rotating=False)

    assert service.validate(pair.access.token).identifier == IDENTIFIER
    with pytest.raises(InvalidGrantError, match="the API key is not valid"):
        await service.authenticate("legacy-key-1", identifier=str(uuid.UUID(int=8)))


async def test_re_registering_renews_expiry(service: KeyturnService, clock: FakeClock) -> None:
    first = await service.register_key("legacy-key-2", IDENTIFIER)
    clock.advance(days=10)

    second = await service.register_key("legacy-key-2", IDENTIFIER)

    assert second.id == first.id
    assert first.expires_at is not None
    assert second.expires_at == first.expires_at + timedelta(days=10)


async def test_re_registering_to_another_identifier_conflicts(service: KeyturnService) -> None:
    """T-AZ-07: never silently rebind a key to another owner."""
    await service.register_key("legacy-key-3", IDENTIFIER)

    with pytest.raises(ConflictError):
        await service.register_key("legacy-key-3", str(uuid.UUID(int=9)))


async def test_is_key_registered(service: KeyturnService) -> None:
    await service.register_key("legacy-key-4", IDENTIFIER)

    assert await service.is_key_registered("legacy-key-4") is True
    assert await service.is_key_registered("legacy-key-5") is False
    assert await service.is_key_registered("kt_malformed") is False


async def test_revocation_reaches_another_instance_on_reload(
    service: KeyturnService, storage: Storage, clock: FakeClock
) -> None:
    from tests.service.conftest import make_service

    other = make_service(storage, clock)
    await other.start()
    created = await service.create_key()
    token = (await service.authenticate(created.secret)).access.token
    assert other.validate(token).subject == f"key:{created.record.id}"

    await service.revoke_key(created.record.id)
    await other.reload_revocations()

    with pytest.raises(RevokedTokenError):
        other.validate(token)


async def test_rotated_key_keeps_old_secret_until_grace(
    service: KeyturnService, clock: FakeClock
) -> None:
    created = await service.create_key()

    rotated = await service.rotate_key(created.record.id, grace=timedelta(hours=1))

    assert rotated.record.id == created.record.id
    assert rotated.secret != created.secret
    await service.authenticate(created.secret)
    await service.authenticate(rotated.secret)
    clock.advance(hours=1, seconds=1)
    with pytest.raises(InvalidGrantError):
        await service.authenticate(created.secret)
    await service.authenticate(rotated.secret)


async def test_expired_key_stops_working(service: KeyturnService, clock: FakeClock) -> None:
    created = await service.create_key()

    await service.expire_key(created.record.id)
    clock.advance(1)

    with pytest.raises(InvalidGrantError):
        await service.authenticate(created.secret)


@pytest.mark.parametrize("operation", ["revoke_key", "rotate_key", "expire_key", "get_key"])
async def test_unknown_key_ids_are_not_found(service: KeyturnService, operation: str) -> None:
    with pytest.raises(NotFoundError):
        await getattr(service, operation)("0000000000000000")


async def test_list_keys_pages_through_everything(service: KeyturnService) -> None:
    ids = {(await service.create_key(identifier="owner")).record.id for _ in range(5)}
    await service.create_key(identifier="someone-else")

    first = await service.list_keys(limit=2, identifier="owner")
    second = await service.list_keys(limit=2, identifier="owner", after=first.next_after)
    third = await service.list_keys(limit=2, identifier="owner", after=second.next_after)

    seen = [k.id for page in (first, second, third) for k in page.keys]
    assert set(seen) == ids
    assert len(seen) == 5
    assert third.next_after is None


async def test_requested_scope_must_be_granted_to_the_key(service: KeyturnService) -> None:
    """T-AZ-01: a scope beyond the key is refused, never issued."""
    created = await service.create_key(scopes=["read", "write"])

    pair = await service.authenticate(created.secret, scopes=["read"])

    assert pair.scopes == frozenset({"read"})
    assert service.validate(pair.access.token).scopes == frozenset({"read"})
    with pytest.raises(PolicyViolation) as exc_info:
        await service.authenticate(created.secret, scopes=["admin"])
    assert exc_info.value.error_code == "invalid_scope"
