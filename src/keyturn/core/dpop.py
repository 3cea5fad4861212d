"""DPoP proofs (RFC 9449): checking a proof JWT and the key it binds to. Pure logic.

`create_dpop_proof` makes a proof (a client's side); `verify_dpop_proof` applies every
check of RFC 9449 §4.3 that needs no storage: the proof's ``jti`` single use is the
caller's job (`DPoPProof.replay_id` is what to claim in the replay store), as is comparing
`DPoPProof.jkt` with a bound token's ``cnf.jkt``.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from keyturn.core._encoding import b64url_decode, b64url_encode, compact_json
from keyturn.core.assertions import PRIVATE_JWK_MEMBERS
from keyturn.core.signing import (
    SUPPORTED_ALGORITHMS,
    SigningKey,
    VerificationKey,
    jwk_thumbprint,
)
from keyturn.errors import KeyturnError, SigningKeyError

__all__ = [
    "CONFIRMATION_CLAIM",
    "DPOP_ALGORITHMS",
    "DPOP_PROOF_TYPE",
    "DPoPProof",
    "InvalidDPoPProofError",
    "UseDPoPNonceError",
    "access_token_hash",
    "check_binding",
    "confirmation",
    "create_dpop_proof",
    "normalize_htu",
    "proof_jwk",
    "verify_dpop_proof",
]

#: RFC 9449 §4.2: the ``typ`` of a DPoP proof.
DPOP_PROOF_TYPE: Final = "dpop+jwt"
#: The algorithms proofs may use (asymmetric only; RFC 9449 §4.3 check 5).
DPOP_ALGORITHMS: Final = SUPPORTED_ALGORITHMS
MAX_PROOF_BYTES: Final = 8192
#: RFC 7800 §3.1 / RFC 9449 §6.1: the claim holding ``{"jkt": <thumbprint>}``.
CONFIRMATION_CLAIM: Final = "cnf"
#: How old a proof's ``iat`` may be, in seconds (RFC 9449 §11.1: a short window).
DEFAULT_PROOF_MAX_AGE: Final = 60

_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
_ALLOWED_HEADER: Final = frozenset({"typ", "alg", "jwk"})
_JTI = re.compile(r"[\x21-\x7e]{1,256}")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
#: Proof headers (one per device key) whose checked key is kept.
_KEY_CACHE_SIZE: Final = 4096


class InvalidDPoPProofError(KeyturnError):
    """The DPoP proof fails a check (RFC 9449 §5: 400 at the token endpoint)."""

    error_code = "invalid_dpop_proof"
    status_code = 400


class UseDPoPNonceError(InvalidDPoPProofError):
    """The server requires a nonce the proof lacks (RFC 9449 §8: retry with ``DPoP-Nonce``)."""

    error_code = "use_dpop_nonce"


@dataclass(frozen=True, slots=True)
class DPoPProof:
    """A proof that passed every check but single use."""

    jkt: str
    jti: str
    iat: int
    key: VerificationKey

    @property
    def replay_id(self) -> str:
        """What the replay store keeps for this proof: a hash of its key and ``jti``."""
        return hashlib.sha256(f"dpop\0{self.jkt}\0{self.jti}".encode()).hexdigest()


def confirmation(jkt: str) -> dict[str, str]:
    """The ``cnf`` claim value binding a token to the key with thumbprint ``jkt``."""
    return {"jkt": jkt}


def check_binding(jkt: str | None, proof: DPoPProof | None, *, scheme: str) -> None:
    """Whether a verified token may be used as presented (RFC 9449 §7.1).

    Args:
        jkt: the token's ``cnf.jkt`` (`keyturn.core.tokens.VerifiedToken.jkt`), None for
            a bearer token.
        proof: the request's checked DPoP proof (made with the token's ``ath``), or None.
        scheme: the ``Authorization`` scheme it came with, ``"bearer"`` or ``"dpop"``
            (any case).

    Raises:
        InvalidDPoPProofError: a bound token sent as Bearer (no downgrade), a DPoP
            token without a proof, or a proof made with another key than ``cnf.jkt``.
    """
    dpop = scheme.lower() == "dpop"
    if jkt is None:
        if dpop:
            raise InvalidDPoPProofError("the token is not DPoP-bound: send it as Bearer")
        return
    if not dpop:
        raise InvalidDPoPProofError("a DPoP-bound token must be sent as DPoP, with a proof")
    if proof is None:
        raise InvalidDPoPProofError("a DPoP-bound token needs a DPoP proof")
    if proof.jkt != jkt:
        raise InvalidDPoPProofError("the DPoP proof is signed by another key than the token's")


def access_token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url SHA-256 of the access token's ASCII bytes."""
    digest = hashlib.sha256(access_token.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def proof_jwk(key: SigningKey) -> dict[str, Any]:
    """The public JWK a proof made with ``key`` carries (no ``kid``/``use``; RFC 9449 §4.2)."""
    return {k: v for k, v in key.verification_key.to_jwk().items() if k not in ("kid", "use")}


def create_dpop_proof(
    key: SigningKey,
    *,
    method: str,
    url: str,
    now: int,
    access_token: str | None = None,
    nonce: str | None = None,
    jti: str | None = None,
) -> str:
    """A DPoP proof JWT for one request of ``method`` to ``url`` (RFC 9449 §4.2).

    ``url`` goes into ``htu`` without its query and fragment. ``access_token``, when the
    request presents one, adds its ``ath``; ``nonce`` is the server's latest
    ``DPoP-Nonce``. A fresh random ``jti`` unless one is given.
    """
    parts = urlsplit(url)
    header = {"typ": DPOP_PROOF_TYPE, "alg": key.alg, "jwk": proof_jwk(key)}
    claims: dict[str, Any] = {
        "jti": jti if jti is not None else secrets.token_urlsafe(16),
        "htm": method.upper(),
        "htu": urlunsplit((parts.scheme, parts.netloc, parts.path, "", "")),
        "iat": now,
    }
    if access_token is not None:
        claims["ath"] = access_token_hash(access_token)
    if nonce is not None:
        claims["nonce"] = nonce
    signing_input = f"{b64url_encode(compact_json(header))}.{b64url_encode(compact_json(claims))}"
    return f"{signing_input}.{b64url_encode(key.sign(signing_input.encode('ascii')))}"


def normalize_htu(url: str) -> str:
    """A URL as ``htu`` is compared (RFC 9449 §4.3 check 9, RFC 3986 §6.2.2 and §6.2.3).

    Scheme and host lower-cased, the scheme's default port dropped, an empty path made
    ``/``; query and fragment left out.

    Raises:
        ValueError: not an absolute http(s) URL.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("not an absolute http(s) URL")
    host = parts.hostname.lower()
    if ":" in host:  # an IPv6 literal
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    return urlunsplit((scheme, netloc, parts.path or "/", "", ""))


def _object(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(b64url_decode(segment).decode("utf-8"))
    except (ValueError, RecursionError) as exc:
        raise InvalidDPoPProofError("the DPoP proof is not a JWT") from exc
    if not isinstance(value, dict):
        raise InvalidDPoPProofError("the DPoP proof is not a JWT")
    return value


def _public_key(header: Mapping[str, Any], alg: str) -> VerificationKey:
    jwk = header.get("jwk")
    if not isinstance(jwk, Mapping) or not isinstance(jwk.get("kty"), str):
        raise InvalidDPoPProofError("the DPoP proof needs a 'jwk' header with the public key")
    if jwk["kty"] == "oct" or PRIVATE_JWK_MEMBERS & jwk.keys():
        raise InvalidDPoPProofError("the DPoP proof's jwk must be a public key, not a private one")
    if jwk.get("alg", alg) != alg:
        raise InvalidDPoPProofError("the DPoP proof's jwk names another algorithm than its alg")
    members = {k: v for k, v in jwk.items() if k != "kid"}
    try:
        # The key must be one the header's alg is for (RFC 8725 §3.1): bound here.
        return VerificationKey.from_jwk({**members, "alg": alg})
    except SigningKeyError as exc:
        raise InvalidDPoPProofError(f"the DPoP proof's jwk is not usable: {exc.message}") from exc


def _checked_key(header: Mapping[str, Any]) -> VerificationKey:
    """RFC 9449 §4.3 checks 4-7 on the header: typ, an asymmetric alg, a public jwk."""
    if header.get("typ") != DPOP_PROOF_TYPE:
        raise InvalidDPoPProofError(f"the DPoP proof's typ must be {DPOP_PROOF_TYPE}")
    alg = header.get("alg")
    if alg not in DPOP_ALGORITHMS:
        raise InvalidDPoPProofError(
            f"the DPoP proof's alg must be one of {', '.join(DPOP_ALGORITHMS)}"
        )
    if not header.keys() <= _ALLOWED_HEADER:
        raise InvalidDPoPProofError("the DPoP proof's header has members other than typ, alg, jwk")
    return _public_key(header, str(alg))


@functools.lru_cache(maxsize=_KEY_CACHE_SIZE)
def _header_key(segment: str) -> tuple[VerificationKey, str]:
    """The checked key of a proof's header segment and its thumbprint.

    One device sends the same header with every proof, so loading its key and hashing it
    is done once per header (bounded; a refused header raises and is not kept).
    """
    key = _checked_key(_object(segment))
    return key, jwk_thumbprint(key.to_jwk())


def _checked_request(claims: Mapping[str, Any], *, method: str, url: str) -> str:
    """RFC 9449 §4.3 checks 8-9 (``htm``, ``htu``) and a ``jti``; returns the ``jti``."""
    jti = claims.get("jti")
    if not isinstance(jti, str) or _JTI.fullmatch(jti) is None:
        raise InvalidDPoPProofError("the DPoP proof needs a jti")
    if claims.get("htm") != method:
        raise InvalidDPoPProofError("the DPoP proof's htm is not this request's method")
    htu = claims.get("htu")
    try:
        same = isinstance(htu, str) and normalize_htu(htu) == normalize_htu(url)
    except ValueError as exc:
        raise InvalidDPoPProofError("the DPoP proof's htu is not an http(s) URL") from exc
    if not same:
        raise InvalidDPoPProofError("the DPoP proof's htu is not this request's URL")
    return jti


def _checked_iat(claims: Mapping[str, Any], *, now: int, leeway: int, max_age: int) -> int:
    """RFC 9449 §4.3 check 11: ``iat`` within the window."""
    iat = claims.get("iat")
    if isinstance(iat, bool) or not isinstance(iat, int | float):
        raise InvalidDPoPProofError("the DPoP proof needs a numeric iat")
    if iat > now + leeway:
        raise InvalidDPoPProofError("the DPoP proof's iat is in the future")
    if iat < now - max_age - leeway:
        raise InvalidDPoPProofError("the DPoP proof is too old (iat)")
    return int(iat)


def verify_dpop_proof(
    proof: str,
    *,
    method: str,
    url: str,
    now: int,
    leeway: int,
    max_age: int = DEFAULT_PROOF_MAX_AGE,
    access_token: str | None = None,
    nonce: str | None = None,
) -> DPoPProof:
    """Check a DPoP proof for a request of ``method`` to ``url`` (RFC 9449 §4.3).

    ``access_token``: the token the request presents (the proof must carry its ``ath``).
    ``nonce``: the server-provided nonce the proof must carry, if the server uses them.

    Raises:
        InvalidDPoPProofError: any check fails.
        UseDPoPNonceError: ``nonce`` is required and the proof lacks it or has another.
    """
    if not isinstance(proof, str) or len(proof) > MAX_PROOF_BYTES:
        raise InvalidDPoPProofError("the DPoP proof is not a JWT")
    if _COMPACT_JWS.fullmatch(proof) is None:
        raise InvalidDPoPProofError("the DPoP proof is not a compact JWS")
    header_segment, payload_segment, signature_segment = proof.split(".")
    key, jkt = _header_key(header_segment)
    try:
        signature = b64url_decode(signature_segment)
    except ValueError as exc:
        raise InvalidDPoPProofError("the DPoP proof's signature is not base64url") from exc
    if not key.verify(f"{header_segment}.{payload_segment}".encode("ascii"), signature):
        raise InvalidDPoPProofError("the DPoP proof's signature does not verify with its jwk")
    claims = _object(payload_segment)
    jti = _checked_request(claims, method=method, url=url)
    iat = _checked_iat(claims, now=now, leeway=leeway, max_age=max_age)
    if nonce is not None and claims.get("nonce") != nonce:
        raise UseDPoPNonceError("the DPoP proof must carry the server's nonce (DPoP-Nonce)")
    if access_token is not None and claims.get("ath") != access_token_hash(access_token):
        raise InvalidDPoPProofError("the DPoP proof's ath does not match the access token")
    return DPoPProof(jkt=jkt, jti=jti, iat=iat, key=key)
