"""Keyturn's use cases: the one layer that both awaits storage and calls the core.

`KeyturnService` registers, rotates and revokes API keys, manages users and their
passwords (argon2 runs in worker threads, `PasswordWorker`), trades keys and passwords
for tokens,
refreshes (legacy and rotating), manages the signing-key lifecycle and keeps the
revocation state its verifier consults. It knows nothing of HTTP: the server, the CLI
and the tests call it.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from keyturn.core.accounts import check_email, email_key, new_user_id
from keyturn.core.assertions import (
    MAX_CLIENT_PUBLIC_KEYS,
    ClientAssertion,
    assertion_client_id,
    verify_client_assertion,
)
from keyturn.core.keywrap import KeyWrapper
from keyturn.core.passwords import MAX_PASSWORD_LENGTH, PasswordHasher, check_new_password
from keyturn.core.policy import ClaimsPolicy, Grant
from keyturn.core.records import (
    ApiKeyRecord,
    AuditEvent,
    ClientPublicKeyRecord,
    RefreshTokenRecord,
    SigningKeyRecord,
    SigningKeyState,
    UserRecord,
)
from keyturn.core.refresh import RefreshDecision, decide_refresh
from keyturn.core.revocation import REVOCATION_MARGIN, RevocationList
from keyturn.core.secrets import (
    ParsedSecret,
    Pepper,
    SecretKind,
    check_legacy_key,
    generate_secret,
    is_legacy_refresh_token,
    legacy_key_hash,
    looks_generated,
    parse_secret,
)
from keyturn.core.signing import DEFAULT_ALGORITHM, KeySet, SigningKey, VerificationKey
from keyturn.core.tokens import (
    DEFAULT_LEEWAY,
    IssuedToken,
    TokenVerifier,
    VerifiedToken,
    issue_access_token,
)
from keyturn.errors import (
    ConflictError,
    InsufficientScopeError,
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidTokenError,
    MalformedSecretError,
    NotFoundError,
    PepperMismatchError,
    PolicyViolation,
    SigningKeyError,
    UnauthorizedClientError,
)
from keyturn.observer import NullObserver, ServiceObserver
from keyturn.storage.base import ReplayRepository, RevocationSnapshot, Storage, StoredAuditEvent

__all__ = [
    "LOGIN_CLIENT_ID",
    "MAX_ACCESS_TOKEN_LIFETIME",
    "PASSWORD_FACTOR",
    "PASSWORD_LEVEL",
    "PEPPER_FINGERPRINT_SETTING",
    "CreatedKey",
    "KeyPage",
    "KeyturnService",
    "PasswordWorker",
    "ServiceConfig",
    "TokenPair",
    "UserPage",
    "default_password_concurrency",
    "utc_now",
]

_T = TypeVar("_T")

#: The server setting holding `Pepper.fingerprint` of the pepper the stored hashes use.
PEPPER_FINGERPRINT_SETTING: Final = "pepper_fingerprint"

# One message for every bad credential, so responses cannot tell the cases apart (T-BF-01).
_BAD_KEY: Final = "the API key is not valid"
_BAD_ASSERTION: Final = "the client assertion is invalid"
_BAD_REFRESH: Final = "the refresh token is not valid"
_BAD_LOGIN: Final = "the email or password is not valid"
_CLIENT_REQUIRED: Final = (
    "this refresh token was issued to an API key: authenticate with that key "
    "(HTTP Basic or client_secret)"
)
_NOT_YOUR_REFRESH: Final = "the refresh token was not issued to the authenticated client"
_NOT_YOUR_TOKEN: Final = "the token was not issued to the authenticated client"  # noqa: S105
#: ``client_id`` of tokens issued at login: no OAuth client asked, the person did.
LOGIN_CLIENT_ID: Final = "keyturn-login"
#: apijwt's assurance level for a password login, and the factor it names.
PASSWORD_LEVEL: Final = 2.0
PASSWORD_FACTOR: Final = "password"  # noqa: S105 -- the factor's name, not a secret
#: Room for JWThenticator's 25-hour JWT_LEASE_TIME; Keyturn's default is 15 minutes.
MAX_ACCESS_TOKEN_LIFETIME: Final = timedelta(days=2)
#: Extra time a revoked family's access tokens stay refused (see `_family_deny_until`).
_FAMILY_DENY_MARGIN: Final = timedelta(minutes=1)
#: What a second account for an email is refused with (the CLI and the 409 `detail`).
DUPLICATE_EMAIL: Final = "a user with this email already exists (emails ignore case)"


def utc_now() -> datetime:
    """The current time, timezone-aware UTC (the service's default clock)."""
    return datetime.now(UTC)


def _minute(moment: datetime) -> str:
    """A time for a message: UTC to the minute, ISO 8601 (2026-12-07T21:52Z)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


@dataclass(frozen=True, slots=True)
class ServiceConfig:
    """What the service needs to know; `keyturn.config.Settings` builds it.

    Args:
        issuer: the ``iss`` of every token, fixed by configuration (never the Host header).
        audience: the ``aud`` of every token and the one the verifier requires.
        access_token_lifetime: how long an access token lives.
        refresh_token_lifetime: absolute lifetime of a rotating refresh-token family.
        legacy_refresh_token_lifetime: lifetime of a JWThenticator (non-rotating) refresh token.
        legacy_key_lifetime: expiry given to keys registered through ``register_key``.
        key_rotation_grace: how long a rotated-out API key secret keeps working.
        refresh_reuse_grace: a replay this soon after a rotation is refused without
            revoking the family (concurrent or retried requests of the rightful client).
        signing_algorithm: algorithm of newly generated signing keys.
        signing_key_publish_delay: how long a new signing key is published before it signs
            (at least the JWKS cache lifetime of every verifier).
        leeway: clock skew tolerated by the verifier, in seconds.
        last_used_resolution: ``last_used_at`` is written at most this often per key.
    """

    issuer: str = "http://localhost:8080"
    audience: str = "keyturn"
    access_token_lifetime: timedelta = timedelta(minutes=15)
    refresh_token_lifetime: timedelta = timedelta(days=30)
    legacy_refresh_token_lifetime: timedelta = timedelta(days=60)
    legacy_key_lifetime: timedelta = timedelta(days=120)
    key_rotation_grace: timedelta = timedelta(hours=24)
    refresh_reuse_grace: timedelta = timedelta(seconds=10)
    signing_algorithm: str = DEFAULT_ALGORITHM
    signing_key_publish_delay: timedelta = timedelta(minutes=10)
    leeway: int = DEFAULT_LEEWAY
    last_used_resolution: timedelta = timedelta(minutes=1)

    def __post_init__(self) -> None:
        for name in (
            "access_token_lifetime",
            "refresh_token_lifetime",
            "legacy_refresh_token_lifetime",
            "legacy_key_lifetime",
        ):
            value = getattr(self, name)
            if value <= timedelta(0):
                raise ValueError(f"{name} must be positive")
        if self.access_token_lifetime > MAX_ACCESS_TOKEN_LIFETIME:
            raise ValueError("access_token_lifetime may be at most two days")
        for name in ("key_rotation_grace", "refresh_reuse_grace", "signing_key_publish_delay"):
            if getattr(self, name) < timedelta(0):
                raise ValueError(f"{name} may not be negative")

    @property
    def access_lifetime_seconds(self) -> int:
        """The access-token lifetime in whole seconds."""
        return int(self.access_token_lifetime.total_seconds())


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


@dataclass(frozen=True, slots=True)
class UserPage:
    """One page of users and the cursor of the next (None on the last page)."""

    users: list[UserRecord]
    next_after: str | None


def default_password_concurrency() -> int:
    """Half the CPUs, at least one: argon2 never takes every core from the event loop."""
    return max(1, (os.cpu_count() or 2) // 2)


class PasswordWorker:
    """Runs argon2 in worker threads, at most ``concurrency`` at a time.

    Each verification holds 19 MiB and ~40 ms of a core. Off the event loop, a login
    flood queues here while token validation, which never waits on this, keeps being
    served; the cap bounds both the memory and the cores a flood can take.
    """

    def __init__(self, hasher: PasswordHasher, *, concurrency: int | None = None) -> None:
        self.hasher = hasher
        self.concurrency = concurrency or default_password_concurrency()
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self._slots = asyncio.Semaphore(self.concurrency)

    async def run(self, work: Callable[..., _T], *args: Any) -> _T:
        """Run ``work(*args)`` in a thread once a slot is free."""
        async with self._slots:
            return await asyncio.to_thread(work, *args)


@dataclass(frozen=True, slots=True)
class TokenPair:
    """An access token and, unless a legacy refresh re-used one, a refresh token."""

    access: IssuedToken
    scopes: frozenset[str]
    refresh_token: str | None = field(default=None, repr=False)
    refresh_expires_at: datetime | None = None


class KeyturnService:
    """The domain operations over a `Storage`: API keys, users, tokens, signing keys.

    Call `start()` once before serving: it checks the pepper against the database's,
    makes sure exactly one active signing key exists and loads the key set and the
    revocation state.
    """

    def __init__(
        self,
        storage: Storage,
        *,
        pepper: Pepper,
        key_wrapper: KeyWrapper,
        config: ServiceConfig | None = None,
        policy: ClaimsPolicy | None = None,
        clock: Callable[[], datetime] = utc_now,
        password_hasher: PasswordHasher | None = None,
        password_concurrency: int | None = None,
        observer: ServiceObserver | None = None,
        replays: ReplayRepository | None = None,
    ) -> None:
        self.storage = storage
        #: Where single-use ids (assertion ``jti``s) are claimed: the database by default.
        self.replays: ReplayRepository = replays or storage.replays
        self.observer: ServiceObserver = observer or NullObserver()
        self.config = config or ServiceConfig()
        self.policy = policy or ClaimsPolicy.default()
        self._pepper = pepper
        self._key_wrapper = key_wrapper
        self._clock = clock
        self.passwords = PasswordWorker(
            password_hasher or PasswordHasher(), concurrency=password_concurrency
        )
        self._signing_key: SigningKey | None = None
        self._signing_key_since: datetime | None = None
        self.revocations = RevocationList()
        self.verifier = TokenVerifier(
            KeySet(),
            issuer=self.config.issuer,
            audience=self.config.audience,
            leeway=self.config.leeway,
            max_lifetime=self.config.access_lifetime_seconds,
            revocation=self.revocations,
            clock=lambda: self._clock().timestamp(),
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Check the pepper, ensure one active signing key exists, load keys and revocations.

        Raises:
            PepperMismatchError: the database was set up with another pepper.
        """
        await self.check_pepper()
        await self.ensure_signing_key()
        await self.reload_revocations()

    async def check_pepper(self) -> None:
        """Refuse a pepper other than the one the database's hashes were made with.

        The first check on a database records this pepper's fingerprint (a database from
        before the check adopts the pepper it runs with); later checks compare with it.

        Raises:
            PepperMismatchError: the stored fingerprint is another pepper's.
        """
        mine = self._pepper.fingerprint()
        now = self._clock()
        stored = await self.storage.claim_setting(
            PEPPER_FINGERPRINT_SETTING,
            mine,
            at=now,
            audit=self._audit(
                "server_setting.claimed", PEPPER_FINGERPRINT_SETTING, None, None, now
            ),
        )
        if stored != mine:
            raise PepperMismatchError(
                "this instance's KEYTURN_PEPPER differs from the one this database was set up "
                "with (every stored API key and refresh token would be refused); give every "
                "instance the same pepper, or the same KEYTURN_PEPPER_FILE "
                "(see docs/deployment.md)"
            )

    @property
    def key_set(self) -> KeySet:
        """The keys currently trusted and published."""
        keys = self.verifier.keys
        return keys if isinstance(keys, KeySet) else KeySet()

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set to publish."""
        return dict(self.key_set.jwks())

    async def maintain(self) -> None:
        """Periodic upkeep: activate due signing keys, drop expired state, reload caches."""
        now = self._clock()
        await self.activate_due_signing_keys()
        await self.storage.signing_keys.delete_unpublished(now=now)
        await self.storage.refresh_tokens.delete_expired(before=now)
        await self.replays.delete_expired(before=now)
        await self.reload_signing_keys()
        await self.reload_revocations()

    # -- API keys ----------------------------------------------------------------------

    async def create_key(
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
        actor: str | None = None,
        request_id: str | None = None,
    ) -> CreatedKey:
        """Create a generated API key; its secret is returned once and stored hashed.

        Roles, scopes and extra claims are checked against the claims policy now, so a
        key can never hold what the policy forbids. With ``public_keys`` the key
        authenticates with ``private_key_jwt`` instead and gets no secret (a secret can be
        added later with `rotate_key`).

        Raises:
            PolicyViolation: a role, scope or claim the policy does not allow.
            InvalidRequestError: more than `MAX_CLIENT_PUBLIC_KEYS` public keys.
        """
        public_keys = _distinct(public_keys)
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise PolicyViolation("expires_at", expires_at.isoformat(), "must be in the future")
        roles, scopes = tuple(roles), None if scopes is None else tuple(sorted(set(scopes)))
        self.policy.build_claims(
            roles=roles or None,
            requested_scopes=scopes,
            key_scopes=scopes,
            extras=extra_claims,
        )
        secret = generate_secret(SecretKind.API_KEY)
        record = ApiKeyRecord(
            id=secret.id,
            key_hash=self._pepper.hash(secret.value, SecretKind.API_KEY),
            created_at=now,
            identifier=identifier,
            name=name,
            roles=roles,
            scopes=scopes,
            extra_claims=dict(extra_claims or {}),
            metadata=dict(metadata or {}),
            expires_at=expires_at,
        )
        if public_keys:
            audit = self._audit(
                "key.created", record.id, actor, request_id, now, kids=[k.kid for k in public_keys]
            )
            stored = [_public_key_record(record.id, key, now) for key in public_keys]
            await self.storage.client_keys.create_key(record, stored, audit=audit)
            return CreatedKey(record=record, secret=None)
        await self.storage.keys.add(
            record, audit=self._audit("key.created", record.id, actor, request_id, now)
        )
        return CreatedKey(record=record, secret=secret.value)

    async def register_key(
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
        now = self._clock()
        check_legacy_key(key)
        await self._lookup_key(key, now)  # a key imported from JWThenticator: re-hash it first
        record = ApiKeyRecord(
            id=generate_secret(SecretKind.API_KEY).id,
            key_hash=self._pepper.hash(key, SecretKind.API_KEY),
            created_at=now,
            identifier=identifier,
            legacy=True,
            expires_at=now + self.config.legacy_key_lifetime,
        )
        audit = self._audit("key.registered", record.id, actor, request_id, now)
        return await self.storage.keys.register_legacy(record, audit=audit)

    async def is_key_registered(self, key: str) -> bool:
        """Tell whether ``key`` is a usable registered key (JWThenticator semantics)."""
        try:
            record = await self._find_key(key, self._clock())
        except InvalidGrantError:
            return False
        return record is not None

    async def get_key(self, key_id: str) -> ApiKeyRecord:
        """Return the key with this id.

        Raises:
            NotFoundError: no such key.
        """
        record = await self.storage.keys.get(key_id)
        if record is None:
            raise NotFoundError(f"no API key with id {key_id!r}")
        return record

    async def list_keys(
        self,
        *,
        limit: int = 50,
        after: str | None = None,
        identifier: str | None = None,
        include_revoked: bool = True,
    ) -> KeyPage:
        """One page of keys ordered by id; pass ``next_after`` back for the next page."""
        if not 1 <= limit <= 1000:
            raise PolicyViolation("limit", limit, "must be between 1 and 1000")
        rows = await self.storage.keys.list(
            limit=limit + 1, after=after, identifier=identifier, include_revoked=include_revoked
        )
        page = rows[:limit]
        return KeyPage(keys=page, next_after=page[-1].id if len(rows) > limit else None)

    async def revoke_key(
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
        now = self._clock()
        audit = self._audit("key.revoked", key_id, actor, request_id, now, reason=reason)
        record = await self.storage.keys.revoke(key_id, at=now, reason=reason, audit=audit)
        if record is None:
            raise NotFoundError(f"no API key with id {key_id!r}")
        assert record.revoked_at is not None  # noqa: S101 -- revoke() sets it
        self.revocations.revoke_subject(record.subject, at=int(record.revoked_at.timestamp()))
        return record

    async def rotate_key(
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
        now = self._clock()
        grace = self.config.key_rotation_grace if grace is None else grace
        try:
            # The key keeps its id (every id is 16 base62 characters): logs stay joined.
            secret = generate_secret(SecretKind.API_KEY, secret_id=key_id)
        except ValueError as exc:
            raise NotFoundError(f"no usable API key with id {key_id!r}") from exc
        current = await self.storage.keys.get(key_id)
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
        record = await self.storage.keys.rotate(
            key_id,
            new_hash=self._pepper.hash(secret.value, SecretKind.API_KEY),
            grace_until=now + grace,
            audit=self._audit(
                "key.rotated",
                key_id,
                actor,
                request_id,
                now,
                grace_seconds=int(grace.total_seconds()),
            ),
        )
        if record is None:
            raise NotFoundError(f"no usable API key with id {key_id!r}")
        return CreatedKey(record=record, secret=secret.value)

    async def expire_key(
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
        now = self._clock()
        when = now if at is None else at
        record = await self.storage.keys.set_expiry(
            key_id,
            expires_at=when,
            audit=self._audit(
                "key.expiry_set", key_id, actor, request_id, now, expires_at=when.isoformat()
            ),
        )
        if record is None:
            raise NotFoundError(f"no API key with id {key_id!r}")
        return record

    # -- tokens ------------------------------------------------------------------------

    async def authenticate(
        self,
        key: str | ClientAssertion,
        *,
        identifier: str | None = None,
        scopes: Iterable[str] | None = None,
        rotating: bool = True,
        client_id: str | None = None,
        issue_refresh_token: bool = True,
        request_id: str | None = None,
    ) -> TokenPair:
        """Trade an API key for an access token and a refresh token.

        ``rotating`` False issues a legacy (JWThenticator) refresh token that is reused
        instead of rotated. When the key was registered with an identifier, ``identifier``
        must match it; so must ``client_id`` (RFC 6749 §2.3.1) the key's id when given. A
        mismatch fails exactly like an unknown key. ``issue_refresh_token`` False issues
        the access token alone (RFC 6749 §4.4.3). ``key`` may instead be a
        `ClientAssertion` (``private_key_jwt``, RFC 7523), checked by `authenticate_client`'s
        rules.

        Raises:
            InvalidGrantError: unknown, malformed, expired or revoked key, or wrong identifier.
            InvalidClientError: the client assertion is refused.
            PolicyViolation: a requested scope the key or the policy does not allow.
        """
        now = self._clock()
        if isinstance(key, ClientAssertion):
            record: ApiKeyRecord | None = await self._assertion_client(key, now)
        else:
            try:
                record = await self._lookup_key(key, now)
            except InvalidGrantError:
                self.observer.authentication_failed("malformed_key")
                raise
        if record is None:
            self.observer.authentication_failed("unknown_key")
            raise InvalidGrantError(_BAD_KEY)
        reason = _key_refusal(record, identifier, now)
        if reason is None and client_id is not None and client_id != record.id:
            reason = "client_id_mismatch"
        if reason is not None:
            self.observer.authentication_failed(reason, key_id=record.id)
            raise InvalidGrantError(_BAD_KEY)
        grant = self.policy.build_claims(
            roles=record.roles or None,
            requested_scopes=scopes,
            key_scopes=record.scopes,
            extras=record.extra_claims,
        )
        if not issue_refresh_token:
            access = self._issue(record, grant, now)
            await self.storage.audit.record(
                self._audit(
                    "token.issued", record.id, record.subject, request_id, now, jti=access.jti
                )
            )
            await self._touch(record, now)
            self.observer.token_issued("api_key", key_id=record.id, jti=access.jti)
            return TokenPair(access=access, scopes=grant.scopes)
        secret = generate_secret(SecretKind.REFRESH_TOKEN)
        access = self._issue(record, grant, now, family=secret.id)
        lifetime = (
            self.config.refresh_token_lifetime
            if rotating
            else self.config.legacy_refresh_token_lifetime
        )
        refresh = RefreshTokenRecord(
            id=secret.id,
            family_id=secret.id,
            token_hash=self._pepper.hash(secret.value, SecretKind.REFRESH_TOKEN),
            subject=record.subject,
            scope=tuple(sorted(grant.scopes)),
            created_at=now,
            expires_at=now + lifetime,
            rotating=rotating,
            key_id=record.id,
            identifier=record.identifier,
        )
        stored = await self.storage.refresh_tokens.add(
            refresh,
            audit=self._audit(
                "token.issued",
                record.id,
                record.subject,
                request_id,
                now,
                jti=access.jti,
                refresh_token_id=refresh.id,
                rotating=rotating,
            ),
        )
        if not stored:  # revoked since it was read: nothing is issued once that committed
            self.observer.authentication_failed("revoked_key", key_id=record.id)
            raise InvalidGrantError(_BAD_KEY)
        await self._touch(record, now)
        self.observer.token_issued("api_key", key_id=record.id, jti=access.jti)
        return TokenPair(
            access=access,
            scopes=grant.scopes,
            refresh_token=secret.value,
            refresh_expires_at=refresh.expires_at,
        )

    async def authenticate_client(
        self, key: str | ClientAssertion, *, client_id: str | None = None
    ) -> str:
        """Authenticate an OAuth client by its API key (RFC 6749 §2.3.1); returns its id.

        ``client_id``, when given, must be the key's id. An unknown, malformed, expired or
        revoked key and a mismatched ``client_id`` fail alike, after the same lookup.
        ``key`` may instead be a `ClientAssertion` (``private_key_jwt``, RFC 7523 §2.2):
        signed by one of the key's public keys, with every RFC 7523 §3 rule, its ``jti``
        used once.

        Raises:
            InvalidClientError: the client could not be authenticated.
        """
        now = self._clock()
        if isinstance(key, ClientAssertion):
            return (await self._assertion_client(key, now)).id
        try:
            record = await self._lookup_key(key, now)
        except InvalidGrantError as exc:
            self.observer.authentication_failed("malformed_key")
            raise InvalidClientError(_BAD_KEY) from exc
        if record is None:
            self.observer.authentication_failed("unknown_key")
            raise InvalidClientError(_BAD_KEY)
        reason = _key_refusal(record, None, now)
        if reason is None and client_id is not None and client_id != record.id:
            reason = "client_id_mismatch"
        if reason is not None:
            self.observer.authentication_failed(reason, key_id=record.id)
            raise InvalidClientError(_BAD_KEY)
        return record.id

    async def refresh(
        self,
        refresh_token: str,
        *,
        identifier: str | None = None,
        scopes: Iterable[str] | None = None,
        check_client: bool = False,
        client: str | None = None,
        request_id: str | None = None,
    ) -> TokenPair:
        """Trade a refresh token for a new access token (and, if rotating, a successor).

        RFC 9700 §4.14.2: presenting a rotated-out token again after the grace window
        revokes its whole family.

        ``check_client`` applies RFC 6749 §6 (``/v1/token``; JWThenticator's ``/refresh``
        does not): ``client`` is the id of the authenticated client (`authenticate_client`),
        or None for a request without client authentication. A token issued to an API key
        then needs that key's authentication; a login's token (a public client's) needs
        none and is refused to an authenticated key.

        Raises:
            InvalidClientError: the token was issued to an API key and ``client`` is None.
            InvalidGrantError: unknown, expired, revoked or reused token, wrong identifier,
                a token issued to another client, or its key is no longer usable.
            PolicyViolation: a scope beyond the original grant (RFC 6749 §6).
        """
        now = self._clock()
        try:
            value = (  # an imported JWThenticator token is 128 hex digits, stored peppered
                refresh_token
                if is_legacy_refresh_token(refresh_token)
                else _parse_or_invalid(refresh_token, SecretKind.REFRESH_TOKEN, _BAD_REFRESH).value
            )
        except InvalidGrantError:
            self.observer.authentication_failed("malformed_refresh_token")
            raise
        found = await self.storage.refresh_tokens.find_with_key(
            self._pepper.hash(value, SecretKind.REFRESH_TOKEN)
        )
        if found is None:
            self.observer.authentication_failed("unknown_refresh_token")
            raise InvalidGrantError(_BAD_REFRESH)
        record, key = found
        holder: ApiKeyRecord | UserRecord
        if record.user_id is not None:
            user = await self.storage.users.get(record.user_id)
            if user is None or not user.is_active:  # a disabled user cannot refresh
                self.observer.authentication_failed("user_unusable", key_id=record.user_id)
                raise InvalidGrantError(_BAD_REFRESH)
            holder = user
        elif key is None or not key.is_usable(now):
            self.observer.authentication_failed("key_unusable", key_id=record.key_id)
            raise InvalidGrantError(_BAD_REFRESH)
        else:
            holder = key
        if check_client:
            self._check_refresh_client(record, holder, client)
        if identifier is not None and identifier != record.identifier:
            self.observer.authentication_failed("identifier_mismatch", key_id=holder.id)
            raise InvalidGrantError(_BAD_REFRESH)
        decision = decide_refresh(record, now=now, grace=self.config.refresh_reuse_grace)
        if decision is RefreshDecision.REUSE_DETECTED:
            self.observer.refresh_reuse_detected(key_id=holder.id, family_id=record.family_id)
            self.observer.authentication_failed("refresh_token_reused", key_id=holder.id)
            await self.storage.refresh_tokens.revoke_family(
                record.family_id,
                at=now,
                access_tokens_until=self._family_deny_until(now),
                audit=self._audit(
                    "refresh.reuse_detected",
                    holder.id,
                    record.subject,
                    request_id,
                    now,
                    family_id=record.family_id,
                    refresh_token_id=record.id,
                    outcome="failure",
                ),
            )
            self.revocations.revoke_family(
                record.family_id, until=int(self._family_deny_until(now).timestamp())
            )
            raise InvalidGrantError(_BAD_REFRESH)
        if decision not in (RefreshDecision.ROTATE, RefreshDecision.REUSE_LEGACY):
            self.observer.authentication_failed(_REFRESH_REFUSALS[decision], key_id=holder.id)
            raise InvalidGrantError(_BAD_REFRESH)
        grant = self._refresh_grant(record, holder, scopes)
        access = self._issue(holder, grant, now, family=record.family_id)
        if decision is RefreshDecision.REUSE_LEGACY:
            self._refreshed(rotating=False, key_id=holder.id, jti=access.jti)
            return TokenPair(access=access, scopes=grant.scopes)
        secret = generate_secret(SecretKind.REFRESH_TOKEN)
        successor = RefreshTokenRecord(
            id=secret.id,
            family_id=record.family_id,
            parent_id=record.id,
            token_hash=self._pepper.hash(secret.value, SecretKind.REFRESH_TOKEN),
            subject=record.subject,
            scope=record.scope,  # the family keeps its original grant; narrowing is per token
            created_at=now,
            expires_at=record.expires_at,  # absolute: rotation never extends a family
            rotating=True,
            key_id=record.key_id,
            user_id=record.user_id,
            identifier=record.identifier,
        )
        rotated = await self.storage.refresh_tokens.rotate(
            record.id,
            successor,
            now=now,
            audit=self._audit(
                "token.refreshed",
                holder.id,
                record.subject,
                request_id,
                now,
                jti=access.jti,
                refresh_token_id=successor.id,
                parent_id=record.id,
                family_id=record.family_id,
            ),
        )
        if not rotated:  # another request rotated it first: a concurrent replay
            self.observer.authentication_failed("refresh_token_replayed", key_id=holder.id)
            raise InvalidGrantError(_BAD_REFRESH)
        self._refreshed(rotating=True, key_id=holder.id, jti=access.jti)
        return TokenPair(
            access=access,
            scopes=grant.scopes,
            refresh_token=secret.value,
            refresh_expires_at=successor.expires_at,
        )

    async def revoke_token(
        self,
        token: str,
        *,
        client: str | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> bool:
        """Revoke a refresh token (its whole family) or an access token (by ``jti``).

        Revoking a refresh token also refuses every access token issued from its family
        (RFC 7009 §2.1). ``client``, the id of an authenticated client, must be the one
        the token was issued to (RFC 7009 §2.1); None (no client authentication) lets the
        token itself prove possession.

        RFC 7009 §2.2: an unknown or invalid token is not an error; returns False.

        Raises:
            UnauthorizedClientError: ``client`` is not the client the token was issued to;
                nothing was revoked.
        """
        now = self._clock()
        if looks_generated(token):
            try:
                parsed = parse_secret(token, SecretKind.REFRESH_TOKEN)
            except MalformedSecretError:
                return False
            found = await self.storage.refresh_tokens.find_with_key(
                self._pepper.hash(parsed.value, SecretKind.REFRESH_TOKEN)
            )
            if found is None:
                return False
            record = found[0]
            if client is not None and client != record.key_id:
                self.observer.authentication_failed("wrong_client", key_id=client)
                raise UnauthorizedClientError(_NOT_YOUR_TOKEN)
            revoked = await self.storage.refresh_tokens.revoke_family(
                record.family_id,
                at=now,
                access_tokens_until=self._family_deny_until(now),
                audit=self._audit(
                    "refresh.revoked",
                    record.key_id or record.user_id,
                    actor or record.subject,
                    request_id,
                    now,
                    family_id=record.family_id,
                ),
            )
            self.revocations.revoke_family(
                record.family_id, until=int(self._family_deny_until(now).timestamp())
            )
            return revoked > 0
        try:
            verified = self.verifier.verify(token)
        except InvalidTokenError:
            return False
        if client is not None and client != verified.client_id:
            self.observer.authentication_failed("wrong_client", key_id=client)
            raise UnauthorizedClientError(_NOT_YOUR_TOKEN)
        expires_at = datetime.fromtimestamp(verified.expires_at, UTC)
        await self.storage.revocations.revoke_access_token(
            verified.jti,
            expires_at=expires_at,
            audit=self._audit(
                "token.revoked",
                verified.client_id,
                actor or verified.subject,
                request_id,
                now,
                jti=verified.jti,
            ),
        )
        self.revocations.revoke_token(verified.jti, expires_at=verified.expires_at)
        return True

    def validate(self, token: str, *, required_scopes: Iterable[str] = ()) -> VerifiedToken:
        """Verify an access token against the current keys and revocation state.

        Raises:
            InvalidTokenError: the token is not valid.
            InsufficientScopeError: a required scope is missing.
        """
        try:
            return self.verifier.verify(token, required_scopes=required_scopes)
        except InsufficientScopeError:
            self.observer.authentication_failed("insufficient_scope")
            raise
        except InvalidTokenError:
            self.observer.authentication_failed("invalid_token")
            raise

    def signing_key_age(self) -> timedelta | None:
        """How long the active signing key has been signing (None before `start`)."""
        if self._signing_key_since is None:
            return None
        return self._clock() - self._signing_key_since

    async def reload_revocations(self) -> RevocationSnapshot:
        """Replace the in-memory revocation state with what storage holds now."""
        snapshot = await self.storage.revocations.snapshot(
            now=self._clock(),
            # A subject revoked longer ago than this has no unexpired token left.
            max_token_lifetime=self.config.access_token_lifetime
            + timedelta(seconds=self.config.leeway + REVOCATION_MARGIN),
        )
        self.revocations.replace(tokens=snapshot.tokens, subjects=snapshot.subjects)
        return snapshot

    # -- users -------------------------------------------------------------------------

    async def create_user(
        self,
        email: str,
        password: str,
        *,
        roles: Iterable[str] = (),
        scopes: Iterable[str] | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> UserRecord:
        """Create a user who logs in with ``email`` and ``password``.

        The email is stored as given and must be unique ignoring letter case. Roles and
        scopes are checked against the claims policy now, as for keys.

        Raises:
            InvalidRequestError: not an email address.
            WeakPasswordError: the password breaks the password rules.
            PolicyViolation: a role or scope the policy does not allow.
            ConflictError: a user with this email exists.
        """
        now = self._clock()
        check_email(email)
        check_new_password(password, email=email)
        roles, scopes = tuple(roles), None if scopes is None else tuple(sorted(set(scopes)))
        self.policy.build_claims(
            roles=roles or None,
            requested_scopes=scopes,
            key_scopes=scopes,
            extras=self._password_claims(),
        )
        password_hash = await self.passwords.run(self.passwords.hasher.hash, password)
        record = UserRecord(
            id=new_user_id(),
            email=email,
            email_key=email_key(email),
            password_hash=password_hash,
            created_at=now,
            roles=roles,
            scopes=scopes,
            password_changed_at=now,
        )
        audit = self._audit(
            "user.created", record.id, actor, request_id, now, email=email, roles=list(roles)
        )
        try:
            await self.storage.users.add(record, audit=audit)
        except ConflictError as exc:  # the id is new: only the email's unique key can clash
            raise ConflictError(DUPLICATE_EMAIL) from exc
        return record

    async def get_user(self, user_id: str) -> UserRecord:
        """Return the user with this id.

        Raises:
            NotFoundError: no such user.
        """
        record = await self.storage.users.get(user_id)
        if record is None:
            raise NotFoundError(f"no user with id {user_id!r}")
        return record

    async def find_user(self, email: str) -> UserRecord:
        """Return the user with this email (any letter case).

        Raises:
            NotFoundError: no such user.
        """
        record = await self.storage.users.find_by_email(email_key(email))
        if record is None:
            raise NotFoundError("no user with this email")
        return record

    async def list_users(
        self, *, limit: int = 50, after: str | None = None, include_disabled: bool = True
    ) -> UserPage:
        """One page of users ordered by id; pass ``next_after`` back for the next page."""
        if not 1 <= limit <= 1000:
            raise PolicyViolation("limit", limit, "must be between 1 and 1000")
        rows = await self.storage.users.list(
            limit=limit + 1, after=after, include_disabled=include_disabled
        )
        page = rows[:limit]
        return UserPage(users=page, next_after=page[-1].id if len(rows) > limit else None)

    async def disable_user(
        self,
        user_id: str,
        *,
        reason: str = "",
        actor: str | None = None,
        request_id: str | None = None,
    ) -> UserRecord:
        """Disable a user: no more logins or refreshes; their refresh and access tokens die.

        Raises:
            NotFoundError: no such user.
        """
        now = self._clock()
        audit = self._audit("user.disabled", user_id, actor, request_id, now, reason=reason)
        record = await self.storage.users.set_disabled(
            user_id, disabled_at=now, reason=reason or None, audit=audit
        )
        if record is None:
            raise NotFoundError(f"no user with id {user_id!r}")
        if record.tokens_revoked_at is not None:
            revoked_at = int(record.tokens_revoked_at.timestamp())
            self.revocations.revoke_subject(record.subject, at=revoked_at)
        return record

    async def enable_user(
        self, user_id: str, *, actor: str | None = None, request_id: str | None = None
    ) -> UserRecord:
        """Let a disabled user log in again (their old refresh tokens stay revoked).

        Raises:
            NotFoundError: no such user.
        """
        now = self._clock()
        record = await self.storage.users.set_disabled(
            user_id,
            disabled_at=None,
            reason=None,
            audit=self._audit("user.enabled", user_id, actor, request_id, now),
        )
        if record is None:
            raise NotFoundError(f"no user with id {user_id!r}")
        return record

    async def set_user_password(
        self,
        user_id: str,
        password: str,
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> UserRecord:
        """Give a user a new password; their refresh tokens are revoked (sessions end).

        Raises:
            NotFoundError: no such user.
            WeakPasswordError: the password breaks the password rules.
        """
        user = await self.get_user(user_id)
        check_new_password(password, email=user.email)
        password_hash = await self.passwords.run(self.passwords.hasher.hash, password)
        now = self._clock()
        record = await self.storage.users.set_password(
            user_id,
            password_hash=password_hash,
            at=now,
            audit=self._audit("user.password_changed", user_id, actor, request_id, now),
        )
        if record is None:
            raise NotFoundError(f"no user with id {user_id!r}")
        return record

    async def login(
        self,
        email: str,
        password: str,
        *,
        scopes: Iterable[str] | None = None,
        refresh: bool = True,
        request_id: str | None = None,
    ) -> TokenPair:
        """Trade an email and a password for an access token and a rotating refresh token.

        An unknown email, a wrong password and a disabled user fail alike, after the same
        argon2 work (a dummy verification for unknown emails; ASVS 6.3.8). A hash made
        with other parameters is replaced on success. ``refresh`` False issues only the
        access token (``POST /login``).

        Raises:
            InvalidGrantError: the email or password is not valid, or the user is disabled.
            PolicyViolation: a requested scope the user or the policy does not allow.
        """
        now = self._clock()
        if not _could_be_account(email) or len(password) > MAX_PASSWORD_LENGTH:
            self.observer.authentication_failed("unknown_email")
            raise InvalidGrantError(_BAD_LOGIN)  # no account can match: no work to spend
        user = await self.storage.users.find_by_email(email_key(email))
        if user is None:
            await self.passwords.run(self.passwords.hasher.verify_dummy, password)
            await self.storage.audit.record(
                self._audit(
                    "user.login_failed",
                    None,
                    None,
                    request_id,
                    now,
                    outcome="failure",
                    reason="unknown_email",
                )
            )
            self.observer.authentication_failed("unknown_email")
            raise InvalidGrantError(_BAD_LOGIN)
        hasher = self.passwords.hasher
        matches = await self.passwords.run(hasher.verify, user.password_hash, password)
        if not matches or not user.is_active:
            failed = self._audit(
                "user.login_failed",
                user.id,
                user.subject,
                request_id,
                now,
                outcome="failure",
                reason="disabled" if matches else "wrong_password",
            )
            if matches:
                await self.storage.audit.record(failed)
            else:
                await self.storage.users.record_failed_login(user.id, at=now, audit=failed)
            reason = "user_unusable" if matches else "wrong_password"
            self.observer.authentication_failed(reason, key_id=user.id)
            raise InvalidGrantError(_BAD_LOGIN)
        grant = self._grant(user, scopes)
        rehashed = None
        if hasher.needs_rehash(user.password_hash):
            rehashed = await self.passwords.run(hasher.hash, password)
        secret = generate_secret(SecretKind.REFRESH_TOKEN) if refresh else None
        access = self._issue(user, grant, now, family=None if secret is None else secret.id)
        await self.storage.users.record_login(
            user.id,
            at=now,
            audit=self._audit(
                "user.login",
                user.id,
                user.subject,
                request_id,
                now,
                jti=access.jti,
                rehashed=rehashed is not None,
            ),
            rehashed_password=rehashed,
        )
        self.observer.token_issued("password", key_id=user.id, jti=access.jti)
        if secret is None:
            return TokenPair(access=access, scopes=grant.scopes)
        token = RefreshTokenRecord(
            id=secret.id,
            family_id=secret.id,
            token_hash=self._pepper.hash(secret.value, SecretKind.REFRESH_TOKEN),
            subject=user.subject,
            scope=tuple(sorted(grant.scopes)),
            created_at=now,
            expires_at=now + self.config.refresh_token_lifetime,
            rotating=True,
            user_id=user.id,
        )
        await self.storage.refresh_tokens.add(
            token,
            audit=self._audit(
                "token.issued",
                user.id,
                user.subject,
                request_id,
                now,
                jti=access.jti,
                refresh_token_id=token.id,
                rotating=True,
            ),
        )
        return TokenPair(
            access=access,
            scopes=grant.scopes,
            refresh_token=secret.value,
            refresh_expires_at=token.expires_at,
        )

    async def logout(self, refresh_token: str, *, request_id: str | None = None) -> bool:
        """End a session: revoke the refresh token's whole family.

        Returns False for an unknown, malformed or already revoked token (the caller's
        answer is the same either way, RFC 7009 §2.2).
        """
        now = self._clock()
        try:
            parsed = parse_secret(refresh_token, SecretKind.REFRESH_TOKEN)
        except MalformedSecretError:
            return False
        found = await self.storage.refresh_tokens.find_with_key(
            self._pepper.hash(parsed.value, SecretKind.REFRESH_TOKEN)
        )
        if found is None:
            return False
        record = found[0]
        action = "user.logout" if record.user_id is not None else "refresh.revoked"
        until = self._family_deny_until(now)
        revoked = await self.storage.refresh_tokens.revoke_family(
            record.family_id,
            at=now,
            access_tokens_until=until,
            audit=self._audit(
                action,
                record.user_id or record.key_id,
                record.subject,
                request_id,
                now,
                family_id=record.family_id,
            ),
        )
        self.revocations.revoke_family(record.family_id, until=int(until.timestamp()))
        return revoked > 0

    # -- signing keys ------------------------------------------------------------------

    async def ensure_signing_key(self) -> None:
        """Create the first active signing key if there is none, then load the key set.

        Safe when several instances start together on an empty database: storage lets
        exactly one ACTIVE key in, and the others load it.
        """
        records = await self.storage.signing_keys.list()
        if not any(r.state is SigningKeyState.ACTIVE for r in records):
            now = self._clock()
            key = SigningKey.generate(self.config.signing_algorithm)
            await self.storage.signing_keys.add(
                self._signing_record(key, SigningKeyState.ACTIVE, now, activated_at=now),
                audit=self._audit(
                    "signing_key.created", key.kid, None, None, now, alg=key.alg, state="active"
                ),
            )
        await self.reload_signing_keys()

    async def import_signing_key(
        self, key: SigningKey, *, actor: str | None = None, request_id: str | None = None
    ) -> bool:
        """Make a key supplied by the operator (e.g. JWThenticator's RSA key) the active one.

        Idempotent: a key already stored changes nothing and returns False. Otherwise it
        is stored pending and activated at once (the previous active key is retired and
        stays published until its tokens expire).
        """
        records = await self.storage.signing_keys.list()
        if any(record.kid == key.kid for record in records):
            return False
        now = self._clock()
        state = (
            SigningKeyState.PENDING
            if any(r.state is SigningKeyState.ACTIVE for r in records)
            else SigningKeyState.ACTIVE
        )
        added = await self.storage.signing_keys.add(
            self._signing_record(
                key, state, now, activated_at=now if state is SigningKeyState.ACTIVE else None
            ),
            audit=self._audit("signing_key.imported", key.kid, actor, request_id, now, alg=key.alg),
        )
        if added and state is SigningKeyState.PENDING:
            await self._activate(key.kid, now, actor, request_id)
        await self.reload_signing_keys()
        return added

    async def reload_signing_keys(self) -> KeySet:
        """Load the published keys (pending, active, retired-but-published) from storage."""
        now = self._clock()
        records = await self.storage.signing_keys.list()
        active: SigningKey | None = None
        since: datetime | None = None
        published: list[VerificationKey] = []
        for record in records:
            if record.publish_until is not None and record.publish_until <= now:
                continue
            if record.state is SigningKeyState.ACTIVE:
                active = self._unseal(record)
                since = record.activated_at or record.created_at
            else:
                published.append(VerificationKey.from_jwk(record.public_jwk))
        key_set = KeySet(signing_key=active, verification_keys=tuple(published))
        self._signing_key = active
        self._signing_key_since = since
        self.verifier.set_keys(key_set)
        return key_set

    async def rotate_signing_key(
        self,
        *,
        immediately: bool = False,
        algorithm: str | None = None,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> str:
        """Start a signing-key rotation and return the new ``kid``.

        The new key is published at once and starts signing once it has been in the
        JWKS for ``signing_key_publish_delay`` (`activate_due_signing_keys`), so no
        verifier meets a ``kid`` it could not have fetched. ``immediately`` skips the
        wait (an emergency: verifiers refetch their JWKS on the unknown ``kid``).
        """
        now = self._clock()
        key = SigningKey.generate(algorithm or self.config.signing_algorithm)
        await self.storage.signing_keys.add(
            self._signing_record(key, SigningKeyState.PENDING, now),
            audit=self._audit(
                "signing_key.created", key.kid, actor, request_id, now, alg=key.alg, state="pending"
            ),
        )
        if immediately:
            await self._activate(key.kid, now, actor, request_id)
        await self.reload_signing_keys()
        return key.kid

    async def activate_due_signing_keys(self) -> list[str]:
        """Activate pending keys that have been published long enough; return their kids."""
        now = self._clock()
        due = [
            r
            for r in await self.storage.signing_keys.list()
            if r.state is SigningKeyState.PENDING
            and r.created_at + self.config.signing_key_publish_delay <= now
        ]
        activated = []
        for record in due[-1:]:  # the newest due key wins; older pending ones stay published
            if await self._activate(record.kid, now, None, None):
                activated.append(record.kid)
        if activated:
            await self.reload_signing_keys()
        return activated

    async def _activate(
        self, kid: str, now: datetime, actor: str | None, request_id: str | None
    ) -> bool:
        # A retired key stays published until every token it signed has expired.
        publish_until = (
            now + self.config.access_token_lifetime + timedelta(seconds=self.config.leeway)
        )
        return await self.storage.signing_keys.activate(
            kid,
            at=now,
            retired_publish_until=publish_until,
            audit=self._audit("signing_key.activated", kid, actor, request_id, now),
        )

    # -- helpers -----------------------------------------------------------------------

    # -- keyless clients: public keys and private_key_jwt ------------------------------

    async def list_public_keys(self, key_id: str) -> list[ClientPublicKeyRecord]:
        """The public keys API key ``key_id`` authenticates with, oldest first.

        Raises:
            NotFoundError: no such key.
        """
        await self.get_key(key_id)
        return await self.storage.client_keys.list(key_id)

    async def add_public_keys(
        self,
        key_id: str,
        public_keys: Iterable[VerificationKey],
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> list[ClientPublicKeyRecord]:
        """Let API key ``key_id`` also authenticate with these public keys (rotation).

        Keys it already has are left as they are. Returns all its public keys.

        Raises:
            NotFoundError: no such key.
            ConflictError: the key is revoked.
            InvalidRequestError: no keys given, or more than `MAX_CLIENT_PUBLIC_KEYS`.
        """
        keys = _distinct(public_keys)
        if not keys:
            raise InvalidRequestError("give at least one public key")
        record = await self.get_key(key_id)
        if record.revoked_at is not None:
            raise ConflictError(f"API key {key_id!r} is revoked")
        now = self._clock()
        audit = self._audit(
            "key.public_keys_added", key_id, actor, request_id, now, kids=[k.kid for k in keys]
        )
        stored = await self.storage.client_keys.add(
            [_public_key_record(key_id, key, now) for key in keys],
            limit=MAX_CLIENT_PUBLIC_KEYS,
            audit=audit,
        )
        if stored is None:
            raise InvalidRequestError(
                f"a key may have at most {MAX_CLIENT_PUBLIC_KEYS} public keys; remove one first"
            )
        return stored

    async def remove_public_key(
        self,
        key_id: str,
        kid: str,
        *,
        actor: str | None = None,
        request_id: str | None = None,
    ) -> None:
        """Stop API key ``key_id`` authenticating with public key ``kid``.

        Raises:
            NotFoundError: no such key, or it has no public key ``kid``.
        """
        await self.get_key(key_id)
        now = self._clock()
        audit = self._audit("key.public_key_removed", key_id, actor, request_id, now, kid=kid)
        if not await self.storage.client_keys.remove(key_id, kid, audit=audit):
            raise NotFoundError(f"API key {key_id!r} has no public key {kid!r}")

    async def _assertion_client(self, credential: ClientAssertion, now: datetime) -> ApiKeyRecord:
        """The key a ``private_key_jwt`` assertion authenticates (RFC 7523 §3), or raise.

        Raises:
            InvalidClientError: any rule fails, or the assertion's ``jti`` was seen before.
        """
        try:
            client_id = credential.client_id or assertion_client_id(credential.assertion)
        except InvalidClientError:
            self.observer.authentication_failed("invalid_client_assertion")
            raise
        record = await self.storage.keys.get(client_id)
        stored = [] if record is None else await self.storage.client_keys.list(client_id)
        if record is None or not stored:
            self.observer.authentication_failed("unknown_key")
            raise InvalidClientError(_BAD_ASSERTION)
        reason = _key_refusal(record, None, now)
        if reason is not None:
            self.observer.authentication_failed(reason, key_id=record.id)
            raise InvalidClientError(_BAD_ASSERTION)
        leeway = self.config.leeway
        try:
            verified = verify_client_assertion(
                credential.assertion,
                client_id=client_id,
                keys=[VerificationKey.from_jwk(key.jwk) for key in stored],
                audiences=credential.audiences,
                now=int(now.timestamp()),
                leeway=leeway,
            )
        except InvalidClientError:
            self.observer.authentication_failed("invalid_client_assertion", key_id=record.id)
            raise
        # Single use across every instance: kept until the assertion could no longer pass.
        keep_until = datetime.fromtimestamp(verified.expires_at + leeway, UTC)
        if not await self.replays.claim(verified.replay_id, expires_at=keep_until, now=now):
            self.observer.authentication_failed("client_assertion_replayed", key_id=record.id)
            raise InvalidClientError("the client assertion was used before (its jti is spent)")
        return record

    async def _find_key(self, key: str, now: datetime) -> ApiKeyRecord | None:
        """Find a usable key by its secret; malformed keys never reach storage."""
        record = await self._lookup_key(key, now)
        return record if record is not None and record.is_usable(now) else None

    async def _lookup_key(self, key: str, now: datetime) -> ApiKeyRecord | None:
        """Find a key by its secret, usable or not.

        Raises:
            InvalidGrantError: the key is malformed (it never reaches storage).
        """
        if looks_generated(key):
            value = _parse_or_invalid(key, SecretKind.API_KEY, _BAD_KEY).value
        else:
            try:
                value = check_legacy_key(key)
            except MalformedSecretError as exc:
                raise InvalidGrantError(_BAD_KEY) from exc
        key_hash = self._pepper.hash(value, SecretKind.API_KEY)
        record = await self.storage.keys.find_by_hash(key_hash, now=now)
        if record is None and not looks_generated(key):
            record = await self._upgrade_imported_key(value, key_hash, now)
        return record

    async def _upgrade_imported_key(
        self, value: str, key_hash: bytes, now: datetime
    ) -> ApiKeyRecord | None:
        """Find a key imported from JWThenticator by its SHA-512 and re-hash it with the pepper.

        The secret was just presented, so its unpeppered hash leaves the database now.
        """
        legacy_hash = legacy_key_hash(value)
        record = await self.storage.keys.find_by_hash(legacy_hash, now=now)
        if record is None:
            return None
        audit = self._audit("key.hash_upgraded", record.id, None, None, now, source="jwthenticator")
        try:
            upgraded = await self.storage.keys.upgrade_hash(
                record.id, legacy_hash=legacy_hash, new_hash=key_hash, audit=audit
            )
        except ConflictError:  # the same key registered again since: keep the legacy row
            return record
        # None: a concurrent request upgraded it first; the record found still holds.
        return record if upgraded is None else upgraded

    def _check_refresh_client(
        self, record: RefreshTokenRecord, holder: ApiKeyRecord | UserRecord, client: str | None
    ) -> None:
        """RFC 6749 §6: a token issued to a key needs that key's client authentication.

        A login's token belongs to no client that could authenticate (a public client's).
        """
        if client == record.key_id:
            return
        if client is None:
            self.observer.authentication_failed("client_authentication_required", key_id=holder.id)
            raise InvalidClientError(_CLIENT_REQUIRED)
        self.observer.authentication_failed("wrong_client", key_id=holder.id)
        raise InvalidGrantError(_NOT_YOUR_REFRESH)

    def _refreshed(self, *, rotating: bool, key_id: str, jti: str) -> None:
        self.observer.token_refreshed(rotating=rotating, key_id=key_id, jti=jti)
        self.observer.token_issued("refresh_token", key_id=key_id, jti=jti)

    def _refresh_grant(
        self,
        record: RefreshTokenRecord,
        holder: ApiKeyRecord | UserRecord,
        scopes: Iterable[str] | None,
    ) -> Grant:
        original = frozenset(record.scope)
        if scopes is not None:
            wanted = frozenset(scopes)
            beyond = wanted - original
            if beyond:
                # RFC 6749 §6: a refresh may narrow the grant, never widen it (T-RT-05).
                raise PolicyViolation(
                    "scope", " ".join(sorted(beyond)), "not part of the original grant"
                )
        else:
            wanted = original if holder.scopes is None else original & frozenset(holder.scopes)
        return self._grant(holder, wanted)

    def _grant(self, holder: ApiKeyRecord | UserRecord, scopes: Iterable[str] | None) -> Grant:
        """What a token for ``holder`` may carry: a key's stored claims, or a password login's."""
        if isinstance(holder, UserRecord):
            try:
                return self.policy.build_claims(
                    roles=holder.roles or None,
                    requested_scopes=scopes,
                    key_scopes=holder.scopes,
                    extras=self._password_claims(),
                )
            except PolicyViolation as exc:  # the policy's words speak of keys
                reason = exc.reason.replace("this key and its roles", "this user and their roles")
                if reason == exc.reason:
                    raise
                raise PolicyViolation(exc.claim, exc.value, reason) from exc
        return self.policy.build_claims(
            roles=holder.roles or None,
            requested_scopes=scopes,
            key_scopes=holder.scopes,
            extras=holder.extra_claims,
        )

    def _password_claims(self) -> dict[str, Any]:
        # Only the claims the policy declares: a policy without ``level`` gets none.
        declared = {rule.name for rule in self.policy.claims}
        claims = {"level": PASSWORD_LEVEL, "factor": PASSWORD_FACTOR}
        return {name: value for name, value in claims.items() if name in declared}

    def _family_deny_until(self, now: datetime) -> datetime:
        """How long a revoked family's entry must refuse its access tokens.

        Past the longest an access token lives and is accepted, with a minute's margin for
        one issued by a request that read the family just before it was revoked.
        """
        return (
            now
            + self.config.access_token_lifetime
            + timedelta(seconds=self.config.leeway)
            + _FAMILY_DENY_MARGIN
        )

    def _issue(
        self,
        holder: ApiKeyRecord | UserRecord,
        grant: Grant,
        now: datetime,
        *,
        family: str | None = None,
    ) -> IssuedToken:
        if self._signing_key is None:
            raise SigningKeyError("no active signing key; call start() first")
        is_key = isinstance(holder, ApiKeyRecord)
        return issue_access_token(
            self._signing_key,
            issuer=self.config.issuer,
            audience=self.config.audience,
            subject=holder.subject,
            client_id=holder.id if is_key else LOGIN_CLIENT_ID,
            now=int(now.timestamp()),
            lifetime=self.config.access_lifetime_seconds,
            scopes=grant.scopes,
            identifier=holder.identifier if isinstance(holder, ApiKeyRecord) else None,
            extra_claims=grant.claims,
            family=family,
        )

    async def _touch(self, record: ApiKeyRecord, now: datetime) -> None:
        last = record.last_used_at
        if last is None or now - last >= self.config.last_used_resolution:
            await self.storage.keys.mark_used(record.id, at=now)

    def _signing_record(
        self,
        key: SigningKey,
        state: SigningKeyState,
        now: datetime,
        activated_at: datetime | None = None,
    ) -> SigningKeyRecord:
        return SigningKeyRecord(
            kid=key.kid,
            alg=key.alg,
            public_jwk=dict(key.verification_key.to_jwk()),
            sealed_private_key=self._key_wrapper.seal(key.kid, key.private_pem()),
            state=state,
            created_at=now,
            activated_at=activated_at,
        )

    def _unseal(self, record: SigningKeyRecord) -> SigningKey:
        key = SigningKey.from_pem(
            self._key_wrapper.open(record.kid, record.sealed_private_key), alg=record.alg
        )
        if key.kid != record.kid:
            raise SigningKeyError(f"stored signing key {record.kid!r} does not match its kid")
        return key

    @staticmethod
    def _audit(
        action: str,
        target_id: str | None,
        actor: str | None,
        request_id: str | None,
        now: datetime,
        *,
        outcome: str = "success",
        **detail: Any,
    ) -> AuditEvent:
        target_type = action.split(".", 1)[0]
        return AuditEvent(
            at=now,
            action=action,
            outcome=outcome,
            actor=actor,
            target_type=target_type,
            target_id=target_id,
            request_id=request_id,
            detail=detail,
        )

    async def list_signing_keys(self) -> list[SigningKeyRecord]:
        """Every stored signing key with its lifecycle state (no private material)."""
        return await self.storage.signing_keys.list()

    async def audit_events(
        self,
        *,
        limit: int,
        before: int | None = None,
        action: str | None = None,
        target_id: str | None = None,
    ) -> list[StoredAuditEvent]:
        """Audit events newest first, with ids below ``before``, optionally filtered."""
        return await self.storage.audit.list(
            limit=limit, before=before, action=action, target_id=target_id
        )


def _distinct(keys: Iterable[VerificationKey]) -> list[VerificationKey]:
    """Public keys without repeats (by thumbprint), at most `MAX_CLIENT_PUBLIC_KEYS`."""
    unique = list({key.kid: key for key in keys}.values())
    if len(unique) > MAX_CLIENT_PUBLIC_KEYS:
        raise InvalidRequestError(f"a key may have at most {MAX_CLIENT_PUBLIC_KEYS} public keys")
    return unique


def _public_key_record(key_id: str, key: VerificationKey, now: datetime) -> ClientPublicKeyRecord:
    return ClientPublicKeyRecord(
        key_id=key_id, kid=key.kid, alg=key.alg, jwk=dict(key.to_jwk()), created_at=now
    )


def _could_be_account(email: str) -> bool:
    try:
        check_email(email)
    except InvalidRequestError:
        return False
    return True


_REFRESH_REFUSALS: Final = {
    RefreshDecision.EXPIRED: "expired_refresh_token",
    RefreshDecision.REVOKED: "revoked_refresh_token",
    RefreshDecision.REPLAY_IN_GRACE: "refresh_token_replayed",
}


def _key_refusal(record: ApiKeyRecord, identifier: str | None, now: datetime) -> str | None:
    """Why a stored API key may not authenticate (an observer reason), or None if it may."""
    if record.revoked_at is not None:
        return "revoked_key"
    if not record.is_usable(now):
        return "expired_key"
    if identifier is not None and identifier != record.identifier:
        return "identifier_mismatch"
    return None


def _parse_or_invalid(value: str, kind: SecretKind, message: str) -> ParsedSecret:
    try:
        return parse_secret(value, kind)
    except MalformedSecretError as exc:
        raise InvalidGrantError(message) from exc
