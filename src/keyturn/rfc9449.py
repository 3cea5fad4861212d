"""RFC 9449 DPoP at the edge, framework-free: the ``Authorization`` scheme and the challenge.

Beside `keyturn.rfc6750`: the server's gateway routes and the integrations read a request's
access token with `access_credential` (``Bearer`` or ``DPoP``) and answer a failure of a
DPoP-bound token with a `dpop_challenge` (RFC 9449 §7.1: ``WWW-Authenticate: DPoP`` with
``algs`` and, after a failure, ``error``). The proof checks themselves are pure logic in
`keyturn.core.dpop`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final, Literal

from keyturn.core.dpop import DPOP_ALGORITHMS
from keyturn.core.tokens import format_scope
from keyturn.errors import InvalidRequestError
from keyturn.rfc6750 import REALM, quoted

__all__ = ["DPOP_HEADER", "Scheme", "access_credential", "dpop_challenge"]

#: RFC 9449 §4.1: the request header carrying the proof (one value).
DPOP_HEADER: Final = "DPoP"
Scheme = Literal["bearer", "dpop"]


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
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    name = scheme.lower()
    if name not in {"bearer", "dpop"}:
        return None
    token = credentials.strip()
    if not token or " " in token:
        if malformed == "missing":
            return None
        raise InvalidRequestError(f"the Authorization header must be '{scheme} <token>'")
    return ("bearer" if name == "bearer" else "dpop"), token


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
