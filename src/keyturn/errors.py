"""Keyturn's exceptions: one tree, each class knowing its wire form.

Every error carries an ``error_code`` (the RFC 6749 §5.2 / RFC 6750 §3.1 name) and the
HTTP ``status_code`` the server answers with, so the HTTP layer renders all of them in one
place. Messages say what was wrong and never echo a token, key or password.

* KeyturnError
  + InvalidTokenError             401 invalid_token        (RFC 6750 §3.1)
  | + MalformedTokenError             not a compact JWS we accept (format, header)
  | + TokenSignatureError             unknown ``kid``, wrong ``alg``, bad signature
  | + TokenClaimsError                missing or mistyped claims, wrong ``iss``/``aud``/``typ``
  | + ExpiredTokenError               ``exp`` has passed
  | + ImmatureTokenError              ``nbf`` or ``iat`` in the future
  | + RevokedTokenError               the ``jti`` or its subject was revoked
  + InsufficientScopeError        403 insufficient_scope   (RFC 6750 §3.1)
  + InvalidRequestError           400 invalid_request
  | + MalformedSecretError            an API key or refresh token that cannot be ours
  | + WeakPasswordError               a new password breaks the password rules
  + PolicyViolation               400 invalid_scope / invalid_request
  + InvalidGrantError             400 invalid_grant        (RFC 6749 §5.2; bad key or refresh token)
  + InvalidClientError            401 invalid_client       (RFC 6749 §5.2; client auth failed)
  + UnsupportedGrantTypeError     400 unsupported_grant_type (RFC 6749 §5.2)
  + AdminCredentialError          401 unauthorized         (the admin API without its bearer token)
  + RequestRejectedError          400/413/415 invalid_request, payload_too_large, ...
  |                                   (the HTTP request itself: size, media type, JSON, fields)
  + RateLimitedError              429 rate_limited         (+ ``Retry-After``)
  + UnauthorizedClientError       400 unauthorized_client  (RFC 7009 §2.1; another client's token)
  + NotFoundError                 404 not_found
  + ConflictError                 409 conflict
  + SigningKeyError               500 server_error         (bad key material or config)
  + PepperMismatchError           500 server_error         (the database has another pepper)
  + StorageUnavailableError       503 temporarily_unavailable  (never a 401)
    + VerifierUnavailableError        the JWKS or the Keyturn server could not be reached
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "AdminCredentialError",
    "ConflictError",
    "ExpiredTokenError",
    "ImmatureTokenError",
    "InsufficientScopeError",
    "InvalidClientError",
    "InvalidGrantError",
    "InvalidRequestError",
    "InvalidTokenError",
    "KeyturnError",
    "MalformedSecretError",
    "MalformedTokenError",
    "NotFoundError",
    "PepperMismatchError",
    "PolicyViolation",
    "RateLimitedError",
    "RequestRejectedError",
    "RevokedTokenError",
    "SigningKeyError",
    "StorageUnavailableError",
    "TokenClaimsError",
    "TokenSignatureError",
    "UnauthorizedClientError",
    "UnsupportedGrantTypeError",
    "VerifierUnavailableError",
    "WeakPasswordError",
]


class KeyturnError(Exception):
    """Base class of every error Keyturn raises on purpose."""

    error_code: str = "server_error"
    status_code: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidTokenError(KeyturnError):
    """The access token is malformed, forged, expired, revoked or not meant for us."""

    error_code = "invalid_token"
    status_code = 401


class MalformedTokenError(InvalidTokenError):
    """The token is not a compact JWS in the form Keyturn accepts (RFC 7515 §7.1)."""


class TokenSignatureError(InvalidTokenError):
    """No trusted key matches the token's ``kid`` and ``alg``, or the signature is wrong."""


class TokenClaimsError(InvalidTokenError):
    """A required claim is missing, mistyped, or names another issuer or audience."""


class ExpiredTokenError(InvalidTokenError):
    """The token's ``exp`` is in the past (beyond the allowed leeway)."""


class ImmatureTokenError(InvalidTokenError):
    """The token's ``nbf`` or ``iat`` is in the future (beyond the allowed leeway)."""


class RevokedTokenError(InvalidTokenError):
    """The token, or the key or user it was issued to, has been revoked."""


class InsufficientScopeError(KeyturnError):
    """The token is valid but lacks a scope the resource requires."""

    error_code = "insufficient_scope"
    status_code = 403

    def __init__(self, message: str, *, required: frozenset[str] = frozenset()) -> None:
        super().__init__(message)
        self.required = required

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_scope_error, (type(self), self.message, self.required))


