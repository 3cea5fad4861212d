"""The storage interface: a few async domain verbs per aggregate, nothing SQL-shaped.

Rules every implementation keeps:

* Rows are found by the HMAC of a secret or by id, never by the secret itself.
* A verb that changes state writes its `AuditEvent` in the same transaction.
* Verbs are atomic: on any error nothing is written.
* A database that cannot be reached (refused connection, pool timeout, failover) raises
  `keyturn.errors.StorageUnavailableError`, never anything the HTTP layer would turn
  into a 401.
* Times are timezone-aware UTC `datetime`s in and out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from keyturn.core.records import (
    ApiKeyRecord,
    AuditEvent,
    ClientPublicKeyRecord,
    RefreshTokenRecord,
    SigningKeyRecord,
    UserRecord,
)

__all__ = [
    "AuditRepository",
    "ClientKeyRepository",
    "KeyRepository",
    "RefreshTokenRepository",
    "ReplayRepository",
    "RevocationRepository",
    "RevocationSnapshot",
    "SigningKeyRepository",
    "Storage",
    "StoredAuditEvent",
    "UserRepository",
]


@dataclass(frozen=True, slots=True)
class StoredAuditEvent:
    """An audit event as read back, with its storage-assigned sequence number."""

    id: int
    event: AuditEvent


@dataclass(frozen=True, slots=True)
class RevocationSnapshot:
    """What a verifier must refuse: revoked ``jti`` -> exp, revoked subject -> revoked at."""

    tokens: Mapping[str, int] = field(default_factory=dict)
    subjects: Mapping[str, int] = field(default_factory=dict)


class KeyRepository(Protocol):
    """API keys."""

    async def add(self, key: ApiKeyRecord, *, audit: AuditEvent) -> None:
        """Store a new key.

        Raises:
            ConflictError: a key with this id or hash exists.
        """

    async def register_legacy(self, key: ApiKeyRecord, *, audit: AuditEvent) -> ApiKeyRecord:
        """Store a caller-chosen key, or renew ``expires_at`` of the same key (same hash).

        Returns the stored record (the existing id when renewed).

        Raises:
            ConflictError: the hash is registered to another identifier, or that key was
                revoked (re-registering never silently rebinds or revives a key, T-AZ-07).
        """

    async def find_by_hash(self, key_hash: bytes, *, now: datetime) -> ApiKeyRecord | None:
        """The key whose current hash, or still-in-grace previous hash, is ``key_hash``."""

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, or None."""

    async def list(
        self,
        *,
        limit: int,
        after: str | None = None,
        identifier: str | None = None,
        include_revoked: bool = True,
    ) -> list[ApiKeyRecord]:
        """Keys ordered by id, starting after ``after`` (keyset pagination)."""

    async def revoke(
        self, key_id: str, *, at: datetime, reason: str, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Revoke a key and every refresh token issued to it; None if the id is unknown.

        Revoking a revoked key changes nothing and writes no audit row.
        """

    async def rotate(
        self, key_id: str, *, new_hash: bytes, grace_until: datetime, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Give a usable key a new secret; the old one works until ``grace_until``.

        None if the id is unknown, revoked or expired.
        """

    async def set_expiry(
        self, key_id: str, *, expires_at: datetime, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Move a key's expiry (``expire`` is ``expires_at=now``); None if unknown."""

    async def upgrade_hash(
        self, key_id: str, *, legacy_hash: bytes, new_hash: bytes, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Replace a key's legacy hash by ``new_hash``; None if it no longer has that hash."""

    async def mark_used(self, key_id: str, *, at: datetime) -> None:
        """Record ``last_used_at`` (best effort: callers throttle how often)."""


class UserRepository(Protocol):
    """People who log in with an email and a password."""

    async def add(self, user: UserRecord, *, audit: AuditEvent) -> None:
        """Store a new user.

        Raises:
            ConflictError: a user with this id or ``email_key`` exists.
        """

    async def get(self, user_id: str) -> UserRecord | None:
        """The user with this id, or None."""

    async def find_by_email(self, email_key: str) -> UserRecord | None:
        """The user whose ``email_key`` (case-folded email) is this, or None."""

    async def list(
        self, *, limit: int, after: str | None = None, include_disabled: bool = True
    ) -> list[UserRecord]:
        """Users ordered by id, starting after ``after`` (keyset pagination)."""

    async def set_disabled(
        self, user_id: str, *, disabled_at: datetime | None, reason: str | None, audit: AuditEvent
    ) -> UserRecord | None:
        """Disable (``disabled_at`` set) or enable (None) a user; None if the id is unknown.

        Disabling sets ``tokens_revoked_at`` and revokes every refresh token of the user in
        the same transaction; enabling keeps ``tokens_revoked_at``.
        Disabling a disabled user, or enabling an enabled one, changes and audits nothing.
        """

    async def set_password(
        self, user_id: str, *, password_hash: str, at: datetime, audit: AuditEvent
    ) -> UserRecord | None:
        """Replace a user's password hash and revoke their refresh tokens; None if unknown.

        Also clears the failed-login counter.
        """

    async def record_login(
        self,
        user_id: str,
        *,
        at: datetime,
        audit: AuditEvent,
        rehashed_password: str | None = None,
    ) -> None:
        """A successful login: set ``last_login_at``, clear ``failed_logins``, store a
        rehashed password if given, and write the audit row, in one transaction."""

    async def record_failed_login(self, user_id: str, *, at: datetime, audit: AuditEvent) -> None:
        """A wrong password: count it and write the audit row, in one transaction."""


class RefreshTokenRepository(Protocol):
    """Refresh tokens, legacy and rotating."""

    async def add(self, token: RefreshTokenRecord, *, audit: AuditEvent) -> bool:
        """Store a new refresh token (first of its family); True when stored.

        A token of an API key is stored only if the key is neither revoked nor expired at
        the token's ``created_at``, checked in the same statement or transaction: False
        (nothing written, no audit row) once the key's revocation or expiry has
        committed, so no token is issued for it from then on.
        """

    async def find_with_key(
        self, token_hash: bytes
    ) -> tuple[RefreshTokenRecord, ApiKeyRecord | None] | None:
        """The refresh token with this hash and, in the same round trip, its API key.

        A user's refresh token (``user_id`` set) has no API key: the key is None.
        """

    async def rotate(
        self, token_id: str, successor: RefreshTokenRecord, *, now: datetime, audit: AuditEvent
    ) -> bool:
        """Atomically mark ``token_id`` used and store ``successor``.

        A compare-and-set: only a token that is unused, unrevoked and unexpired at ``now``
        rotates. Under concurrency exactly one caller gets True; the rest get False and
        nothing is written for them.
        """

    async def revoke_family(
        self,
        family_id: str,
        *,
        at: datetime,
        audit: AuditEvent,
        access_tokens_until: datetime | None = None,
    ) -> int:
        """Revoke every live token of a family; returns how many were live.

        With ``access_tokens_until``, the same transaction records the family's revocation
        entry (`keyturn.core.revocation.family_entry`) among the revoked access tokens
        until then, so the snapshot refuses every access token issued from the family.
        """

    async def delete_expired(self, *, before: datetime) -> int:
        """Delete tokens whose absolute expiry is before ``before``; returns the count."""


class SigningKeyRepository(Protocol):
    """Signing keys and their lifecycle."""

    async def list(self) -> list[SigningKeyRecord]:
        """Every stored key (pending, active and retired), oldest first."""

    async def add(self, key: SigningKeyRecord, *, audit: AuditEvent) -> bool:
        """Store a key; False (and nothing written) if it is ACTIVE and another key is.

        The "one active key" rule is enforced by the database, so instances starting
        together on an empty database create exactly one (T-ROT-05).
        """

    async def activate(
        self, kid: str, *, at: datetime, retired_publish_until: datetime, audit: AuditEvent
    ) -> bool:
        """Make a pending key active and retire the active one, atomically.

        The retired key stays published until ``retired_publish_until``. False if ``kid``
        is not pending.
        """

    async def delete_unpublished(self, *, now: datetime) -> int:
        """Delete retired keys whose ``publish_until`` has passed; returns the count."""


class RevocationRepository(Protocol):
    """Revoked access tokens, and the state a verifier consults."""

    async def revoke_access_token(
        self, jti: str, *, expires_at: datetime, audit: AuditEvent
    ) -> None:
        """Refuse access token ``jti`` until it would expire anyway (idempotent)."""

    async def snapshot(
        self, *, now: datetime, max_token_lifetime: timedelta | None = None
    ) -> RevocationSnapshot:
        """Revoked ``jti``s still unexpired at ``now``, and revoked subjects.

        Revoked subjects are revoked keys (``key:<id>``) and users whose tokens were revoked
        by disabling them (``user:<id>``, at ``tokens_revoked_at``).

        With ``max_token_lifetime`` (the longest an access token is accepted, leeway
        included), subjects revoked longer ago than that are left out: every token issued
        to them has expired. None keeps every revoked subject.
        """


class AuditRepository(Protocol):
    """The audit trail (append-only)."""

    async def record(self, event: AuditEvent) -> None:
        """Append an event that goes with no other state change."""

    async def record_issuance(self, event: AuditEvent) -> bool:
        """Append the audit row of an access token issued alone to key ``event.target_id``,
        unless that key is revoked or expired at ``event.at``: then False, nothing written."""
        ...

    async def list(
        self,
        *,
        limit: int,
        before: int | None = None,
        action: str | None = None,
        target_id: str | None = None,
    ) -> list[StoredAuditEvent]:
        """Events newest first, with ids below ``before``, optionally filtered."""


class ClientKeyRepository(Protocol):
    """Public keys clients sign ``private_key_jwt`` assertions with (never a private key)."""

    async def create_key(
        self,
        key: ApiKeyRecord,
        public_keys: Sequence[ClientPublicKeyRecord],
        *,
        audit: AuditEvent,
    ) -> None:
        """Store a new API key with its public keys, in one transaction."""
        ...

    async def add(
        self,
        public_keys: Sequence[ClientPublicKeyRecord],
        *,
        limit: int,
        audit: AuditEvent,
    ) -> list[ClientPublicKeyRecord] | None:
        """Add one key's public keys; its keys afterwards, or None past ``limit``."""
        ...

    async def remove(self, key_id: str, kid: str, *, audit: AuditEvent) -> bool:
        """Remove one public key; False when there is no such key."""
        ...

    async def find_client(
        self, key_id: str
    ) -> tuple[ApiKeyRecord | None, list[ClientPublicKeyRecord]]:
        """An API key and its public keys (oldest first) in one read; (None, []) if unknown.

        Exact (never cached): a revoked key or a removed public key shows at once.
        """
        ...

    async def list(self, key_id: str) -> list[ClientPublicKeyRecord]:
        """The public keys of an API key, oldest first."""
        ...


class ReplayRepository(Protocol):
    """Single-use ids (client assertion ``jti``s), shared by every instance."""

    async def claim(self, replay_id: str, *, expires_at: datetime, now: datetime) -> bool:
        """Record ``replay_id`` until ``expires_at``; True only the first time."""
        ...

    async def delete_expired(self, *, before: datetime) -> int:
        """Forget entries that expired before ``before``."""
        ...


class Storage(Protocol):
    """Everything the service needs from a database."""

    @property
    def keys(self) -> KeyRepository:
        """API keys."""

    @property
    def refresh_tokens(self) -> RefreshTokenRepository:
        """Refresh tokens."""

    @property
    def users(self) -> UserRepository:
        """People who log in with a password."""

    @property
    def signing_keys(self) -> SigningKeyRepository:
        """Signing keys."""

    @property
    def revocations(self) -> RevocationRepository:
        """Revoked access tokens and revocation snapshots."""

    @property
    def audit(self) -> AuditRepository:
        """The audit trail."""

    @property
    def client_keys(self) -> ClientKeyRepository:
        """Public keys of clients."""
        ...

    @property
    def replays(self) -> ReplayRepository:
        """Single-use ids."""
        ...

    async def claim_setting(self, name: str, value: str, *, at: datetime, audit: AuditEvent) -> str:
        """Store server setting ``name`` as ``value`` unless it is set; return the stored value.

        Insert-if-absent and read back, atomically: of any number of concurrent claims,
        from any number of instances, one stores its value (with ``audit``, created at
        ``at``) and every caller gets that value back. A setting once stored never
        changes.
        """

    async def ping(self) -> None:
        """Round-trip to the database; raises `StorageUnavailableError` if it is down."""

    async def close(self) -> None:
        """Release every connection."""
