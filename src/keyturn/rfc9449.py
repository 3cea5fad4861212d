"""RFC 9449 DPoP at the edge, framework-free: the ``Authorization`` scheme and the challenge.

Beside `keyturn.rfc6750`: the server's gateway routes and the integrations read a request's
access token with `access_credential` (``Bearer`` or ``DPoP``) and answer a failure of a
DPoP-bound token with a `dpop_challenge` (RFC 9449 §7.1: ``WWW-Authenticate: DPoP`` with
``algs`` and, after a failure, ``error``). The proof checks themselves are pure logic in
`keyturn.core.dpop`.

`failure_for` is `keyturn.rfc6750.failure_for`'s counterpart for the integrations: the
same statuses and bodies, with a DPoP challenge where the request used the DPoP scheme or
a bound token was refused, and today's Bearer answer, unchanged, for everything else.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from keyturn.core.dpop import DPOP_ALGORITHMS, InvalidDPoPProofError
from keyturn.core.tokens import format_scope
from keyturn.errors import (
    InsufficientScopeError,
    InvalidRequestError,
    KeyturnError,
    StorageUnavailableError,
)
from keyturn.rfc6750 import REALM, BearerFailure, bearer_token, quoted
from keyturn.rfc6750 import failure_for as bearer_failure_for

__all__ = [
    "DPOP_HEADER",
    "Scheme",
    "access_credential",
    "claimed_scheme",
    "dpop_challenge",
    "failure_for",
]

#: RFC 9449 §4.1: the request header carrying the proof (one value).
DPOP_HEADER: Final = "DPoP"
Scheme = Literal["bearer", "dpop"]
#: RFC 9449's error codes: always answered with the DPoP challenge.
_DPOP_ERRORS: Final = frozenset({"invalid_dpop_proof", "use_dpop_nonce"})


def access_credential(
    authorization: str | None,
    *,
    malformed: Literal["invalid_request", "missing"] = "invalid_request",
) -> tuple[Scheme, str] | None:
    """The scheme and token of ``Authorization: Bearer <token>`` or ``DPoP <token>``.

    Args:
        authorization: the header's value, or None when the request has none.
        malformed: as `keyturn.rfc6750.bearer_token`: what an empty or many-part
            credential is (raise ``invalid_request``, or read it as no credential).

    Returns:
        ``("bearer" | "dpop", token)``; None when there is no such credential (no header,
        or another scheme such as Basic).

    Raises:
        InvalidRequestError: the scheme with no token, or with several parts.
    """
    scheme = claimed_scheme(authorization)
    if scheme is None or authorization is None:
        return None
    if scheme == "bearer":  # read, and worded when malformed, as RFC 6750 reads it
        bearer = bearer_token(authorization, malformed=malformed)
        return None if bearer is None else ("bearer", bearer)
    sent, _, credentials = authorization.strip().partition(" ")
    token = credentials.strip()
    if not token or " " in token:
        if malformed == "missing":
            return None
        raise InvalidRequestError(f"the Authorization header must be '{sent} <token>'")
    return "dpop", token


def claimed_scheme(authorization: str | None) -> Scheme | None:
    """The scheme the header names, ``"bearer"`` or ``"dpop"`` (any case), else None.

    Also for a malformed credential: its failure is answered with that scheme's challenge.
    """
    name = (authorization or "").strip().partition(" ")[0].lower()
    return "dpop" if name == "dpop" else "bearer" if name == "bearer" else None


def dpop_challenge(
    error: str | None = None,
    description: str | None = None,
    scopes: Iterable[str] = (),
    algs: Iterable[str] = DPOP_ALGORITHMS,
) -> str:
    """A ``WWW-Authenticate: DPoP`` value (RFC 9449 §7.1) with sanitised parameters."""
    parts = [f'realm="{REALM}"', f'algs="{" ".join(algs)}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{quoted(description)}"')
    scope = format_scope(scopes)
    if scope:
        parts.append(f'scope="{quoted(scope)}"')
    return "DPoP " + ", ".join(parts)


def failure_for(error: KeyturnError | None, *, scheme: Scheme | None = None) -> BearerFailure:
    """The answer to ``error`` for a request that presented its token with ``scheme``.

    A Bearer request (or none: ``scheme`` None) gets `keyturn.rfc6750.failure_for`'s
    answer, except a refused DPoP binding (a bound token sent as Bearer). A DPoP request
    and a refused binding get the same statuses and bodies with a DPoP challenge
    (RFC 9449 §7.1), naming the algorithms proofs may use:

    * a bad, missing, replayed or foreign proof, or a bound token as Bearer: 401
      ``invalid_dpop_proof``;
    * a bad token: 401 ``invalid_token``; a missing scope: 403 ``insufficient_scope``;
      a malformed header: 400 ``invalid_request``; an outage: 503 + ``Retry-After``.
    """
    dpop_error = error is not None and (
        isinstance(error, InvalidDPoPProofError) or error.error_code in _DPOP_ERRORS
    )
    if error is None or (scheme != "dpop" and not dpop_error):
        return bearer_failure_for(error)
    body = {"error": error.error_code, "detail": error.message}
    if isinstance(error, StorageUnavailableError):
        return BearerFailure(503, {"Retry-After": str(max(1, error.retry_after))}, body)
    status, scopes = 401, frozenset[str]()
    if isinstance(error, InsufficientScopeError):
        status, scopes = 403, error.required
    elif isinstance(error, InvalidRequestError):
        status = 400
    elif not dpop_error:
        body["error"] = "invalid_token"  # every other verification failure
    challenge = dpop_challenge(body["error"], error.message, scopes)
    return BearerFailure(status, {"WWW-Authenticate": challenge}, body)
