"""The checks on an access token's claims, once its signature holds.

Required claims, NumericDates and the lifetime cap (with leeway), the exact issuer, the
audience, the identity claims and the scope grammar: what `keyturn.core.tokens`
verifies after the signature (``docs/threats.md``, T-TIME-*, T-IN-*).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from keyturn.core.scopes import parse_scope
from keyturn.errors import ExpiredTokenError, ImmatureTokenError, TokenClaimsError

__all__ = ["REQUIRED_CLAIMS", "check_claims"]

REQUIRED_CLAIMS: Final = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id")
_NUMERIC_DATES: Final = ("exp", "iat", "nbf")


def _numeric_date(claims: Mapping[str, Any], name: str) -> int | None:
    value = claims.get(name)
    # RFC 7519 §2 NumericDate; Keyturn issues integers and accepts nothing else (T-TIME-07).
    if value is None and name not in claims:
        return None
    if type(value) is not int:
        raise TokenClaimsError(f"claim {name!r} must be an integer NumericDate")
    return value


def _check_times(
    claims: dict[str, Any], *, now: float, leeway: int, max_lifetime: int
) -> tuple[int, int]:
    exp, iat, nbf = (_numeric_date(claims, name) for name in _NUMERIC_DATES)
    if exp is None or iat is None:
        raise TokenClaimsError("token lacks 'exp' or 'iat'")
    if exp <= now - leeway:
        raise ExpiredTokenError("token has expired")
    if iat > now + leeway:
        raise ImmatureTokenError("token was issued in the future (iat)")
    if nbf is not None and nbf > now + leeway:
        raise ImmatureTokenError("token is not valid yet (nbf)")
    if exp - iat > max_lifetime:
        raise TokenClaimsError(f"token lifetime exceeds the {max_lifetime} s maximum")
    return exp, iat


def _shown(value: object, limit: int = 100) -> str:
    """A claim value fit for an error message: printable ASCII, quoted, at most ``limit``."""
    text = value if isinstance(value, str) else json.dumps(value)
    text = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in text)
    return f"'{text[:limit]}...'" if len(text) > limit else f"'{text}'"


def _check_parties(claims: dict[str, Any], *, issuer: str, audience: str) -> None:
    if claims["iss"] != issuer or type(claims["iss"]) is not str:  # exact (CVE-2024-53861)
        raise TokenClaimsError(
            f"token was issued by another issuer (expected {_shown(issuer)}, token has "
            f"{_shown(claims['iss'])}); the verifier's issuer must be the server's "
            "KEYTURN_ISSUER"
        )
    aud = claims["aud"]
    audiences = [aud] if isinstance(aud, str) else aud
    if not isinstance(audiences, list) or not all(isinstance(a, str) for a in audiences):
        raise TokenClaimsError("claim 'aud' must be a string or an array of strings")
    if audience not in audiences:
        raise TokenClaimsError("token is meant for another audience")
    for name in ("sub", "jti", "client_id"):
        value = claims[name]
        if not isinstance(value, str) or not value or len(value) > 255:
            raise TokenClaimsError(f"claim {name!r} must be a non-empty string")


def check_claims(
    claims: dict[str, Any],
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway: int,
    max_lifetime: int,
) -> tuple[int, int, frozenset[str]]:
    """``exp``, ``iat`` and the scopes of ``claims``, after every check on them.

    Raises:
        TokenClaimsError: a required claim is missing or malformed, or names another
            issuer or audience (`ExpiredTokenError`, `ImmatureTokenError` for the times).
    """
    for name in REQUIRED_CLAIMS:
        if name not in claims:
            raise TokenClaimsError(f"token lacks the required claim {name!r}")
    exp, iat = _check_times(claims, now=now, leeway=leeway, max_lifetime=max_lifetime)
    _check_parties(claims, issuer=issuer, audience=audience)
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise TokenClaimsError("claim 'scope' must be a space-separated string")
    try:
        scopes = parse_scope(scope)
    except ValueError as exc:
        raise TokenClaimsError("claim 'scope' breaks the RFC 6749 §3.3 grammar") from exc
    return exp, iat, scopes
