"""Keys and refresh tokens imported from JWThenticator, as the service sees them."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from datetime import timedelta

import pytest
from tests.service.conftest import PEPPER, START

from keyturn.core.records import ApiKeyRecord, AuditEvent, RefreshTokenRecord
from keyturn.core.secrets import SecretKind, legacy_key_hash
from keyturn.errors import InvalidGrantError, RevokedTokenError, UnauthorizedClientError
from keyturn.service import KeyturnService
from keyturn.storage.base import Storage
from keyturn.testing import FakeClock

IDENTIFIER = str(uuid.UUID(int=7))
KEY = "a-device-key-chosen-by-its-owner"


async def _import_key(storage: Storage, key: str = KEY) -> ApiKeyRecord:
    record = ApiKeyRecord(
        id="jwt1",
        key_hash=hashlib.sha512(key.encode()).digest(),
        created_at=START - timedelta(days=1),
        identifier=IDENTIFIER,
        legacy=True,
        expires_at=START + timedelta(days=1),
    )
    await storage.keys.add(record, audit=AuditEvent(at=START, action="key.imported"))
    return record


async def test_a_legacy_hash_authenticates_and_is_upgraded_on_first_use(
    service: KeyturnService, storage: Storage
) -> None:
    await _import_key(storage)
    assert (await service.get_key("jwt1")).legacy_hash

    pair = await service.authenticate(KEY, identifier=IDENTIFIER, rotating=False)

    stored = await service.get_key("jwt1")
    assert not stored.legacy_hash
    assert stored.key_hash == PEPPER.hash(KEY, SecretKind.API_KEY)
    assert await storage.keys.find_by_hash(legacy_key_hash(KEY), now=START) is None
    assert service.validate(pair.access.token).identifier == IDENTIFIER
    again = await service.authenticate(KEY, identifier=IDENTIFIER, rotating=False)
    assert again.access.token != pair.access.token
    actions = [stored.event.action for stored in await storage.audit.list(limit=50)]
    assert actions.count("key.hash_upgraded") == 1


async def test_a_wrong_key_or_identifier_is_refused_and_upgrades_nothing(
    service: KeyturnService, storage: Storage
) -> None:
    await _import_key(storage)

    with pytest.raises(InvalidGrantError):
        await service.authenticate(KEY + "x", identifier=IDENTIFIER)
    with pytest.raises(InvalidGrantError):
        await service.authenticate(KEY, identifier=str(uuid.UUID(int=8)))

    assert (await service.get_key("jwt1")).key_hash != legacy_key_hash(KEY + "x")


async def test_an_expired_imported_key_is_refused(
    service: KeyturnService, storage: Storage, clock: FakeClock
) -> None:
    await _import_key(storage)
    clock.advance(days=2)

    with pytest.raises(InvalidGrantError):
        await service.authenticate(KEY, identifier=IDENTIFIER)


async def test_re_registering_an_imported_key_renews_it_instead_of_copying_it(
    service: KeyturnService, storage: Storage
) -> None:
    await _import_key(storage)

    renewed = await service.register_key(KEY, IDENTIFIER)

    assert renewed.id == "jwt1"
    assert not (await service.get_key("jwt1")).legacy_hash
    assert len((await service.list_keys()).keys) == 1


async def _import_refresh_token(storage: Storage) -> str:
    await _import_key(storage)
    token = hashlib.sha512(uuid.uuid4().bytes).hexdigest()  # JWThenticator's recipe
    await storage.refresh_tokens.add(
        RefreshTokenRecord(
            id="jwtrt1",
            family_id="jwtrt1",
            token_hash=PEPPER.hash(token, SecretKind.REFRESH_TOKEN),
            subject="key:jwt1",
            scope=(),
            created_at=START,
            expires_at=START + timedelta(hours=12),
            rotating=False,
            key_id="jwt1",
            identifier=IDENTIFIER,
        ),
        audit=AuditEvent(at=START, action="token.imported"),
    )
    return token


async def test_an_imported_refresh_token_refreshes_without_rotating(
    service: KeyturnService, storage: Storage
) -> None:
    token = await _import_refresh_token(storage)

    first = await service.refresh(token, identifier=IDENTIFIER)
    second = await service.refresh(token, identifier=IDENTIFIER)

    assert first.refresh_token is None
    assert second.refresh_token is None
    assert service.validate(second.access.token).subject == "key:jwt1"
    with pytest.raises(InvalidGrantError):
        await service.refresh(token, identifier=str(uuid.UUID(int=8)))
    with pytest.raises(InvalidGrantError):
        await service.refresh(secrets.token_hex(64), identifier=IDENTIFIER)


@pytest.mark.parametrize("operation", ["revoke_token", "logout"])
async def test_an_imported_refresh_token_can_be_revoked(
    service: KeyturnService, storage: Storage, operation: str
) -> None:
    """RFC 7009 §2.1: a token ``refresh`` accepts, revocation accepts too (one lookup)."""
    token = await _import_refresh_token(storage)
    access = (await service.refresh(token, identifier=IDENTIFIER)).access.token

    assert await getattr(service, operation)(token) is True

    with pytest.raises(InvalidGrantError):
        await service.refresh(token, identifier=IDENTIFIER)
    with pytest.raises(RevokedTokenError):
        service.validate(access)


async def test_an_imported_refresh_token_is_revoked_only_by_its_own_client(
    service: KeyturnService, storage: Storage
) -> None:
    token = await _import_refresh_token(storage)

    with pytest.raises(UnauthorizedClientError):
        await service.revoke_token(token, client="another-key")

    assert (await service.refresh(token, identifier=IDENTIFIER)).refresh_token is None
    assert await service.revoke_token(token, client="jwt1") is True
