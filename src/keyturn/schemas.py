"""Request and response bodies (pydantic): the HTTP API, its OpenAPI document and the CLI.

The admin API renders records with `KeyOut.of` and `UserOut.of`, and the CLI prints the
same views; the CLI checks its options with `fits` against the types the API validates
with (`ScopeName`, `RoleName`, `Label`).

Every request model forbids unknown fields (T-IN-07, T-AZ-03) and bounds every string
(T-IN-09), so oversized or extra input is a 400 before it reaches the service.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
)

if TYPE_CHECKING:
    from keyturn.core.records import ApiKeyRecord, UserRecord

__all__ = [
    "MAX_PASSWORD_FIELD",
    "MAX_SECRET",
    "MAX_TOKEN",
    "AuditEventOut",
    "AuditPage",
    "AuthenticateRequest",
    "BoolResponse",
    "CreateKeyRequest",
    "CreateUserRequest",
    "CreatedKeyOut",
    "DisableUserRequest",
    "IntrospectionOut",
    "JWKSOut",
    "JWKSetIn",
    "KeyOut",
    "KeyPageOut",
    "KeyRequest",
    "Label",
    "LegacyTokenResponse",
    "LoginResponse",
    "PublicKeyOut",
    "PublicKeysOut",
    "RefreshRequest",
    "RegisterKeyRequest",
    "RevokeKeyRequest",
    "RoleName",
    "RotateKeyRequest",
    "ScopeName",
    "SetPasswordRequest",
    "SigningKeyOut",
    "TokenResponse",
    "UserOut",
    "UserPageOut",
    "ValidateRequest",
    "fits",
]

MAX_SECRET = 1024
MAX_TOKEN = 8192
#: Above the password rules' own cap, so their message (not a schema one) explains it.
MAX_PASSWORD_FIELD = 4096


def _canonical_uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError as exc:
        raise ValueError("Not a valid UUID.") from exc


#: JWThenticator's identifiers are UUIDs; stored and compared in canonical form.
Identifier = Annotated[
    str, Field(max_length=64, json_schema_extra={"format": "uuid"}), AfterValidator(_canonical_uuid)
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, hide_input_in_errors=True)


# -- JWThenticator-compatible bodies -----------------------------------------------------


class AuthenticateRequest(_Strict):
    """``POST /authenticate``: trade a key for a JWT and a refresh token."""

    key: SecretStr = Field(max_length=MAX_SECRET)
    identifier: Identifier


class RefreshRequest(_Strict):
    """``POST /refresh``: a new JWT for a (reused) refresh token."""

    refresh_token: SecretStr = Field(max_length=MAX_SECRET)
    identifier: Identifier


class ValidateRequest(_Strict):
    """``POST /validate``: is this JWT valid?"""

    jwt: SecretStr = Field(max_length=MAX_TOKEN)


class RegisterKeyRequest(_Strict):
    """``POST /register_key`` (admin): register a caller-chosen key for an identifier."""

    key: SecretStr = Field(max_length=MAX_SECRET)
    identifier: Identifier


class KeyRequest(_Strict):
    """``POST /is_key_registered`` (admin)."""

    key: SecretStr = Field(max_length=MAX_SECRET)


class LegacyTokenResponse(BaseModel):
    """JWThenticator's token response: exactly these fields, nothing more."""

    jwt: str
    refresh_token: str | None = None


class BoolResponse(BaseModel):
    """JWThenticator's boolean response."""

    result: bool
    message: str | None = None


# -- OAuth-style v1 bodies -------------------------------------------------------------


class TokenResponse(BaseModel):
    """RFC 6749 §5.1 access-token response."""

    access_token: str
    #: ``Bearer``, or ``DPoP`` for a token bound to a DPoP key (RFC 9449 §5).
    token_type: str = "Bearer"  # noqa: S105 -- the RFC 6750 scheme name
    expires_in: int
    refresh_token: str | None = None
    scope: str


class LoginResponse(BaseModel):
    """``POST /login``: the access token, in the shape the aiohttp + PyJWT tutorial uses."""

    token: str


class IntrospectionOut(BaseModel):
    """RFC 7662 §2.2 response; for anything invalid only ``{"active": false}``."""

    model_config = ConfigDict(extra="allow")

    active: bool


class JWKSOut(BaseModel):
    """A JWK Set (RFC 7517 §5)."""

    keys: list[dict[str, Any]]


# -- admin bodies ----------------------------------------------------------------------

#: An RFC 6749 §3.3 scope token (1-128 characters).
ScopeName = Annotated[
    str, Field(min_length=1, max_length=128, pattern=r"^[\x21\x23-\x5b\x5d-\x7e]+$")
]
#: A role: letters, digits and ``_.:-`` (1-64 characters).
RoleName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: A key's name or identifier as the admin API bounds it (at most 200 characters).
Label = Annotated[str, Field(max_length=200)]


def fits(kind: Any, value: str) -> bool:
    """Whether ``value`` passes ``kind`` (`ScopeName`, `RoleName`, `Label`) as the API checks it."""
    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError:
        return False
    return True


class JWKSetIn(_Strict):
    """A JWK Set of a client's PUBLIC keys (RFC 7517 §5): ES256, EdDSA or RS256 >= 2048."""

    keys: list[dict[str, Any]] = Field(min_length=1, max_length=10)


