"""API keys: `KeyAdmin` creates, registers, lists, rotates, expires and revokes them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from keyturn.core.assertions import MAX_CLIENT_PUBLIC_KEYS
from keyturn.core.records import ApiKeyRecord, ClientPublicKeyRecord
from keyturn.core.secrets import SecretKind, check_legacy_key, generate_secret
from keyturn.core.signing import VerificationKey
from keyturn.errors import ConflictError, InvalidRequestError, NotFoundError, PolicyViolation
from keyturn.service.audit import audit_event
from keyturn.service.context import ServiceContext
from keyturn.service.credentials import Credentials
from keyturn.service.paging import fetch_page

__all__ = ["CreatedKey", "KeyAdmin", "KeyPage", "distinct_public_keys", "public_key_record"]


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A key just created or rotated: the secret is here once and never again."""

    record: ApiKeyRecord
    #: None for a key created with public keys only (``private_key_jwt``): it has no secret.
    secret: str | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class KeyPage:
    """One page of keys and the cursor of the next (None on the last page)."""

    keys: list[ApiKeyRecord]
    next_after: str | None


def distinct_public_keys(keys: Iterable[VerificationKey]) -> list[VerificationKey]:
    """Public keys without repeats (by thumbprint), at most `MAX_CLIENT_PUBLIC_KEYS`."""
    unique = list({key.kid: key for key in keys}.values())
    if len(unique) > MAX_CLIENT_PUBLIC_KEYS:
        raise InvalidRequestError(f"a key may have at most {MAX_CLIENT_PUBLIC_KEYS} public keys")
    return unique


def public_key_record(key_id: str, key: VerificationKey, now: datetime) -> ClientPublicKeyRecord:
    """How API key ``key_id``'s public key ``key`` is stored."""
    return ClientPublicKeyRecord(
        key_id=key_id, kid=key.kid, alg=key.alg, jwk=dict(key.to_jwk()), created_at=now
    )


