"""Client public keys and ``private_key_jwt`` client assertions (RFC 7523 §2.2 and §3).

Pure logic: parsing a client's public key, and checking an assertion against the keys
registered for the client it names. The replay check (``jti`` single use) needs storage
and lives in the service; `VerifiedAssertion.replay_id` is what it stores.

Rules (RFC 7523 §3, OpenID Connect Core §9, RFC 8725):

* ``iss`` and ``sub`` are both the client id;
* ``aud`` holds the issuer identifier or the token endpoint URL;
* ``exp`` is present, not past, and at most `MAX_ASSERTION_LIFETIME` seconds ahead;
* ``iat`` and ``nbf``, when present, are not in the future beyond the leeway;
* ``jti`` is present (single use is the caller's job);
* the algorithm is the registered key's, never the header's choice: the header's ``alg``
  must name it, and only asymmetric algorithms are ever registered.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from keyturn.core._encoding import b64url_decode, b64url_encode, compact_json
from keyturn.core.signing import SigningKey, VerificationKey
from keyturn.errors import InvalidClientError, SigningKeyError

__all__ = [
    "CLIENT_ASSERTION_TYPE",
    "MAX_ASSERTION_LIFETIME",
    "MAX_CLIENT_PUBLIC_KEYS",
    "PRIVATE_JWK_MEMBERS",
    "ClientAssertion",
    "VerifiedAssertion",
    "assertion_client_id",
    "create_client_assertion",
    "load_client_public_key",
    "verify_client_assertion",
]

#: RFC 7523 §2.2: the ``client_assertion_type`` of a JWT client assertion.
CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
#: How far ahead of now an assertion's ``exp`` may be, in seconds (it is single use anyway;
#: a short life bounds the replay store).
MAX_ASSERTION_LIFETIME: Final = 300
#: At most this many public keys per client (rotation needs two; a few more for devices).
MAX_CLIENT_PUBLIC_KEYS: Final = 10
MAX_ASSERTION_BYTES: Final = 8192
#: JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ALLOWED_HEADER: Final = frozenset({"alg", "kid", "typ"})
#: Explicitly typed JWTs of other kinds are never client assertions (RFC 8725 §3.11).
_FOREIGN_TYPES: Final = frozenset({"at+jwt", "dpop+jwt", "application/at+jwt"})
_JTI = re.compile(r"[\x21-\x7e]{1,256}")
_INVALID: Final = "the client assertion is invalid"


def load_client_public_key(value: Mapping[str, Any] | str | bytes) -> VerificationKey:
    """A client's public key from a JWK (mapping) or a PEM ``PUBLIC KEY``.

    ES256 (P-256), EdDSA (Ed25519) and RS256 (>= 2048 bits) only; its ``kid`` is always
    the RFC 7638 thumbprint. A private key is refused, never reduced to its public half:
    Keyturn must never receive one.

    Raises:
        SigningKeyError: not a public key of a supported type, or a private key.
    """
    if isinstance(value, Mapping):
        if not isinstance(value.get("kty"), str):
            raise SigningKeyError("a JWK must be a JSON object with a string 'kty'")
        if value["kty"] == "oct" or PRIVATE_JWK_MEMBERS & value.keys():
            raise SigningKeyError(
                "this JWK holds a private or symmetric key: register the public key only "
                "(the private key never leaves the device)"
            )
        if value.get("use", "sig") != "sig":
            raise SigningKeyError("only signature keys ('use': 'sig') can be registered")
        members = {k: v for k, v in value.items() if k != "kid"}
        loaded = VerificationKey.from_jwk(members)
        return loaded
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    if "PRIVATE KEY" in text:
        raise SigningKeyError(
            "this is a private key: register the public key only (e.g. "
            "`openssl pkey -in device.pem -pubout`); the private key never leaves the device"
        )
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            parsed = json.loads(stripped)
        except ValueError as exc:
            raise SigningKeyError("not a JSON JWK") from exc
        if not isinstance(parsed, dict):
            raise SigningKeyError("a JWK must be a JSON object")
        return load_client_public_key(parsed)
    return VerificationKey.from_pem(stripped)


@dataclass(frozen=True, slots=True)
class ClientAssertion:
    """A ``private_key_jwt`` credential as presented (RFC 7523 §2.2).

    ``audiences`` are the ``aud`` values accepted: the issuer identifier and the token
    endpoint URL, from configuration (never from the request).
    """

    assertion: str = field(repr=False)
    client_id: str | None
    audiences: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class VerifiedAssertion:
    """A client assertion that passed every check but single use."""

    client_id: str
    jti: str
    expires_at: int
    kid: str

    @property
    def replay_id(self) -> str:
        """What the replay store keeps for this assertion: a hash of client and ``jti``."""
        digest = hashlib.sha256(f"assertion\0{self.client_id}\0{self.jti}".encode())
        return digest.hexdigest()


def create_client_assertion(
    key: SigningKey,
    *,
    client_id: str,
    audience: str,
    now: int,
    lifetime: int = 60,
    jti: str | None = None,
) -> str:
    """A ``private_key_jwt`` client assertion (RFC 7523 §2.2, §3), signed with ``key``.

    ``iss`` and ``sub`` are ``client_id``; ``aud`` the server's issuer identifier or token
    endpoint URL; it expires ``lifetime`` seconds after ``now`` (Keyturn accepts at most
    `MAX_ASSERTION_LIFETIME`); a fresh random ``jti`` unless one is given. The header
    names the key's ``kid`` so the server can pick it among the client's keys.
    """
    header = {"alg": key.alg, "typ": "JWT", "kid": key.kid}
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime,
        "jti": jti if jti is not None else secrets.token_urlsafe(16),
    }
    signing_input = f"{b64url_encode(compact_json(header))}.{b64url_encode(compact_json(claims))}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"


def _segments(assertion: str) -> tuple[str, str, str]:
    if not isinstance(assertion, str) or len(assertion) > MAX_ASSERTION_BYTES:
        raise InvalidClientError(_INVALID)
    if _COMPACT_JWS.fullmatch(assertion) is None:
        raise InvalidClientError(_INVALID)
    header, payload, signature = assertion.split(".")
    return header, payload, signature


def _object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise InvalidClientError(_INVALID) from exc
    if not isinstance(value, dict):
        raise InvalidClientError(_INVALID)
    return value


def assertion_client_id(assertion: str) -> str:
    """The client an assertion claims to come from (its ``sub``), read WITHOUT verifying.

    Only to find the keys to verify it with; `verify_client_assertion` decides.

    Raises:
        InvalidClientError: not a compact JWS, or no string ``sub``.
    """
    _, payload, _ = _segments(assertion)
    subject = _object(payload).get("sub")
    if not isinstance(subject, str) or not subject or len(subject) > 255:
        raise InvalidClientError(_INVALID)
    return subject


def _int_date(claims: Mapping[str, Any], name: str, *, required: bool) -> int | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidClientError(f"the client assertion needs a numeric {name!r}")
    return int(value)


def _signed_by(
    header_segment: str,
    payload_segment: str,
    signature_segment: str,
    keys: Sequence[VerificationKey],
) -> VerificationKey:
    """The registered key whose signature the assertion bears; every failure reads alike."""
    header = _object(header_segment)
    alg = header.get("alg")
    if not isinstance(alg, str) or not header.keys() <= _ALLOWED_HEADER:
        raise InvalidClientError(_INVALID)
    if header.get("typ") in _FOREIGN_TYPES:
        raise InvalidClientError(_INVALID)
    kid = header.get("kid")
    candidates = [key for key in keys if kid is None or key.kid == kid] or list(keys)
    # The algorithm is the registered key's: the header may only name it (alg "none" or
    # HS256 never match, since only asymmetric keys are ever registered).
    candidates = [key for key in candidates if key.alg == alg]
    try:
        signature = b64url_decode(signature_segment)
    except ValueError as exc:
        raise InvalidClientError(_INVALID) from exc
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    verified_by = next(
        (key for key in candidates if key.verify(signing_input, signature)),
        None,
    )
    if verified_by is None:
        raise InvalidClientError(_INVALID)
    return verified_by


def _check_times(claims: Mapping[str, Any], *, now: int, leeway: int, max_lifetime: int) -> int:
    """The assertion's ``exp``, after checking it and ``iat``/``nbf`` against ``now``."""
    exp = _int_date(claims, "exp", required=True)
    assert exp is not None  # noqa: S101 -- required above
    if exp <= now - leeway:
        raise InvalidClientError("the client assertion has expired")
    if exp > now + max_lifetime + leeway:
        raise InvalidClientError(
            f"the client assertion's exp is more than {max_lifetime} seconds ahead"
        )
    for name in ("iat", "nbf"):
        moment = _int_date(claims, name, required=False)
        if moment is not None and moment > now + leeway:
            raise InvalidClientError(f"the client assertion's {name} is in the future")
    return exp


