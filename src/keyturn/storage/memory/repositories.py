"""The repositories of `InMemoryStorage`, one class per storage `Protocol`."""

from __future__ import annotations

import builtins
import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

from keyturn.core.records import (
    ApiKeyRecord,
    AuditEvent,
    ClientPublicKeyRecord,
    RefreshTokenRecord,
    SigningKeyRecord,
    SigningKeyState,
    UserRecord,
)
from keyturn.core.revocation import family_entry
from keyturn.errors import ConflictError
from keyturn.storage.base import RevocationSnapshot, StoredAuditEvent
from keyturn.storage.memory._tables import Repository, page, replace, utc

__all__ = [
    "InMemoryAuditRepository",
    "InMemoryClientKeyRepository",
    "InMemoryKeyRepository",
    "InMemoryRefreshTokenRepository",
    "InMemoryReplayRepository",
    "InMemoryRevocationRepository",
    "InMemorySigningKeyRepository",
    "InMemoryUserRepository",
]


class InMemoryKeyRepository(Repository):
    """API keys (`keyturn.storage.base.KeyRepository`)."""

    async def add(self, key: ApiKeyRecord, *, audit: AuditEvent) -> None:
        """Store a new key; `ConflictError` if its id or hash is taken."""
        self._tables.check_new_key(key)
        self._tables.keys[key.id] = utc(key)
        self._tables.record(audit)

    async def register_legacy(self, key: ApiKeyRecord, *, audit: AuditEvent) -> ApiKeyRecord:
        """Store a caller-chosen key, or renew the expiry of the same key."""
        tables = self._tables
        stored = tables.key_with_hash(key.key_hash)
        if stored is None:
            tables.check_new_key(key)
            tables.keys[key.id] = utc(key)
            tables.record(audit)
            return key
        if stored.identifier != key.identifier or stored.revoked_at is not None:
            raise ConflictError("this key is registered to another identifier, or was revoked")
        stored = replace(stored, expires_at=key.expires_at)
        tables.keys[stored.id] = stored
        if stored.id != key.id and audit.target_id == key.id:
            audit = replace(audit, target_id=stored.id)
        tables.record(audit)
        return stored

    async def find_by_hash(self, key_hash: bytes, *, now: datetime) -> ApiKeyRecord | None:
        """The key whose current hash, or still-in-grace previous hash, is ``key_hash``."""
        for key in self._tables.keys.values():
            if key.key_hash == key_hash:
                return key
            if key.previous_hash == key_hash and (
                key.previous_expires_at is not None and key.previous_expires_at > now
            ):
                return key
        return None

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, or None."""
        return self._tables.keys.get(key_id)

    async def list(
        self,
        *,
        limit: int,
        after: str | None = None,
        identifier: str | None = None,
        include_revoked: bool = True,
    ) -> builtins.list[ApiKeyRecord]:
        """Keys ordered by id, starting after ``after`` (keyset pagination)."""
        keys = [
            key
            for key in self._tables.keys.values()
            if (identifier is None or key.identifier == identifier)
            and (include_revoked or key.revoked_at is None)
        ]
        return page(keys, "id", after, limit)

    async def revoke(
        self, key_id: str, *, at: datetime, reason: str, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Revoke a key and its refresh tokens; a revoked key is returned unchanged."""
        key = self._tables.keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return key
        key = replace(key, revoked_at=at, revoked_reason=reason)
        self._tables.keys[key_id] = key
        self._tables.revoke_tokens(at, key_id=key_id)
        self._tables.record(audit)
        return key

    async def rotate(
        self, key_id: str, *, new_hash: bytes, grace_until: datetime, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Give a usable key a new secret; the old one works until ``grace_until``."""
        key = self._tables.keys.get(key_id)
        if key is None or key.revoked_at is not None:
            return None
        if key.expires_at is not None and key.expires_at <= audit.at:
            return None
        return self._change(
            key,
            audit,
            key_hash=new_hash,
            previous_hash=key.key_hash,
            previous_expires_at=grace_until,
        )

    async def set_expiry(
        self, key_id: str, *, expires_at: datetime, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Move a key's expiry; None if the id is unknown."""
        key = self._tables.keys.get(key_id)
        return None if key is None else self._change(key, audit, expires_at=expires_at)

    async def upgrade_hash(
        self, key_id: str, *, legacy_hash: bytes, new_hash: bytes, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Replace a key's legacy hash by ``new_hash``, once."""
        key = self._tables.keys.get(key_id)
        if key is None or key.key_hash != legacy_hash:
            return None
        return self._change(key, audit, key_hash=new_hash)

    async def mark_used(self, key_id: str, *, at: datetime) -> None:
        """Record ``last_used_at`` (never moves it backwards)."""
        key = self._tables.keys.get(key_id)
        if key is not None and (key.last_used_at is None or key.last_used_at < at):
            self._tables.keys[key_id] = replace(key, last_used_at=at)

    def _change(self, key: ApiKeyRecord, audit: AuditEvent, **values: object) -> ApiKeyRecord:
        new_hash = values.get("key_hash")
        if isinstance(new_hash, bytes):
            holder = self._tables.key_with_hash(new_hash)
            if holder is not None and holder.id != key.id:
                raise ConflictError("cannot change the API key: it clashes with a stored record")
        changed = replace(key, **values)
        self._tables.keys[key.id] = changed
        self._tables.record(audit)
        return changed


class InMemoryRefreshTokenRepository(Repository):
    """Refresh tokens (`keyturn.storage.base.RefreshTokenRepository`)."""

    async def add(self, token: RefreshTokenRecord, *, audit: AuditEvent) -> bool:
        """Store a new refresh token and its audit row, unless its key is revoked or expired."""
        if token.key_id is not None:
            key = self._tables.keys.get(token.key_id)
            if key is not None and not key.is_usable(token.created_at):
                return False
        self._store(token)
        self._tables.record(audit)
        return True

    async def find_with_key(
        self, token_hash: bytes
    ) -> tuple[RefreshTokenRecord, ApiKeyRecord | None] | None:
        """The refresh token with this hash and its API key."""
        for token in self._tables.refresh_tokens.values():
            if token.token_hash == token_hash:
                key = None if token.key_id is None else self._tables.keys.get(token.key_id)
                return token, key
        return None

    async def rotate(
        self, token_id: str, successor: RefreshTokenRecord, *, now: datetime, audit: AuditEvent
    ) -> bool:
        """Mark ``token_id`` used and store ``successor``, if the token is still live."""
        token = self._tables.refresh_tokens.get(token_id)
        if token is None or token.used_at is not None or token.revoked_at is not None:
            return False
        if token.expires_at <= now:
            return False
        self._store(successor)
        used = replace(token, used_at=now, replaced_by=successor.id)
        self._tables.refresh_tokens[token_id] = used
        self._tables.record(audit)
        return True

    async def revoke_family(
        self,
        family_id: str,
        *,
        at: datetime,
        audit: AuditEvent,
        access_tokens_until: datetime | None = None,
    ) -> int:
        """Revoke every unrevoked token of a family; returns how many could still be used."""
        tokens = self._tables.refresh_tokens
        revoked = [t for t in tokens.values() if t.family_id == family_id and t.revoked_at is None]
        for token in revoked:
            tokens[token.id] = replace(token, revoked_at=at)
        if revoked:
            self._tables.record(audit)
        if access_tokens_until is not None:
            self._tables.deny(family_entry(family_id), access_tokens_until)
        return sum(1 for t in revoked if t.used_at is None and t.expires_at > at)

    async def delete_expired(self, *, before: datetime) -> int:
        """Delete tokens whose absolute expiry is before ``before``; returns the count."""
        tokens = self._tables.refresh_tokens
        expired = [t.id for t in tokens.values() if t.expires_at < before]
        for token_id in expired:
            del tokens[token_id]
        return len(expired)

    def _store(self, token: RefreshTokenRecord) -> None:
        tables = self._tables
        clash = token.id in tables.refresh_tokens or any(
            t.token_hash == token.token_hash for t in tables.refresh_tokens.values()
        )
        if clash or (token.key_id is not None and token.key_id not in tables.keys):
            raise ConflictError("cannot store the refresh token: it clashes with a stored record")
        tables.refresh_tokens[token.id] = utc(token)


class InMemoryUserRepository(Repository):
    """Users (`keyturn.storage.base.UserRepository`)."""

    async def add(self, user: UserRecord, *, audit: AuditEvent) -> None:
        """Store a new user; `ConflictError` if the id or the email is taken."""
        users = self._tables.users
        if user.id in users or any(u.email_key == user.email_key for u in users.values()):
            raise ConflictError("cannot store the user: it clashes with a stored record")
        users[user.id] = utc(user)
        self._tables.record(audit)

    async def get(self, user_id: str) -> UserRecord | None:
        """The user with this id, or None."""
        return self._tables.users.get(user_id)

    async def find_by_email(self, email_key: str) -> UserRecord | None:
        """The user with this case-folded email, or None."""
        return next((u for u in self._tables.users.values() if u.email_key == email_key), None)

    async def list(
        self, *, limit: int, after: str | None = None, include_disabled: bool = True
    ) -> builtins.list[UserRecord]:
        """Users ordered by id, starting after ``after`` (keyset pagination)."""
        users = [
            u for u in self._tables.users.values() if include_disabled or u.disabled_at is None
        ]
        return page(users, "id", after, limit)

    async def set_disabled(
        self, user_id: str, *, disabled_at: datetime | None, reason: str | None, audit: AuditEvent
    ) -> UserRecord | None:
        """Disable or enable a user; disabling revokes their refresh tokens too."""
        user = self._tables.users.get(user_id)
        if user is None or (user.disabled_at is None) == (disabled_at is None):
            return user  # unknown, or already in that state: nothing changes
        if disabled_at is None:
            user = replace(user, disabled_at=None, disabled_reason=reason)
        else:
            user = replace(
                user, disabled_at=disabled_at, disabled_reason=reason, tokens_revoked_at=disabled_at
            )
            self._tables.revoke_tokens(audit.at, user_id=user_id)
        self._tables.users[user_id] = user
        self._tables.record(audit)
        return user

    async def set_password(
        self, user_id: str, *, password_hash: str, at: datetime, audit: AuditEvent
    ) -> UserRecord | None:
        """Replace the password hash, clear failures, revoke the user's refresh tokens."""
        user = self._tables.users.get(user_id)
        if user is None:
            return None
        user = replace(
            user,
            password_hash=password_hash,
            password_changed_at=at,
            failed_logins=0,
            last_failed_login_at=None,
        )
        self._tables.users[user_id] = user
        self._tables.revoke_tokens(at, user_id=user_id)
        self._tables.record(audit)
        return user

    async def record_login(
        self,
        user_id: str,
        *,
        at: datetime,
        audit: AuditEvent,
        rehashed_password: str | None = None,
    ) -> None:
        """Set ``last_login_at``, clear failures, store a rehashed password; audit it."""
        user = self._tables.users.get(user_id)
        if user is not None:
            user = replace(
                user,
                last_login_at=at,
                failed_logins=0,
                last_failed_login_at=None,
                password_hash=rehashed_password or user.password_hash,
            )
            self._tables.users[user_id] = user
        self._tables.record(audit)

    async def record_failed_login(self, user_id: str, *, at: datetime, audit: AuditEvent) -> None:
        """Count a wrong password and audit it."""
        user = self._tables.users.get(user_id)
        if user is not None:
            self._tables.users[user_id] = replace(
                user, failed_logins=user.failed_logins + 1, last_failed_login_at=at
            )
        self._tables.record(audit)


class InMemorySigningKeyRepository(Repository):
    """Signing keys (`keyturn.storage.base.SigningKeyRepository`)."""

    async def list(self) -> builtins.list[SigningKeyRecord]:
        """Every stored key, oldest first."""
        return sorted(self._tables.signing_keys.values(), key=lambda k: (k.created_at, k.kid))

    async def add(self, key: SigningKeyRecord, *, audit: AuditEvent) -> bool:
        """Store a key; False (nothing written) if it is ACTIVE and another key is."""
        keys = self._tables.signing_keys
        if key.state is SigningKeyState.ACTIVE and self._active() is not None:
            return False
        if key.kid in keys:
            raise ConflictError("cannot store the signing key: it clashes with a stored record")
        keys[key.kid] = utc(key)
        self._tables.record(audit)
        return True

    async def activate(
        self, kid: str, *, at: datetime, retired_publish_until: datetime, audit: AuditEvent
    ) -> bool:
        """Make a pending key active and retire the active one, atomically."""
        keys = self._tables.signing_keys
        key = keys.get(kid)
        if key is None or key.state is not SigningKeyState.PENDING:
            return False
        active = self._active()
        if active is not None:
            keys[active.kid] = replace(
                active,
                state=SigningKeyState.RETIRED,
                retired_at=at,
                publish_until=retired_publish_until,
            )
        keys[kid] = replace(key, state=SigningKeyState.ACTIVE, activated_at=at)
        self._tables.record(audit)
        return True

    async def delete_unpublished(self, *, now: datetime) -> int:
        """Delete retired keys whose ``publish_until`` has passed; returns the count."""
        keys = self._tables.signing_keys
        gone = [
            k.kid
            for k in keys.values()
            if k.state is SigningKeyState.RETIRED
            and k.publish_until is not None
            and k.publish_until < now
        ]
        for kid in gone:
            del keys[kid]
        return len(gone)

    def _active(self) -> SigningKeyRecord | None:
        return next(
            (k for k in self._tables.signing_keys.values() if k.state is SigningKeyState.ACTIVE),
            None,
        )


class InMemoryRevocationRepository(Repository):
    """Revoked access tokens (`keyturn.storage.base.RevocationRepository`)."""

    async def revoke_access_token(
        self, jti: str, *, expires_at: datetime, audit: AuditEvent
    ) -> None:
        """Refuse ``jti`` until ``expires_at``; repeating it changes and audits nothing."""
        if self._tables.deny(jti, expires_at):
            self._tables.record(audit)

    async def snapshot(
        self, *, now: datetime, max_token_lifetime: timedelta | None = None
    ) -> RevocationSnapshot:
        """Revoked ``jti``s unexpired at ``now`` and revoked key and user subjects."""
        since: datetime | None = None
        if max_token_lifetime is not None:
            if max_token_lifetime < timedelta(0):
                raise ValueError("max_token_lifetime may not be negative")
            since = now - max_token_lifetime
        tokens = {
            jti: math.ceil(expires_at.timestamp())
            for jti, expires_at in self._tables.revoked_tokens.items()
            if expires_at > now
        }
        revoked = [(f"key:{k.id}", k.revoked_at) for k in self._tables.keys.values()]
        revoked += [(f"user:{u.id}", u.tokens_revoked_at) for u in self._tables.users.values()]
        subjects = {
            name: math.ceil(at.timestamp())
            for name, at in revoked
            if at is not None and (since is None or at >= since)
        }
        return RevocationSnapshot(tokens=tokens, subjects=subjects)


class InMemoryAuditRepository(Repository):
    """The audit trail (`keyturn.storage.base.AuditRepository`)."""

    async def record(self, event: AuditEvent) -> None:
        """Append an event that goes with no other state change."""
        self._tables.record(event)

    async def record_issuance(self, event: AuditEvent) -> bool:
        """Append an issuance's event unless its key is revoked or expired at ``event.at``."""
        key = self._tables.keys.get(event.target_id or "")
        if key is not None and not key.is_usable(event.at):
            return False
        self._tables.record(event)
        return True

    async def list(
        self,
        *,
        limit: int,
        before: int | None = None,
        action: str | None = None,
        target_id: str | None = None,
    ) -> builtins.list[StoredAuditEvent]:
        """Events newest first, with ids below ``before``, optionally filtered."""
        events = [
            stored
            for stored in reversed(self._tables.audit)
            if (before is None or stored.id < before)
            and (action is None or stored.event.action == action)
            and (target_id is None or stored.event.target_id == target_id)
        ]
        return events[:limit]


class InMemoryClientKeyRepository(Repository):
    """Public keys of clients (`keyturn.storage.base.ClientKeyRepository`)."""

    async def create_key(
        self,
        key: ApiKeyRecord,
        public_keys: Sequence[ClientPublicKeyRecord],
        *,
        audit: AuditEvent,
    ) -> None:
        """Store a new API key with its public keys, at once."""
        self._tables.check_new_key(key)
        pairs = [(k.key_id, k.kid) for k in public_keys]
        if len(set(pairs)) != len(pairs) or any(k.key_id != key.id for k in public_keys):
            raise ConflictError("cannot store the API key: it clashes with a stored record")
        self._tables.keys[key.id] = utc(key)
        for public_key in public_keys:
            self._tables.client_keys[(public_key.key_id, public_key.kid)] = utc(public_key)
        self._tables.record(audit)

    async def add(
        self,
        public_keys: Sequence[ClientPublicKeyRecord],
        *,
        limit: int,
        audit: AuditEvent,
    ) -> builtins.list[ClientPublicKeyRecord] | None:
        """Add public keys (all of one API key) unless already there; None past ``limit``."""
        if not public_keys:
            raise ValueError("no public keys to add")
        key_id = public_keys[0].key_id
        if key_id not in self._tables.keys:
            raise ConflictError("cannot store the public keys: it clashes with a stored record")
        stored = {(k.key_id, k.kid): k for k in self._tables.client_keys.values()}
        for public_key in public_keys:
            stored.setdefault((public_key.key_id, public_key.kid), public_key)
        if len(self._of(stored.values(), key_id)) > limit:
            return None
        self._tables.client_keys = stored
        self._tables.record(audit)
        return self._of(stored.values(), key_id)

    async def remove(self, key_id: str, kid: str, *, audit: AuditEvent) -> bool:
        """Remove one public key; False (nothing written) when the key has no such one."""
        if self._tables.client_keys.pop((key_id, kid), None) is None:
            return False
        self._tables.record(audit)
        return True

    async def list(self, key_id: str) -> builtins.list[ClientPublicKeyRecord]:
        """The public keys of API key ``key_id``, oldest first."""
        return self._of(self._tables.client_keys.values(), key_id)

    async def find_client(
        self, key_id: str
    ) -> tuple[ApiKeyRecord | None, builtins.list[ClientPublicKeyRecord]]:
        """API key ``key_id`` and its public keys, oldest first; (None, []) if unknown."""
        key = self._tables.keys.get(key_id)
        if key is None:
            return None, []
        return key, self._of(self._tables.client_keys.values(), key_id)

    @staticmethod
    def _of(
        keys: Iterable[ClientPublicKeyRecord], key_id: str
    ) -> builtins.list[ClientPublicKeyRecord]:
        return sorted((k for k in keys if k.key_id == key_id), key=lambda k: (k.created_at, k.kid))


class InMemoryReplayRepository(Repository):
    """Single-use ids (`keyturn.storage.base.ReplayRepository`)."""

    async def claim(self, replay_id: str, *, expires_at: datetime, now: datetime) -> bool:
        """Record ``replay_id`` as used until ``expires_at``: True the first time only."""
        stored = self._tables.replays.get(replay_id)
        if stored is not None and stored > now:
            return False
        self._tables.replays[replay_id] = expires_at.astimezone(UTC)
        return True

    async def delete_expired(self, *, before: datetime) -> int:
        """Forget entries that expired before ``before``; returns how many."""
        replays = self._tables.replays
        gone = [name for name, expires_at in replays.items() if expires_at < before]
        for name in gone:
            del replays[name]
        return len(gone)