class CreateKeyRequest(_Strict):
    """``POST /v1/admin/keys``: create a generated key (its secret is shown once).

    With ``jwks`` the key authenticates with ``private_key_jwt`` and gets no secret.
    """

    model_config = ConfigDict(extra="forbid", strict=False, hide_input_in_errors=True)

    name: str | None = Field(None, max_length=200)
    identifier: str | None = Field(None, max_length=200)
    roles: list[RoleName] = Field(default_factory=list, max_length=32)
    scopes: list[ScopeName] | None = Field(None, max_length=256)
    extra_claims: dict[str, Any] = Field(default_factory=dict, max_length=32)
    metadata: dict[str, Any] = Field(default_factory=dict, max_length=64)
    expires_at: datetime | None = None
    jwks: JWKSetIn | None = None
    #: RFC 9449: the key's tokens need a DPoP proof (it never gets a bearer token).
    dpop_required: bool = Field(False, strict=True)


class RevokeKeyRequest(_Strict):
    """``POST /v1/admin/keys/{id}/revoke``."""

    reason: str = Field("", max_length=255)  # the column's size


def _integral(value: Any) -> Any:
    """``394.0`` as ``394``: JSON Schema counts a number with no fraction as an integer."""
    if type(value) is float and value.is_integer():
        return int(value)
    return value


class RotateKeyRequest(_Strict):
    """``POST /v1/admin/keys/{id}/rotate``: a new secret; the old one lasts ``grace_seconds``."""

    grace_seconds: Annotated[int | None, BeforeValidator(_integral)] = Field(
        None, ge=0, le=30 * 86400
    )


class KeyOut(BaseModel):
    """An API key as the admin API shows it: never the secret or its hash."""

    id: str
    name: str | None
    identifier: str | None
    roles: list[str]
    scopes: list[str] | None
    extra_claims: dict[str, Any]
    metadata: dict[str, Any]
    legacy: bool
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    revoked_reason: str | None
    rotation_grace_until: datetime | None
    dpop_required: bool = False

    @classmethod
    def of(cls, record: ApiKeyRecord) -> KeyOut:
        """The admin view of a key: everything but its secret and hashes."""
        return cls(
            id=record.id,
            name=record.name,
            identifier=record.identifier,
            roles=list(record.roles),
            scopes=None if record.scopes is None else list(record.scopes),
            extra_claims=dict(record.extra_claims),
            metadata=dict(record.metadata),
            legacy=record.legacy,
            created_at=record.created_at,
            expires_at=record.expires_at,
            last_used_at=record.last_used_at,
            revoked_at=record.revoked_at,
            revoked_reason=record.revoked_reason,
            rotation_grace_until=record.previous_expires_at,
            dpop_required=record.dpop_required,
        )


class PublicKeyOut(BaseModel):
    """A public key a client signs ``private_key_jwt`` assertions with."""

    kid: str
    alg: str
    jwk: dict[str, Any]
    created_at: datetime


class PublicKeysOut(BaseModel):
    """A key's public keys, oldest first."""

    keys: list[PublicKeyOut]


class CreatedKeyOut(BaseModel):
    """A key just created or rotated, with its secret (shown this once).

    ``key`` is null for a key created with public keys only; ``public_keys`` lists them.
    """

    key: str | None
    record: KeyOut
    public_keys: list[PublicKeyOut] | None = None


class KeyPageOut(BaseModel):
    """One page of keys; pass ``next_after`` as ``after`` for the next."""

    keys: list[KeyOut]
    next_after: str | None


class SigningKeyOut(BaseModel):
    """A signing key's public facts."""

    kid: str
    alg: str
    state: str
    created_at: datetime
    activated_at: datetime | None
    retired_at: datetime | None
    publish_until: datetime | None


class AuditEventOut(BaseModel):
    """One audit event."""

    id: int
    at: datetime
    action: str
    outcome: str
    actor: str | None
    target_type: str | None
    target_id: str | None
    request_id: str | None
    detail: dict[str, Any]


class AuditPage(BaseModel):
    """Audit events, newest first; pass ``next_before`` as ``before`` for older ones."""

    events: list[AuditEventOut]
    next_before: int | None


class CreateUserRequest(_Strict):
    """``POST /v1/admin/users``: a person who logs in with an email and a password."""

    model_config = ConfigDict(extra="forbid", strict=False, hide_input_in_errors=True)

    email: str = Field(min_length=3, max_length=254)
    password: SecretStr = Field(max_length=MAX_PASSWORD_FIELD)
    roles: list[RoleName] = Field(default_factory=list, max_length=32)
    scopes: list[ScopeName] | None = Field(None, max_length=256)


class SetPasswordRequest(_Strict):
    """``POST /v1/admin/users/{id}/password``: a new password (the user's sessions end)."""

    password: SecretStr = Field(max_length=MAX_PASSWORD_FIELD)


class DisableUserRequest(_Strict):
    """``POST /v1/admin/users/{id}/disable``."""

    reason: str = Field("", max_length=255)


class UserOut(BaseModel):
    """A user as the admin API shows it: never the password or its hash."""

    id: str
    email: str
    roles: list[str]
    scopes: list[str] | None
    created_at: datetime
    disabled_at: datetime | None
    disabled_reason: str | None
    password_changed_at: datetime | None
    last_login_at: datetime | None
    failed_logins: int
    last_failed_login_at: datetime | None

    @classmethod
    def of(cls, record: UserRecord) -> UserOut:
        """The admin view of a user: everything but the password hash."""
        return cls(
            id=record.id,
            email=record.email,
            roles=list(record.roles),
            scopes=None if record.scopes is None else list(record.scopes),
            created_at=record.created_at,
            disabled_at=record.disabled_at,
            disabled_reason=record.disabled_reason,
            password_changed_at=record.password_changed_at,
            last_login_at=record.last_login_at,
            failed_logins=record.failed_logins,
            last_failed_login_at=record.last_failed_login_at,
        )


class UserPageOut(BaseModel):
    """One page of users; pass ``next_after`` as ``after`` for the next."""

    users: list[UserOut]
    next_after: str | None
