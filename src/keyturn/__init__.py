"""Keyturn: turn API keys into short-lived, signed JWTs.

The names here are the curated public API: the verifiers a service checks tokens with,
the clients that fetch them, the settings, the errors, and the core token primitives.
Everything else lives in submodules (`keyturn.core.*`, `keyturn.compat.*`) and is
documented there; the server's modules are not part of it.

The verifiers, clients and `Settings` are imported on first use, so ``import keyturn``
(and every ``keyturn.core`` module) stays free of HTTP and database libraries.
"""

from __future__ import annotations

import importlib
import typing

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

if typing.TYPE_CHECKING:
    from keyturn.client import (
        AsyncClient,
        Client,
        ClientError,
        CredentialsRejectedError,
        KeyturnAuth,
        KeyturnUnavailableError,
    )
    from keyturn.config import Settings
    from keyturn.verify import JWKSVerifier, OfflineVerifier, RemoteVerifier, Verifier

#: The names imported on first use, and the module each comes from.
_LAZY: dict[str, str] = {
    "AsyncClient": "keyturn.client",
    "Client": "keyturn.client",
    "ClientError": "keyturn.client",
    "CredentialsRejectedError": "keyturn.client",
    "JWKSVerifier": "keyturn.verify",
    "KeyturnAuth": "keyturn.client",
    "KeyturnUnavailableError": "keyturn.client",
    "OfflineVerifier": "keyturn.verify",
    "RemoteVerifier": "keyturn.verify",
    "Settings": "keyturn.config",
    "Verifier": "keyturn.verify",
}

__all__ = [
    "AsyncClient",
    "ClaimsPolicy",
    "Client",
    "ClientError",
    "CredentialsRejectedError",
    "ExpiredTokenError",
    "Grant",
    "ImmatureTokenError",
    "InsufficientScopeError",
    "InvalidRequestError",
    "InvalidTokenError",
    "IssuedToken",
    "JWKSVerifier",
    "KeySet",
    "KeyturnAuth",
    "KeyturnError",
    "KeyturnUnavailableError",
    "MalformedSecretError",
    "MalformedTokenError",
    "OfflineVerifier",
    "Pepper",
    "PolicyViolation",
    "RemoteVerifier",
    "RevocationList",
    "RevokedTokenError",
    "SecretKind",
    "Settings",
    "SigningKey",
    "SigningKeyError",
    "StorageUnavailableError",
    "TokenClaimsError",
    "TokenSignatureError",
    "TokenVerifier",
    "VerificationKey",
    "VerifiedToken",
    "Verifier",
    "VerifierUnavailableError",
    "__version__",
    "generate_secret",
    "issue_access_token",
    "parse_secret",
    "peek_unverified_claims",
    "verify_access_token",
]


def __getattr__(name: str) -> typing.Any:
    """Import a verifier, client or `Settings` the first time it is asked for (PEP 562)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'keyturn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