def _minute(moment: datetime) -> str:
    """A time for a message: UTC to the minute, ISO 8601 (2026-12-07T21:52Z)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


class KeyAdmin:
    """The API keys' lifecycle (admin API and CLI)."""

    def __init__(self, context: ServiceContext, credentials: Credentials) -> None:
        self._context = context
        self._credentials = credentials

    async def create(
        self,
        *,
        identifier: str | None = None,
        name: str | None = None,
        roles: Iterable[str] = (),
        scopes: Iterable[str] | None = None,
        extra_claims: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        expires_at: datetime | None = None,
        public_keys: Iterable[VerificationKey] = (),
        dpop_required: bool = False,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> CreatedKey:
        """Create a generated API key; its secret is returned once and stored hashed.

        Roles, scopes and extra claims are checked against the claims policy now, so a
        key can never hold what the policy forbids. With ``public_keys`` the key
        authenticates with ``private_key_jwt`` instead and gets no secret (a secret can be
        added later with `rotate`). ``dpop_required``: its tokens need a DPoP proof
        (RFC 9449), so it is never issued a bearer token.

        Raises:
            PolicyViolation: a role, scope or claim the policy does not allow.
            InvalidRequestError: more than `MAX_CLIENT_PUBLIC_KEYS` public keys.
        """
        public_keys = distinct_public_keys(public_keys)
        now = self._context.clock()
        if expires_at is not None and expires_at <= now:
            raise PolicyViolation("expires_at", expires_at.isoformat(), "must be in the future")
        roles, scopes = tuple(roles), None if scopes is None else tuple(sorted(set(scopes)))
        self._context.policy.build_claims(
            roles=roles or None,
            requested_scopes=scopes,
            key_scopes=scopes,
            extras=extra_claims,
        )
        secret = generate_secret(SecretKind.API_KEY)
        record = ApiKeyRecord(
            id=secret.id,
            key_hash=self._credentials.hash(secret.value, SecretKind.API_KEY),
            created_at=now,
            identifier=identifier,
            name=name,
            roles=roles,
            scopes=scopes,
            extra_claims=dict(extra_claims or {}),
            metadata=dict(metadata or {}),
            expires_at=expires_at,
            dpop_required=dpop_required,
        )
        await self._store_new(record, public_keys, now, actor=actor, request_id=request_id)
        return CreatedKey(record=record, secret=None if public_keys else secret.value)

    async def _store_new(
        self,
        record: ApiKeyRecord,
        public_keys: list[VerificationKey],
        now: datetime,
        *,
        actor: str | None,
        request_id: str | None,
    ) -> None:
        """Store a new key, with its public keys when it authenticates by them."""
        storage = self._context.storage
        detail: dict[str, Any] = {"dpop_required": True} if record.dpop_required else {}
        if public_keys:
            audit = audit_event(
                "key.created",
                record.id,
                actor=actor,
                request_id=request_id,
                at=now,
                kids=[k.kid for k in public_keys],
                **detail,
            )
            stored = [public_key_record(record.id, key, now) for key in public_keys]
            await storage.client_keys.create_key(record, stored, audit=audit)
            return
        audit = audit_event(
            "key.created", record.id, actor=actor, request_id=request_id, at=now, **detail
        )
        await storage.keys.add(record, audit=audit)

    async def register(
        self,
        key: str,
        identifier: str,
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> ApiKeyRecord:
        """Register a caller-chosen key (JWThenticator ``/register_key``).

        A second registration of the same key with the same identifier renews its expiry.

        Raises:
            MalformedSecretError: the key is empty, too long, or uses a Keyturn prefix.
            ConflictError: the key is registered to another identifier, or was revoked.
        """
        now = self._context.clock()
        check_legacy_key(key)
        # A key imported from JWThenticator: re-hash it first.
        await self._credentials.lookup_key(key, now)
        record = ApiKeyRecord(
            id=generate_secret(SecretKind.API_KEY).id,
            key_hash=self._credentials.hash(key, SecretKind.API_KEY),
            created_at=now,
            identifier=identifier,
            legacy=True,
            expires_at=now + self._context.config.legacy_key_lifetime,
        )
        audit = audit_event("key.registered", record.id, actor=actor, request_id=request_id, at=now)
        stored = await self._context.storage.keys.register_legacy(record, audit=audit)
        self._context.key_cache.forget(stored.id)  # a renewed expiry counts at once here
        return stored

    async def is_registered(self, key: str) -> bool:
        """Tell whether ``key`` is a usable registered key (JWThenticator semantics)."""
        record = await self._credentials.find_usable_key(key, self._context.clock())
        return record is not None

    async def get(self, key_id: str) -> ApiKeyRecord:
        """Return the key with this id.

        Raises:
            NotFoundError: no such key.
        """
        record = await self._context.storage.keys.get(key_id)
        if record is None:
            raise NotFoundError(f"no API key with id {key_id!r}")
        return self._context.key_usage.latest(record)

    async def list(
        self,
        *,
        limit: int = 50,
        after: str | None = None,
        identifier: str | None = None,
        include_revoked: bool = True,
    ) -> KeyPage:
        """One page of keys ordered by id; pass ``next_after`` back for the next page."""
        keys = self._context.storage.keys
        page, next_after = await fetch_page(
            lambda n: keys.list(
                limit=n, after=after, identifier=identifier, include_revoked=include_revoked
            ),
            limit,
        )
        latest = self._context.key_usage.latest
        return KeyPage(keys=[latest(record) for record in page], next_after=next_after)

    async def revoke(
        self,
        key_id: str,
        *,
        reason: str = "",
        actor: str | None = None,
        request_id: str | None = None,
    ) -> ApiKeyRecord:
        """Revoke a key: its refresh tokens die with it, and so do its access tokens here.

        Raises:
            NotFoundError: no such key.
        """
        now = self._context.clock()
        audit = audit_event(
            "key.revoked", key_id, actor=actor, request_id=request_id, at=now, reason=reason
        )
        record = await self._context.storage.keys.revoke(key_id, at=now, reason=reason, audit=audit)
        self._context.key_cache.forget(key_id)
        if record is None:
            raise NotFoundError(f"no API key with id {key_id!r}")
        assert record.revoked_at is not None  # noqa: S101 -- revoke() sets it
        self._context.revocations.revoke_subject(
            record.subject, at=int(record.revoked_at.timestamp())
        )
        return self._context.key_usage.latest(record)

    async def rotate(
        self,
        key_id: str,
        *,
        grace: timedelta | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> CreatedKey:
        """Give a key a new secret; the old one keeps working for ``grace``.

        Only one replaced secret is kept. While it is still in its grace period, a second
        rotation would end it at once, so it is refused -- unless ``grace`` is zero, which
        ends every older secret now (the emergency path, e.g. a leaked secret).

        Raises:
            NotFoundError: no such usable key (unknown, revoked or expired; the message
                says which).
            ConflictError: the previous rotation's grace period is still running.
        """
        now = self._context.clock()
        grace = self._context.config.key_rotation_grace if grace is None else grace
        try:
            # The key keeps its id (every id is 16 base62 characters): logs stay joined.
            secret = generate_secret(SecretKind.API_KEY, secret_id=key_id)
        except ValueError as exc:
            raise NotFoundError(f"no usable API key with id {key_id!r}") from exc
        await self._check_rotatable(key_id, grace, now)
        record = await self._context.storage.keys.rotate(
            key_id,
            new_hash=self._credentials.hash(secret.value, SecretKind.API_KEY),
            grace_until=now + grace,
            audit=audit_event(
                "key.rotated",
                key_id,
                actor=actor,
                request_id=request_id,
                at=now,
                grace_seconds=int(grace.total_seconds()),
            ),
        )
        self._context.key_cache.forget(key_id)
        if record is None:
            raise NotFoundError(f"no usable API key with id {key_id!r}")
        return CreatedKey(record=record, secret=secret.value)

    async def _check_rotatable(self, key_id: str, grace: timedelta, now: datetime) -> None:
        """Refuse to rotate an unknown, revoked or expired key, or one still in its grace."""
        current = await self._context.storage.keys.get(key_id)
        if current is None:
            raise NotFoundError(f"no usable API key with id {key_id!r}")
        if current.revoked_at is not None:
            raise NotFoundError(
                f"API key {key_id!r} is revoked (since {_minute(current.revoked_at)}): "
                "create a new key instead"
            )
        if current.expires_at is not None and current.expires_at <= now:
            raise NotFoundError(
                f"API key {key_id!r} expired at {_minute(current.expires_at)}: "
                "create a new key instead"
            )
        previous_until = current.previous_expires_at
        if previous_until is not None and previous_until > now and grace > timedelta(0):
            raise ConflictError(
                f"API key {key_id!r} was rotated recently and its previous secret works until "
                f"{_minute(previous_until)}; rotating again would end that grace at once: "
                "wait until then, or rotate with a grace of 0 to end every older secret now"
            )

    async def expire(
        self,
        key_id: str,
        *,
        at: datetime | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> ApiKeyRecord:
        """Set a key's expiry (now by default): it stops authenticating from then on.

        Raises:
            NotFoundError: no such key.
        """
        now = self._context.clock()
        when = now if at is None else at
        record = await self._context.storage.keys.set_expiry(
            key_id,
            expires_at=when,
            audit=audit_event(
                "key.expiry_set",
                key_id,
                actor=actor,
                request_id=request_id,
                at=now,
                expires_at=when.isoformat(),
            ),
        )
        self._context.key_cache.forget(key_id)
        if record is None:
            raise NotFoundError(f"no API key with id {key_id!r}")
        return record
