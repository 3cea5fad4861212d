"""The one place a presented secret becomes a hash and a stored record: `Credentials`.

API keys (generated ones, JWThenticator-style registered ones and, once, keys imported
with their SHA-512 hash) and refresh tokens are looked up here by their peppered hash;
a malformed secret never reaches storage.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from keyturn.core.records import ApiKeyRecord, RefreshTokenRecord
from keyturn.core.secrets import (
    Pepper,
    SecretKind,
    check_legacy_key,
    is_legacy_refresh_token,
    legacy_key_hash,
    looks_generated,
    parse_secret,
)
from keyturn.errors import ConflictError, InvalidGrantError, KeyturnError, MalformedSecretError
from keyturn.service.audit import audit_event
from keyturn.service.context import ServiceContext

__all__ = ["BAD_KEY", "Credentials", "key_refusal"]

# One message for every bad credential, so responses cannot tell the cases apart (T-BF-01).
BAD_KEY: Final = "the API key is not valid"


def key_refusal(record: ApiKeyRecord, identifier: str | None, now: datetime) -> str | None:
    """Why a stored API key may not authenticate (an observer reason), or None if it may."""
    if record.revoked_at is not None:
        return "revoked_key"
    if not record.is_usable(now):
        return "expired_key"
    if identifier is not None and identifier != record.identifier:
        return "identifier_mismatch"
    return None


class Credentials:
    """Finds API keys and refresh tokens by their secret."""

    def __init__(self, context: ServiceContext, pepper: Pepper) -> None:
        self._context = context
        self._pepper = pepper

    def hash(self, value: str, kind: SecretKind) -> bytes:
        """The peppered hash ``value`` is stored under."""
        return self._pepper.hash(value, kind)

    async def lookup_key(self, key: str, now: datetime) -> ApiKeyRecord | None:
        """Find a key by its secret, usable or not.

        A key imported from JWThenticator is found by its SHA-512 and re-hashed with the
        pepper on the way.

        Raises:
            MalformedSecretError: the key cannot be one (it never reaches storage).
        """
        if looks_generated(key):
            value = parse_secret(key, SecretKind.API_KEY).value
        else:
            value = check_legacy_key(key)
        key_hash = self.hash(value, SecretKind.API_KEY)
        cache = self._context.key_cache
        record = cache.get(key_hash, now)
        if record is not None:
            return record
        record = await self._context.storage.keys.find_by_hash(key_hash, now=now)
        if record is None and not looks_generated(key):
            record = await self._upgrade_imported_key(value, key_hash, now)
        if record is not None:
            cache.put(key_hash, record, now)
        return record

    async def find_usable_key(self, key: str, now: datetime) -> ApiKeyRecord | None:
        """Find a usable key by its secret (None for a malformed, unknown or unusable one)."""
        try:
            record = await self.lookup_key(key, now)
        except MalformedSecretError:
            return None
        return record if record is not None and record.is_usable(now) else None

    async def authenticate_key(
        self,
        key: str,
        now: datetime,
        *,
        identifier: str | None = None,
        client_id: str | None = None,
        error: type[KeyturnError] = InvalidGrantError,
    ) -> ApiKeyRecord:
        """The usable key this secret is, or ``error`` (one message for every failure).

        ``identifier`` and ``client_id``, when given, must be the key's identifier and id.

        Raises:
            KeyturnError: ``error``, for a malformed, unknown, unusable or mismatched key.
        """
        observer = self._context.observer
        try:
            record = await self.lookup_key(key, now)
        except MalformedSecretError as exc:
            observer.authentication_failed("malformed_key")
            raise error(BAD_KEY) from exc
        if record is None:
            observer.authentication_failed("unknown_key")
            raise error(BAD_KEY)
        self.check_key(record, now, identifier=identifier, client_id=client_id, error=error)
        return record

    def check_key(
        self,
        record: ApiKeyRecord,
        now: datetime,
        *,
        identifier: str | None,
        client_id: str | None,
        error: type[KeyturnError],
    ) -> None:
        """Refuse a stored key that may not authenticate now, with ``error``."""
        reason = key_refusal(record, identifier, now)
        if reason is None and client_id is not None and client_id != record.id:
            reason = "client_id_mismatch"
        if reason is not None:
            self._context.observer.authentication_failed(reason, key_id=record.id)
            raise error(BAD_KEY)

    async def find_refresh_token(
        self, token: str
    ) -> tuple[RefreshTokenRecord, ApiKeyRecord | None] | None:
        """Find a refresh token by its secret, with the key it was issued to (if any).

        A token imported from JWThenticator (128 hex digits) is stored peppered like
        Keyturn's own and found the same way.

        Raises:
            MalformedSecretError: the token cannot be one (it never reaches storage).
        """
        if is_legacy_refresh_token(token):
            value = token
        else:
            value = parse_secret(token, SecretKind.REFRESH_TOKEN).value
        return await self._context.storage.refresh_tokens.find_with_key(
            self.hash(value, SecretKind.REFRESH_TOKEN)
        )

    @staticmethod
    def could_be_refresh_token(token: str) -> bool:
        """Whether ``token`` has a refresh token's shape (Keyturn's or JWThenticator's)."""
        return looks_generated(token) or is_legacy_refresh_token(token)

    async def _upgrade_imported_key(
        self, value: str, key_hash: bytes, now: datetime
    ) -> ApiKeyRecord | None:
        """Find a key imported from JWThenticator by its SHA-512 and re-hash it with the pepper.

        The secret was just presented, so its unpeppered hash leaves the database now.
        """
        keys = self._context.storage.keys
        legacy_hash = legacy_key_hash(value)
        record = await keys.find_by_hash(legacy_hash, now=now)
        if record is None:
            return None
        audit = audit_event(
            "key.hash_upgraded",
            record.id,
            actor=None,
            request_id=None,
            at=now,
            source="jwthenticator",
        )
        try:
            upgraded = await keys.upgrade_hash(
                record.id, legacy_hash=legacy_hash, new_hash=key_hash, audit=audit
            )
        except ConflictError:  # the same key registered again since: keep the legacy row
            return record
        # None: a concurrent request upgraded it first; the record found still holds.
        return record if upgraded is None else upgraded
