"""RFC 6750 bearer tokens, framework-free: read the credential, describe the failure.

The one place the project reads an ``Authorization: Bearer`` header and writes a
``WWW-Authenticate: Bearer`` challenge. The server (`keyturn.server.errors`,
`keyturn.server.requests`, the admin guard) and the integrations use it; each integration
turns a `BearerFailure` into its own response type, so aiohttp, Starlette and FastAPI
answer the same statuses, challenges and bodies.

One rule differs on purpose between the two sides: a ``Bearer`` credential that is empty
or has several parts. A resource server (the integrations) answers it 400
``invalid_request`` (RFC 6750 §3.1). The server's gateway routes (``/validate_request``,
``/v1/validate``) read it as no credential, a 401 with a bare challenge, because nginx's
``auth_request`` turns any answer other than 2xx, 401 and 403 into a 500 for the client.
`bearer_token` takes that choice as its ``malformed`` argument.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final, Literal

from keyturn.core.tokens import format_scope
from keyturn.errors import (
    InsufficientScopeError,
    InvalidRequestError,
    KeyturnError,
    StorageUnavailableError,
)

__all__ = [
    "REALM",
    "BearerFailure",
    "bearer_challenge",
    "bearer_matches",
    "bearer_token",
    "failure_for",
    "quoted",
]

REALM: Final = "keyturn"
# RFC 6750 §3: error_description and scope values are %x20-21 / %x23-5B / %x5D-7E, so
# '"', '\', controls and every non-ASCII character go (a header value is ASCII).
_UNSAFE_IN_QUOTES: Final = re.compile(r'["\\\x00-\x1f\x7f-\U0010ffff]')


@dataclass(frozen=True, slots=True)
class BearerFailure:
    """What to answer when a request's bearer credential does not pass."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, str] = field(default_factory=dict)


def quoted(value: str) -> str:
    """``value`` made safe inside a quoted challenge parameter (RFC 6750 §3)."""
    return _UNSAFE_IN_QUOTES.sub("", value)


def bearer_token(
    authorization: str | None,
    *,
    malformed: Literal["invalid_request", "missing"] = "invalid_request",
) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1).

    Only the header counts: an ``access_token`` query parameter is never read.

    Args:
        authorization: the header's value, or None when the request has none.
        malformed: what a Bearer header with no token, or with several parts, is:
            ``"invalid_request"`` raises (the integrations' 400), ``"missing"`` returns
            None (the server's gateway routes: a 401 with a bare challenge).

    Returns:
        The token; None when the request carries no bearer credential (no header, or
        another scheme such as Basic, which some other layer may handle).

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
        if malformed == "missing":
            return None
        raise InvalidRequestError("the Authorization header must be 'Bearer <token>'")
    return token


def bearer_matches(authorization: str | None, expected: bytes) -> bool:
    """Whether the header carries exactly the bearer token ``expected`` (constant time).

    For a shared secret such as the admin token; a malformed Bearer header never matches.
    """
    presented = bearer_token(authorization, malformed="missing")
    if presented is None:
        return False
    return hmac.compare_digest(presented.encode("latin-1", "replace"), expected)


def bearer_challenge(
    error: str | None = None, description: str | None = None, scopes: Iterable[str] = ()
) -> str:
    """A ``WWW-Authenticate: Bearer`` value (RFC 6750 §3) with sanitised parameters."""
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{quoted(description)}"')
    scope = format_scope(scopes)
    if scope:
        parts.append(f'scope="{quoted(scope)}"')
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
