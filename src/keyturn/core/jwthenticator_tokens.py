"""JWThenticator 1.6.3's access tokens, still valid after a move to Keyturn; no I/O.

JWThenticator signs RS256 JWTs with header ``kid`` = base64url(SHA-1(DER public key)) and
the claims ``token_id`` (a uuid), ``identifier`` (a uuid), integer ``iat`` and ``exp``, and
``aud`` only when ``JWT_AUDIENCE`` was set: no ``iss``, ``sub``, ``jti`` or ``typ: at+jwt``,
so `keyturn.core.tokens.verify_access_token` refuses them by design. After
``keyturn import jwthenticator`` the deployment's RSA key is published once more under that
legacy ``kid`` (until the last token it signed has expired), and this profile accepts a
token only when:

* its ``kid`` names a trusted key whose ``kid`` *is* that key's JWThenticator fingerprint
  (`is_jwthenticator_key`): no Keyturn key (RFC 7638 thumbprint kids, 43 characters) ever
  qualifies, so a Keyturn key can never vouch for a token of this weaker shape;
* the header holds only ``alg``, ``kid`` and ``typ`` (``JWT`` when present), and ``alg``
  is the key's (RS256);
* the signature verifies, then ``token_id`` and ``identifier`` are non-empty strings, ``iat``
  and ``exp`` integers, the token unexpired (with leeway) and ``exp - iat`` within the cap;
* ``aud``, when present, contains the verifier's audience (JWThenticator's ``JWT_AUDIENCE``
  becomes Keyturn's ``audience``).

The result is a `VerifiedToken` whose ``subject`` and ``identifier`` are the token's
``identifier``, ``jti`` its ``token_id``, ``client_id`` ``"jwthenticator"``, no scopes.
"""

from __future__ import annotations

import hashlib
from types import MappingProxyType
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from keyturn.core._encoding import b64url_decode, b64url_encode
from keyturn.core.jws import KeyLookup, json_object, parse_header, split
from keyturn.core.signing import VerificationKey
from keyturn.core.tokens import MAX_TOKEN_BYTES, VerifiedToken
from keyturn.errors import (
    ExpiredTokenError,
    ImmatureTokenError,
    MalformedTokenError,
    TokenClaimsError,
    TokenSignatureError,
)

__all__ = [
    "JWTHENTICATOR_CLIENT_ID",
    "is_jwthenticator_key",
    "jwthenticator_kid",
    "verify_jwthenticator_token",
]

#: The ``client_id`` of a verified JWThenticator token (it names no Keyturn client).
JWTHENTICATOR_CLIENT_ID: Final = "jwthenticator"
_ALLOWED_HEADER: Final = frozenset({"alg", "kid", "typ"})
_MAX_TEXT: Final = 255


def jwthenticator_kid(public_key: rsa.RSAPublicKey) -> str:
    """JWThenticator's ``kid``: base64url(SHA-1(DER SubjectPublicKeyInfo)), unpadded.

    As ``jwthenticator.utils.calculate_key_signature`` (PyCryptodome's ``export_key("DER")``
    of a public key is the SubjectPublicKeyInfo).
    """
    der = public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return b64url_encode(hashlib.sha1(der, usedforsecurity=False).digest())


def is_jwthenticator_key(key: VerificationKey) -> bool:
    """True when ``key`` is an RS256 key published under its JWThenticator ``kid``."""
    public = key.public_key
    return (
        key.alg == "RS256"
        and isinstance(public, rsa.RSAPublicKey)
        and key.kid == jwthenticator_kid(public)
    )


def verify_jwthenticator_token(
    token: str | bytes,
    *,
    keys: KeyLookup,
    audience: str,
    now: float,
    leeway: int,
    max_lifetime: int,
    max_token_bytes: int = MAX_TOKEN_BYTES,
) -> VerifiedToken | None:
    """Verify a JWThenticator token; None when its ``kid`` names no JWThenticator key.

    None means "not this profile": the caller reports its own (strict) refusal.

    Raises:
        InvalidTokenError: a token of this profile that fails a check (a subclass says which).
    """
    header_segment, payload_segment, signature_segment = split(token, max_token_bytes)
    header = parse_header(header_segment)
    kid = header.get("kid")
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None or not is_jwthenticator_key(key):
        return None
    if not header.keys() <= _ALLOWED_HEADER:
        raise MalformedTokenError("token header may only contain alg, kid and typ")
    if header.get("typ", "JWT") != "JWT":
        raise TokenClaimsError("token type (typ) must be JWT")
    if header.get("alg") != key.alg:
        raise TokenSignatureError("token algorithm does not match its signing key")
    try:
        signature = b64url_decode(signature_segment)
    except ValueError as exc:
        raise MalformedTokenError("token signature is not canonical base64url") from exc
    if not key.verify(f"{header_segment}.{payload_segment}".encode("ascii"), signature):
        raise TokenSignatureError("token signature does not verify")
    claims = json_object(payload_segment, "payload")
    exp, iat = _times(claims, now=now, leeway=leeway, max_lifetime=max_lifetime)
    for name in ("token_id", "identifier"):
        value = claims.get(name)
        if not isinstance(value, str) or not value or len(value) > _MAX_TEXT:
            raise TokenClaimsError(f"claim {name!r} must be a non-empty string")
    if "aud" in claims:
        aud = claims["aud"]
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or audience not in audiences:
            raise TokenClaimsError("token is meant for another audience")
    return VerifiedToken(
        subject=claims["identifier"],
        jti=claims["token_id"],
        client_id=JWTHENTICATOR_CLIENT_ID,
        issued_at=iat,
        expires_at=exp,
        scopes=frozenset(),
        kid=key.kid,
        claims=MappingProxyType(claims),
    )


def _times(
    claims: dict[str, Any], *, now: float, leeway: int, max_lifetime: int
) -> tuple[int, int]:
    exp, iat = claims.get("exp"), claims.get("iat")
    if type(exp) is not int or type(iat) is not int:
        raise TokenClaimsError("claims 'exp' and 'iat' must be integer NumericDates")
    if exp <= now - leeway:
        raise ExpiredTokenError("token has expired")
    if iat > now + leeway:
        raise ImmatureTokenError("token was issued in the future (iat)")
    if exp - iat > max_lifetime:
        raise TokenClaimsError(f"token lifetime exceeds the {max_lifetime} s maximum")
    return exp, iat
