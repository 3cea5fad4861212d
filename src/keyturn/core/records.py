"""Frozen records shared by the core, the storage layer and the service.

Times are timezone-aware UTC `datetime`s. Secrets never appear here, only their HMAC
(``*_hash``, 32 bytes); private signing keys only sealed (``sealed_private_key``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

__all__ = [
    "ApiKeyRecord",
    "AuditEvent",
    "ClientPublicKeyRecord",
    "RefreshTokenRecord",
    "SigningKeyRecord",
    "SigningKeyState",
    "UserRecord",
]


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key: who it belongs to, what it may ask for, and its lifecycle.

    ``previous_hash`` keeps the secret a rotation replaced working until
    ``previous_expires_at`` (the grace deadline).
    """

    id: str
    key_hash: bytes = field(repr=False)
    created_at: datetime
    identifier: str | None = None
    name: str | None = None
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] | None = None
    extra_claims: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)
    legacy: bool = False
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None
    revoked_reason: str | None = None
    previous_hash: bytes | None = field(default=None, repr=False)
    previous_expires_at: datetime | None = None
    #: Tokens for this key need a DPoP proof (RFC 9449): it never gets a bearer token.
    dpop_required: bool = False

    @property
    def subject(self) -> str:
        """The token subject for this key (RFC 9068 §2.2: the client itself)."""
        return f"key:{self.id}"

    @property
    def legacy_hash(self) -> bool:
        """True while the key carries an imported JWThenticator hash (SHA-512, 64 bytes).

        Replaced by the peppered HMAC (32 bytes) the first time the key is presented.
        """
        return len(self.key_hash) == 64

    def is_usable(self, now: datetime) -> bool:
        """True when the key is neither revoked nor expired at ``now``."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


@dataclass(frozen=True, slots=True)
class UserRecord:
    """A person who logs in with an email and a password.

    ``email`` is kept as given; ``email_key`` (its case fold) is what lookups compare.
    ``password_hash`` is an argon2id PHC string, never the password. ``failed_logins``
    counts wrong passwords since the last successful login.
    """

    id: str
    email: str
    email_key: str
    password_hash: str = field(repr=False)
    created_at: datetime
    roles: tuple[str, ...] = ()
    scopes: tuple[str, ...] | None = None
    disabled_at: datetime | None = None
    disabled_reason: str | None = None
    #: Access tokens issued up to this moment are refused (set when the user is disabled,
    #: kept when they are enabled again, so old tokens stay dead).
    tokens_revoked_at: datetime | None = None
    password_changed_at: datetime | None = None
    last_login_at: datetime | None = None
    failed_logins: int = 0
    last_failed_login_at: datetime | None = None

    @property
    def subject(self) -> str:
        """The token subject for this user (``user:`` keeps it apart from keys)."""
        return f"user:{self.id}"

    @property
    def is_active(self) -> bool:
        """True unless the user is disabled."""
        return self.disabled_at is None


@dataclass(frozen=True, slots=True)
class RefreshTokenRecord:
    """A stored refresh token (its hash) and its place in a rotation family.

    ``rotating`` False marks a legacy JWThenticator token: reusable until ``expires_at``.
    ``expires_at`` is absolute: a rotated successor inherits its family's deadline.
    ``dpop_jkt``: the family is bound to the DPoP key with this thumbprint (RFC 9449 §5,
    a public client's tokens); redeeming it needs a proof by that key.
    """

    id: str
    family_id: str
    token_hash: bytes = field(repr=False)
    subject: str
    scope: tuple[str, ...]
    created_at: datetime
    expires_at: datetime
    rotating: bool = True
    parent_id: str | None = None
    key_id: str | None = None
    user_id: str | None = None
    identifier: str | None = None
    used_at: datetime | None = None
    replaced_by: str | None = None
    revoked_at: datetime | None = None
    dpop_jkt: str | None = None


class SigningKeyState(StrEnum):
    """Where a signing key is in its life: published first, then signing, then verify-only."""

    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class SigningKeyRecord:
    """A stored signing key: public JWK in the clear, private key sealed with the KEK.

    ``publish_until`` is when a retired key may leave the JWKS: after every token it
    signed has expired (retirement + maximum token lifetime + leeway).
    """

    kid: str
    alg: str
    public_jwk: Mapping[str, Any]
    sealed_private_key: bytes = field(repr=False)
    state: SigningKeyState
    created_at: datetime
    activated_at: datetime | None = None
    retired_at: datetime | None = None
    publish_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One security-relevant state change, written in the same transaction as the change.

    ``detail`` holds ids and reasons, never a secret, token or password.
    """

    at: datetime
    action: str
    outcome: str = "success"
    actor: str | None = None
    target_type: str | None = None
    target_id: str | None = None
    request_id: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClientPublicKeyRecord:
    """A public key an API key (an OAuth client) proves possession of (``private_key_jwt``).

    ``kid`` is the RFC 7638 thumbprint of ``jwk``; ``alg`` the one algorithm it verifies.
    Keyturn never holds the private half.
    """

    key_id: str
    kid: str
    alg: str
    jwk: Mapping[str, Any]
    created_at: datetime
