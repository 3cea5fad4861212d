"""RFC 6750 for resource servers, framework-free: read the credential, describe the failure.

Each integration turns a `BearerFailure` into its own response type, so aiohttp, Starlette
and FastAPI answer the same statuses, challenges and bodies.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

from keyturn.core.tokens import format_scope
from keyturn.errors import (
    InsufficientScopeError,
    InvalidRequestError,
    KeyturnError,
    StorageUnavailableError,
)

__all__ = ["REALM", "BearerFailure", "bearer_challenge", "bearer_token", "failure_for"]

REALM: Final = "keyturn"
# RFC 6750 §3: error_description and scope values exclude '"' and '\' (and controls).
_UNSAFE_IN_QUOTES: Final = re.compile(r'["\\\x00-\x1f\x7f-\U0010ffff]')


@dataclass(frozen=True, slots=True)
class BearerFailure:
    """What to answer when a request's bearer credential does not pass."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, str] = field(default_factory=dict)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1).

    Returns None when the request carries no bearer credential (no header, or another
    scheme such as Basic, which some other layer may handle).

    Raises:
        InvalidRequestError: the Bearer scheme with no token, or with several parts.
    """
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = credentials.strip()
    if not token or " " in token:
        raise InvalidRequestError("the Authorization header must be 'Bearer <token>'")
    return token


def bearer_challenge(
    error: str | None = None, description: str | None = None, scopes: Iterable[str] = ()
) -> str:
    """A ``WWW-Authenticate: Bearer`` value (RFC 6750 §3) with sanitised parameters."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{_UNSAFE_IN_QUOTES.sub("", description)}"')
    scope = format_scope(scopes)
    if scope:
        parts.append(f'scope="{_UNSAFE_IN_QUOTES.sub("", scope)}"')
    return "Bearer " + ", ".join(parts)


def failure_for(error: KeyturnError | None) -> BearerFailure:
    """The RFC 6750 §3.1 answer to ``error`` (None: the request had no credential).

    * no credential: 401 and a bare challenge (§3.1: no error code then);
    * malformed header: 400 ``invalid_request``;
    * bad, expired or revoked token: 401 ``invalid_token``;
    * missing scope: 403 ``insufficient_scope`` naming the scopes needed;
    * keys or server unreachable: 503 + ``Retry-After``, never 401.
    """
    if error is None:
        return BearerFailure(
            401, {"WWW-Authenticate": bearer_challenge()}, {"detail": "a bearer token is required"}
        )
    body = {"error": error.error_code, "detail": error.message}
    if isinstance(error, StorageUnavailableError):
        return BearerFailure(503, {"Retry-After": str(max(1, error.retry_after))}, body)
    if isinstance(error, InsufficientScopeError):
        challenge = bearer_challenge(error.error_code, error.message, error.required)
        return BearerFailure(403, {"WWW-Authenticate": challenge}, body)
    if isinstance(error, InvalidRequestError):
        challenge = bearer_challenge(error.error_code, error.message)
        return BearerFailure(400, {"WWW-Authenticate": challenge}, body)
    # Every other verification failure is an unusable token.
    body["error"] = "invalid_token"
    return BearerFailure(
        401, {"WWW-Authenticate": bearer_challenge("invalid_token", error.message)}, body
    )
