"""The service's refresh and revocation use cases, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from keyturn.core.secrets import SecretKind, generate_secret
from keyturn.errors import (
    InvalidGrantError,
    PolicyViolation,
    RevokedTokenError,
)
from keyturn.service import KeyturnService
from keyturn.storage.base import Storage
from keyturn.testing import FakeClock

IDENTIFIER = str(uuid.UUID(int=7))


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