class InvalidRequestError(KeyturnError):
    """The request is missing a parameter or has one Keyturn cannot accept."""

    error_code = "invalid_request"
    status_code = 400


class MalformedSecretError(InvalidRequestError):
    """A string presented as an API key or refresh token cannot be one Keyturn issued."""


class WeakPasswordError(InvalidRequestError):
    """A new password is too short, too long, or on the list of common passwords."""


class PolicyViolation(KeyturnError):  # noqa: N818 -- the name is the public contract
    """The claims policy forbids what was asked for; names the claim and the value."""

    error_code = "invalid_request"
    status_code = 400

    def __init__(self, claim: str, value: object, reason: str) -> None:
        super().__init__(f"claim {claim!r}: {reason} (value {value!r})")
        self.claim = claim
        self.value = value
        self.reason = reason
        if claim == "scope":
            # RFC 6749 §5.2: a scope beyond what the client may have is invalid_scope.
            self.error_code = "invalid_scope"

    def __reduce__(self) -> tuple[type[PolicyViolation], tuple[str, object, str]]:
        return (type(self), (self.claim, self.value, self.reason))


class InvalidGrantError(KeyturnError):
    """The credential is unknown, expired, revoked or not bound to the caller.

    API keys, refresh tokens, and email and password pairs at login.

    One uniform error for every such case, so responses cannot tell them apart (T-BF-01).
    """

    error_code = "invalid_grant"
    status_code = 400


class InvalidClientError(KeyturnError):
    """Client authentication failed (RFC 6749 §5.2), or a grant needs it and got none.

    One body for an unknown key, a wrong secret and a ``client_id`` naming another key,
    so the answer tells nothing about which ids exist.
    """

    error_code = "invalid_client"
    status_code = 401


class UnsupportedGrantTypeError(KeyturnError):
    """The token endpoint does not serve the ``grant_type`` asked for (RFC 6749 §5.2)."""

    error_code = "unsupported_grant_type"
    status_code = 400


class AdminCredentialError(KeyturnError):
    """A request to the admin API came without the admin bearer token (or a wrong one)."""

    error_code = "unauthorized"
    status_code = 401


class RequestRejectedError(KeyturnError):
    """The HTTP request itself is unacceptable (size, media type, JSON, fields).

    Carries its own status and code (400 ``invalid_request``, 413 ``payload_too_large``,
    415 ``unsupported_media_type``) and, for a body that fails its schema, the messages
    per field.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int = 400,
        error_code: str = "invalid_request",
        fields: Mapping[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code
        self.fields = dict(fields or {})


class RateLimitedError(KeyturnError):
    """Too many requests from one client address or for one key; retry later."""

    error_code = "rate_limited"
    status_code = 429

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class UnauthorizedClientError(KeyturnError):
    """The authenticated client asked about a token issued to another client (RFC 7009 §2.1)."""

    error_code = "unauthorized_client"
    status_code = 400


class NotFoundError(KeyturnError):
    """The record named in an administrative request does not exist."""

    error_code = "not_found"
    status_code = 404


class ConflictError(KeyturnError):
    """The change clashes with what is stored (e.g. a key registered to another identifier)."""

    error_code = "conflict"
    status_code = 409


class SigningKeyError(KeyturnError):
    """Key material is unusable: wrong type, too weak, or bound to another algorithm."""


class PepperMismatchError(KeyturnError):
    """This server's pepper is not the one the database was set up with.

    Every stored API key and refresh token would be refused, so the server refuses to
    start instead. The message never shows either pepper or its fingerprint.
    """


class StorageUnavailableError(KeyturnError):
    """The database could not be reached; the caller should retry later, not give up."""

    error_code = "temporarily_unavailable"
    status_code = 503

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_storage_error, (type(self), self.message, self.retry_after))


class VerifierUnavailableError(StorageUnavailableError):
    """A verifier could not reach the JWKS or the Keyturn server, or got nonsense back.

    Like a database outage this may pass, so services answer 503 + ``Retry-After``,
    never 401: the token may be perfectly good.
    """


def _rebuild_scope_error(
    cls: type[InsufficientScopeError], message: str, required: frozenset[str]
) -> InsufficientScopeError:
    return cls(message, required=required)


def _rebuild_storage_error(
    cls: type[StorageUnavailableError], message: str, retry_after: int
) -> StorageUnavailableError:
    return cls(message, retry_after=retry_after)
