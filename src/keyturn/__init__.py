"""Keyturn: turn API keys into short-lived, signed JWTs.

The names here are the curated public API; everything else lives in submodules
(`keyturn.core.*`, `keyturn.compat.*`) and is documented there.
"""

from __future__ import annotations

from keyturn.__about__ import __version__
from keyturn.core.policy import ClaimsPolicy, Grant
from keyturn.core.revocation import RevocationList
from keyturn.core.secrets import Pepper, SecretKind, generate_secret, parse_secret
from keyturn.core.signing import KeySet, SigningKey, VerificationKey
from keyturn.core.tokens import (
    IssuedToken,
    TokenVerifier,
    VerifiedToken,
    issue_access_token,
    peek_unverified_claims,
    verify_access_token,
)
from keyturn.errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    InsufficientScopeError,
    InvalidRequestError,
    InvalidTokenError,
    KeyturnError,
    MalformedSecretError,
    MalformedTokenError,
    PolicyViolation,
    RevokedTokenError,
    SigningKeyError,
    StorageUnavailableError,
    TokenClaimsError,
    TokenSignatureError,
    VerifierUnavailableError,
)

__all__ = [
    "ClaimsPolicy",
    "ExpiredTokenError",
    "Grant",
    "ImmatureTokenError",
    "InsufficientScopeError",
    "InvalidRequestError",
    "InvalidTokenError",
    "IssuedToken",
    "KeySet",
    "KeyturnError",
    "MalformedSecretError",
    "MalformedTokenError",
    "Pepper",
    "PolicyViolation",
    "RevocationList",
    "RevokedTokenError",
    "SecretKind",
    "SigningKey",
    "SigningKeyError",
    "StorageUnavailableError",
    "TokenClaimsError",
    "TokenSignatureError",
    "TokenVerifier",
    "VerificationKey",
    "VerifiedToken",
    "VerifierUnavailableError",
    "__version__",
    "generate_secret",
    "issue_access_token",
    "parse_secret",
    "peek_unverified_claims",
    "verify_access_token",
]