def verify_client_assertion(
    assertion: str,
    *,
    client_id: str,
    keys: Sequence[VerificationKey],
    audiences: Collection[str],
    now: int,
    leeway: int,
    max_lifetime: int = MAX_ASSERTION_LIFETIME,
) -> VerifiedAssertion:
    """Check a ``private_key_jwt`` assertion for ``client_id`` against its registered keys.

    Errors before the signature is checked all read alike (nothing to learn about the
    client or its keys); after it, they say which rule failed.

    Raises:
        InvalidClientError: the assertion fails any rule but single use.
    """
    header_segment, payload_segment, signature_segment = _segments(assertion)
    verified_by = _signed_by(header_segment, payload_segment, signature_segment, keys)
    claims = _object(payload_segment)
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidClientError("the client assertion's iss and sub must both be the client id")
    aud = claims.get("aud")
    presented = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in audiences for a in presented):
        raise InvalidClientError(
            "the client assertion's aud must be the issuer identifier or the token endpoint"
        )
    exp = _check_times(claims, now=now, leeway=leeway, max_lifetime=max_lifetime)
    jti = claims.get("jti")
    if not isinstance(jti, str) or _JTI.fullmatch(jti) is None:
        raise InvalidClientError("the client assertion needs a jti (1-256 printable characters)")
    return VerifiedAssertion(client_id=client_id, jti=jti, expires_at=exp, kid=verified_by.kid)
