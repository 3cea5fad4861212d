"""Sign and verify tokens in the api-jwt (``apijwt``) wire profile, with no I/O.

api-jwt 1.2.2 and api-jwt-2 1.3.2 sign with PyJWT: header ``{"alg":"RS256","typ":"JWT"}``
(no ``kid``), claims ``iss``, ``sub``, an integer ``exp`` and string-valued extras, and no
``jti``, ``iat`` or ``aud``. `keyturn.core.tokens.verify_access_token` refuses such tokens
by design (RFC 9068 needs ``typ: at+jwt``, ``kid``, ``jti``, ``aud``), so this profile keeps
every check that still applies:

* the same format and size pre-checks, and duplicate-member refusal, as the strict parser;
* a header allowlist (``alg``, ``typ``, optional ``kid``) and ``typ`` of ``JWT`` only, so a
  Keyturn access token (``at+jwt``) is never accepted as a legacy one (RFC 8725 §3.11);
* the algorithm fixed to RS256 and bound to the configured RSA keys (RFC 8725 §3.1);
* ``sub`` a non-empty string and ``exp`` an integer NumericDate (T-TIME-07);
* ``aud`` refused unless an audience is configured, then required (RFC 7519 §4.1.3).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from keyturn.core._encoding import b64url_decode, b64url_encode
from keyturn.core.jws import json_object, split
from keyturn.core.signing import SigningKey, VerificationKey
from keyturn.core.tokens import MAX_TOKEN_BYTES
from keyturn.errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    MalformedTokenError,
    SigningKeyError,
    TokenClaimsError,
    TokenSignatureError,
)

__all__ = [
    "LEGACY_ALGORITHM",
    "LEGACY_HEADER",
    "LegacyToken",
    "issue_legacy_token",
    "verify_legacy_token",
]

LEGACY_ALGORITHM: Final = "RS256"
#: PyJWT 2 sorts header members; PyJWT 1 wrote ``typ`` first. Both are accepted.
LEGACY_HEADER: Final = b'{"alg":"RS256","typ":"JWT"}'
_ALLOWED_HEADER: Final = frozenset({"alg", "kid", "typ"})
_MAX_SUBJECT: Final = 255
_MAX_LEEWAY: Final = 300  # seconds, as `keyturn.core.tokens.TokenVerifier` allows


@dataclass(frozen=True, slots=True)
class LegacyToken:
    """The claims of an api-jwt token whose signature and times were checked."""

    subject: str
    expires_at: int
    kid: str
    claims: Mapping[str, Any] = field(repr=False, hash=False)


def issue_legacy_token(signing_key: SigningKey, claims: Mapping[str, Any]) -> str:
    """Sign ``claims`` exactly as api-jwt does (through PyJWT): RS256, no ``kid``.

    The payload is compact JSON with non-ASCII characters escaped, as PyJWT writes it, so
    for the same claims and key the token is byte-for-byte the one api-jwt would make.

    Raises:
        SigningKeyError: the key is not an RSA key (api-jwt only speaks RS256).
        ValueError: the claims are not JSON (NaN, Infinity, or a non-JSON type).
    """
    if signing_key.alg != LEGACY_ALGORITHM:
        raise SigningKeyError(f"api-jwt tokens are RS256; this key signs {signing_key.alg}")
    try:
        payload = json.dumps(dict(claims), separators=(",", ":"), allow_nan=False).encode()
    except TypeError as exc:
        raise ValueError(f"claims are not JSON: {exc}") from exc
    signing_input = f"{b64url_encode(LEGACY_HEADER)}.{b64url_encode(payload)}"
    signature = signing_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{b64url_encode(signature)}"


def _candidate_keys(
    header: Mapping[str, Any], keys: Sequence[VerificationKey]
) -> list[VerificationKey]:
    if not header.keys() <= _ALLOWED_HEADER:
        raise MalformedTokenError("token header may only contain alg, kid and typ")
    typ = header.get("typ", "JWT")
    if not isinstance(typ, str) or typ.upper() != "JWT":
        raise TokenClaimsError("token type (typ) must be JWT")
    if header.get("alg") != LEGACY_ALGORITHM:
        # RFC 8725 §3.1: the configured keys fix the algorithm; the header must agree.
        raise TokenSignatureError(f"token algorithm must be {LEGACY_ALGORITHM}")
    candidates = [key for key in keys if key.alg == LEGACY_ALGORITHM]
    if "kid" in header:
        kid = header["kid"]
        if not isinstance(kid, str):
            raise MalformedTokenError("token header has an unusable key id (kid)")
        candidates = [key for key in candidates if key.kid == kid]
    if not candidates:
        raise TokenSignatureError("token is signed by a key this verifier does not trust")
    return candidates


def _check_claims(
    claims: dict[str, Any], *, now: float, leeway: int, audience: str | None
) -> tuple[str, int]:
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > _MAX_SUBJECT:
        raise TokenClaimsError("claim 'sub' must be a non-empty string")
    dates: dict[str, int | None] = {}
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if name in claims and type(value) is not int:
            raise TokenClaimsError(f"claim {name!r} must be an integer NumericDate")
        dates[name] = value
    exp = dates["exp"]
    if exp is None:
        raise TokenClaimsError("token lacks the required claim 'exp'")
    if exp <= now - leeway:
        raise ExpiredTokenError("token has expired")
    if dates["nbf"] is not None and dates["nbf"] > now + leeway:
        raise ImmatureTokenError("token is not valid yet (nbf)")
    if dates["iat"] is not None and dates["iat"] > now + leeway:
        raise ImmatureTokenError("token was issued in the future (iat)")
    if "iss" in claims and not isinstance(claims["iss"], str):
        raise TokenClaimsError("claim 'iss' must be a string")
    aud = claims.get("aud")
    if audience is None:
        if "aud" in claims:
            raise TokenClaimsError("token is meant for an audience; configure it to accept it")
    else:
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or audience not in audiences:
            raise TokenClaimsError("token is meant for another audience")
    return subject, exp


def verify_legacy_token(
    token: str | bytes,
    *,
    keys: Sequence[VerificationKey],
    now: float,
    leeway: int = 0,
    audience: str | None = None,
    max_token_bytes: int = MAX_TOKEN_BYTES,
) -> LegacyToken:
    """Verify an api-jwt token against ``keys`` and return its claims.

    Each RS256 key is tried in turn (api-jwt tokens name none), or only the one whose
    ``kid`` the header names. ``leeway`` defaults to 0, as in api-jwt's PyJWT call.

    Raises:
        InvalidTokenError: one of its subclasses says which check failed; the message never
            contains the token.
        ValueError: ``leeway`` is outside 0-300 seconds.
    """
    if not 0 <= leeway <= _MAX_LEEWAY:
        raise ValueError(f"leeway must be between 0 and {_MAX_LEEWAY} seconds")
    header_segment, payload_segment, signature_segment = split(token, max_token_bytes)
    candidates = _candidate_keys(json_object(header_segment, "header"), keys)
    try:
        signature = b64url_decode(signature_segment)
    except ValueError as exc:
        raise MalformedTokenError("token signature is not canonical base64url") from exc
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    key = next((key for key in candidates if key.verify(signing_input, signature)), None)
    if key is None:
        raise TokenSignatureError("token signature does not verify")
    # The payload is parsed only after the signature holds (no work for forgers).
    claims = json_object(payload_segment, "payload")
    subject, exp = _check_claims(claims, now=now, leeway=leeway, audience=audience)
    return LegacyToken(
        subject=subject, expires_at=exp, kid=key.kid, claims=MappingProxyType(claims)
    )
