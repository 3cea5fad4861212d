"""The service's key and token use cases, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
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


async def test_revoked_key_cannot_authenticate_or_refresh(service: KeyturnService) -> None:
    created = await service.create_key()
    pair = await service.authenticate(created.secret)
    legacy = await service.authenticate(created.secret, rotating=False)
    assert pair.refresh_token is not None
    assert legacy.refresh_token is not None

    await service.revoke_key(created.record.id, reason="leaked")

    with pytest.raises(InvalidGrantError):
        await service.authenticate(created.secret)
    with pytest.raises(InvalidGrantError):
        await service.refresh(pair.refresh_token)
    with pytest.raises(InvalidGrantError):
        await service.refresh(legacy.refresh_token)
    with pytest.raises(RevokedTokenError):
        service.validate(pair.access.token)


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


async def test_legacy_refresh_token_is_reusable(service: KeyturnService) -> None:
    """T-RT-04: JWThenticator clients reuse their first refresh token."""
    await service.register_key("legacy-key-6", IDENTIFIER)
    pair = await service.authenticate("legacy-key-6", identifier=IDENTIFIER, rotating=False)
    assert pair.refresh_token is not None

    jtis = set()
    for _ in range(20):
        again = await service.refresh(pair.refresh_token, identifier=IDENTIFIER)
        assert again.refresh_token is None
        jtis.add(again.access.jti)

    assert len(jtis) == 20
    with pytest.raises(InvalidGrantError):
        await service.refresh(pair.refresh_token, identifier=str(uuid.UUID(int=3)))


async def test_legacy_refresh_token_expires(service: KeyturnService, clock: FakeClock) -> None:
    created = await service.create_key()
    pair = await service.authenticate(created.secret, rotating=False)
    assert pair.refresh_token is not None
    clock.advance(days=61)

    with pytest.raises(InvalidGrantError):
        await service.refresh(pair.refresh_token)


async def test_rotating_refresh_returns_a_successor(service: KeyturnService) -> None:
    created = await service.create_key()
    pair = await service.authenticate(created.secret)
    assert pair.refresh_token is not None

    second = await service.refresh(pair.refresh_token)

    assert second.refresh_token is not None
    assert second.refresh_token != pair.refresh_token
    assert second.refresh_expires_at == pair.refresh_expires_at  # absolute family deadline
    third = await service.refresh(second.refresh_token)
    assert third.refresh_token is not None


async def test_reuse_after_grace_revokes_the_family(
    service: KeyturnService, clock: FakeClock, storage: Storage
) -> None:
    """T-RT-01 / RFC 9700 §4.14.2."""
    created = await service.create_key()
    first = (await service.authenticate(created.secret)).refresh_token
    assert first is not None
    second = (await service.refresh(first)).refresh_token
    assert second is not None
    clock.advance(service.config.refresh_reuse_grace.total_seconds() + 1)

    with pytest.raises(InvalidGrantError):
        await service.refresh(first)

    with pytest.raises(InvalidGrantError):
        await service.refresh(second)
    events = await storage.audit.list(limit=10, action="refresh.reuse_detected")
    assert len(events) == 1
    assert events[0].event.outcome == "failure"


async def test_replay_within_grace_is_refused_but_family_survives(
    service: KeyturnService, clock: FakeClock
) -> None:
    created = await service.create_key()
    first = (await service.authenticate(created.secret)).refresh_token
    assert first is not None
    second = (await service.refresh(first)).refresh_token
    assert second is not None
    clock.advance(1)

    with pytest.raises(InvalidGrantError):
        await service.refresh(first)

    assert (await service.refresh(second)).refresh_token is not None


async def test_concurrent_rotations_have_exactly_one_winner(
    service: KeyturnService, clock: FakeClock
) -> None:
    """50 concurrent refreshes of one token: one success; a later replay kills the family."""
    created = await service.create_key()
    token = (await service.authenticate(created.secret)).refresh_token
    assert token is not None

    results = await asyncio.gather(
        *(service.refresh(token) for _ in range(50)), return_exceptions=True
    )

    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(r, InvalidGrantError) for r in losers)
    successor = winners[0].refresh_token
    assert successor is not None
    clock.advance(service.config.refresh_reuse_grace.total_seconds() + 1)
    with pytest.raises(InvalidGrantError):
        await service.refresh(token)
    with pytest.raises(InvalidGrantError):
        await service.refresh(successor)


async def test_refresh_cannot_widen_scope(service: KeyturnService) -> None:
    """T-RT-05: narrowing is fine, widening is invalid_scope."""
    created = await service.create_key(scopes=["read", "write"])
    pair = await service.authenticate(created.secret, scopes=["read"])
    assert pair.refresh_token is not None

    with pytest.raises(PolicyViolation) as exc_info:
        await service.refresh(pair.refresh_token, scopes=["write"])

    assert exc_info.value.error_code == "invalid_scope"


async def test_access_token_is_not_a_refresh_token(service: KeyturnService) -> None:
    """T-TYP-03: an access JWT presented as a refresh token is refused."""
    created = await service.create_key()
    pair = await service.authenticate(created.secret)

    with pytest.raises(InvalidGrantError):
        await service.refresh(pair.access.token)


async def test_rfc7009_revocation(service: KeyturnService) -> None:
    created = await service.create_key()
    pair = await service.authenticate(created.secret)
    assert pair.refresh_token is not None

    assert await service.revoke_token("not-a-token") is False
    assert await service.revoke_token(generate_secret(SecretKind.REFRESH_TOKEN).value) is False
    assert await service.revoke_token(pair.access.token) is True
    assert await service.revoke_token(pair.refresh_token) is True

    with pytest.raises(RevokedTokenError):
        service.validate(pair.access.token)
    with pytest.raises(InvalidGrantError):
        await service.refresh(pair.refresh_token)


async def test_every_state_change_is_audited_without_secrets(
    service: KeyturnService, storage: Storage
) -> None:
    created = await service.create_key(name="audited")
    await service.register_key("legacy-secret-value", IDENTIFIER)
    pair = await service.authenticate(created.secret)
    assert pair.refresh_token is not None
    second = await service.refresh(pair.refresh_token)
    rotated = await service.rotate_key(created.record.id)
    await service.revoke_key(created.record.id, reason="done")

    events = await storage.audit.list(limit=100)

    actions = [e.event.action for e in reversed(events)]
    assert actions == [
        "server_setting.claimed",
        "signing_key.created",
        "key.created",
        "key.registered",
        "token.issued",
        "token.refreshed",
        "key.rotated",
        "key.revoked",
    ]
    text = repr([e.event for e in events])
    secrets = [
        created.secret,
        rotated.secret,
        "legacy-secret-value",
        pair.refresh_token,
        second.refresh_token,
        pair.access.token,
        second.access.token,
    ]
    for secret in secrets:
        assert secret is not None
        assert secret not in text
        assert secret.rsplit(".", 1)[-1] not in text


async def test_two_instances_on_an_empty_database_make_one_signing_key(
    storage: Storage, clock: FakeClock
) -> None:
    """T-ROT-05."""
    from tests.service.conftest import make_service

    first, second = make_service(storage, clock), make_service(storage, clock)

    await asyncio.gather(first.start(), second.start())

    records = await storage.signing_keys.list()
    assert len(records) == 1
    assert first.key_set.kids == second.key_set.kids == {records[0].kid}


async def test_restart_keeps_the_signing_key(storage: Storage, clock: FakeClock) -> None:
    """T-KEY-04: tokens issued before a restart still validate after it."""
    from tests.service.conftest import make_service

    before = make_service(storage, clock)
    await before.start()
    created = await before.create_key()
    token = (await before.authenticate(created.secret)).access.token

    after = make_service(storage, clock)
    await after.start()

    assert after.jwks() == before.jwks()
    assert after.validate(token).client_id == created.record.id


async def test_signing_key_rotation_publishes_before_signing(
    service: KeyturnService, clock: FakeClock
) -> None:
    """T-ROT-01/03: pending is published first, old keys stay until their tokens expire."""
    old_kid = next(iter(service.key_set.kids))
    created = await service.create_key()
    old_token = (await service.authenticate(created.secret)).access.token

    new_kid = await service.rotate_signing_key()

    assert service.key_set.kids == {old_kid, new_kid}
    assert (await service.authenticate(created.secret)).access.kid == old_kid
    assert await service.activate_due_signing_keys() == []

    clock.advance(service.config.signing_key_publish_delay.total_seconds())
    assert await service.activate_due_signing_keys() == [new_kid]

    assert (await service.authenticate(created.secret)).access.kid == new_kid
    assert service.validate(old_token).kid == old_kid
    clock.advance(service.config.access_lifetime_seconds + service.config.leeway + 1)
    await service.maintain()
    assert service.key_set.kids == {new_kid}
