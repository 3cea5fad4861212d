"""Signing keys, verification keys and JWKS.

Each key is bound to exactly one algorithm (RFC 8725 §3.1) and identified by its RFC 7638
JWK thumbprint. Key objects are parsed once and kept: PyJWT handed a PEM string re-parses
an RSA key on every call (~31 ms, ``bench/README.md``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias, TypedDict, cast, get_args

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from jwt.exceptions import InvalidKeyError

from keyturn.core._encoding import b64url_encode
from keyturn.errors import SigningKeyError

__all__ = [
    "DEFAULT_ALGORITHM",
    "SUPPORTED_ALGORITHMS",
    "JWKSet",
    "KeySet",
    "PrivateKey",
    "PublicJWK",
    "PublicKey",
    "SigningAlgorithm",
    "SigningKey",
    "VerificationKey",
    "jwk_thumbprint",
]

SigningAlgorithm: TypeAlias = Literal["ES256", "RS256", "EdDSA"]
SUPPORTED_ALGORITHMS: Final[tuple[SigningAlgorithm, ...]] = get_args(SigningAlgorithm)
DEFAULT_ALGORITHM: Final[SigningAlgorithm] = "ES256"
MIN_RSA_BITS: Final = 2048  # RFC 7518 §3.3

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey

# PyJWT's algorithm objects verify and convert JWKs (raw R||S <-> DER for ECDSA, curve
# checks); signing calls `cryptography` directly with these parameter objects, built once
# (PyJWT builds ``ECDSA(SHA256())`` on every call: a sixth of an ES256 signature).
_ES256_SIGNATURE: Final = ec.ECDSA(hashes.SHA256())
_RS256_PADDING: Final = padding.PKCS1v15()
_SHA256: Final = hashes.SHA256()
_P256_BYTES: Final = 32  # RFC 7518 §3.4: R and S as 32 big-endian octets each
_ALGORITHMS: Final = {
    "ES256": ECAlgorithm(ECAlgorithm.SHA256, expected_curve=ec.SECP256R1),
    "RS256": RSAAlgorithm(RSAAlgorithm.SHA256),
    "EdDSA": OKPAlgorithm(),
}
_JWK_PARSERS: Final[dict[str, type[ECAlgorithm | RSAAlgorithm | OKPAlgorithm]]] = {
    "EC": ECAlgorithm,
    "RSA": RSAAlgorithm,
    "OKP": OKPAlgorithm,
}
# RFC 7638 §3.2: the required members of each key type, in lexicographic order.
_THUMBPRINT_MEMBERS: Final = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}


class PublicJWK(TypedDict, total=False):
    """A public JWK as Keyturn publishes it (RFC 7517 §4)."""

    kty: str
    kid: str
    alg: str
    use: str
    crv: str
    x: str
    y: str
    n: str
    e: str


class JWKSet(TypedDict):
    """A JWK Set document (RFC 7517 §5)."""

    keys: list[PublicJWK]


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """Return the RFC 7638 SHA-256 thumbprint of a JWK, base64url-encoded.

    Raises:
        SigningKeyError: the JWK lacks ``kty`` or a member the thumbprint needs.
    """
    try:
        members = _THUMBPRINT_MEMBERS[jwk["kty"]]
        canonical = {name: jwk[name] for name in members}
    except KeyError as exc:
        raise SigningKeyError(
            f"JWK lacks member {exc.args[0]!r} needed for its thumbprint"
        ) from exc
    encoded = json.dumps(canonical, separators=(",", ":"), sort_keys=True).encode()
    return b64url_encode(hashlib.sha256(encoded).digest())


def _algorithm_for(public_key: PublicKey) -> SigningAlgorithm:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise SigningKeyError(f"EC keys must use P-256 for ES256, not {public_key.curve.name}")
        return "ES256"
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size < MIN_RSA_BITS:
            raise SigningKeyError(
                f"RSA keys need at least {MIN_RSA_BITS} bits, this one has {public_key.key_size}"
            )
        return "RS256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    raise SigningKeyError(
        f"unsupported key type {type(public_key).__name__}; "
        f"use one of {', '.join(SUPPORTED_ALGORITHMS)}"
    )


def _bind_algorithm(public_key: PublicKey, requested: str | None) -> SigningAlgorithm:
    algorithm = _algorithm_for(public_key)
    if requested is not None and requested != algorithm:
        raise SigningKeyError(f"this key can only be used with {algorithm}, not {requested!r}")
    return algorithm


def _public_members(public_key: PublicKey, algorithm: SigningAlgorithm) -> dict[str, Any]:
    jwk = dict(_ALGORITHMS[algorithm].to_jwk(public_key, as_dict=True))
    return {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}


def _parse_jwk(jwk: Mapping[str, Any]) -> PrivateKey | PublicKey:
    if not isinstance(jwk, Mapping) or not isinstance(jwk.get("kty"), str):
        raise SigningKeyError("a JWK must be a JSON object with a string 'kty'")
    parser = _JWK_PARSERS.get(jwk["kty"])
    if parser is None:
        raise SigningKeyError(f"unsupported JWK key type {jwk['kty']!r}")
    if jwk.get("use", "sig") != "sig":
        raise SigningKeyError("only signature keys ('use': 'sig') can be loaded")
    try:
        return cast("PrivateKey | PublicKey", parser.from_jwk(dict(jwk)))
    except (InvalidKeyError, ValueError, TypeError, KeyError) as exc:
        raise SigningKeyError(f"invalid {jwk['kty']} JWK: {exc}") from exc


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key bound to one algorithm, as published in the JWKS.

    Build one with `from_jwk`, `from_pem`, or `SigningKey.verification_key`.
    """

    kid: str
    alg: SigningAlgorithm
    public_key: PublicKey = field(repr=False)
    _jwk: PublicJWK = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        members = _public_members(self.public_key, self.alg)
        jwk = cast("PublicJWK", {**members, "kid": self.kid, "alg": self.alg, "use": "sig"})
        object.__setattr__(self, "_jwk", jwk)

    @classmethod
    def from_public_key(
        cls, public_key: PublicKey, *, alg: str | None = None, kid: str | None = None
    ) -> VerificationKey:
        """Wrap a `cryptography` public key; ``kid`` defaults to its RFC 7638 thumbprint."""
        algorithm = _bind_algorithm(public_key, alg)
        if kid is None:
            kid = jwk_thumbprint(_public_members(public_key, algorithm))
        return cls(kid=kid, alg=algorithm, public_key=public_key)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> VerificationKey:
        """Load a public (or private, keeping only the public half) JWK.

        The JWK's ``kid`` is kept when present; its ``alg``, when present, must match the key.

        Raises:
            SigningKeyError: the JWK is malformed, weak, or names another algorithm.
        """
        key = _parse_jwk(jwk)
        public_key = key if _is_public(key) else cast("PrivateKey", key).public_key()
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise SigningKeyError("JWK 'kid' must be a string")
        return cls.from_public_key(cast("PublicKey", public_key), alg=jwk.get("alg"), kid=kid)

    @classmethod
    def from_pem(cls, pem: bytes | str, *, alg: str | None = None) -> VerificationKey:
        """Load a PEM ``PUBLIC KEY`` (SubjectPublicKeyInfo).

        Raises:
            SigningKeyError: not a PEM public key, or of an unsupported type.
        """
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            public_key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise SigningKeyError("not a PEM public key") from exc
        return cls.from_public_key(cast("PublicKey", public_key), alg=alg)

    def to_jwk(self) -> PublicJWK:
        """Return the public JWK with ``kid``, ``alg`` and ``use``; never private members."""
        return cast("PublicJWK", dict(self._jwk))

    def public_pem(self) -> bytes:
        """Return the key as a PEM SubjectPublicKeyInfo."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def verify(self, signing_input: bytes, signature: bytes) -> bool:
        """Check ``signature`` over ``signing_input`` with this key's one algorithm."""
        return _ALGORITHMS[self.alg].verify(signing_input, self.public_key, signature)


def _is_public(key: PrivateKey | PublicKey) -> bool:
    return isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey)


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key bound to one algorithm; its public half is `verification_key`."""

    private_key: PrivateKey = field(repr=False)
    verification_key: VerificationKey

    @property
    def kid(self) -> str:
        """The key id (RFC 7638 thumbprint unless loaded with another)."""
        return self.verification_key.kid

    @property
    def alg(self) -> SigningAlgorithm:
        """The one algorithm this key signs with."""
        return self.verification_key.alg

    @classmethod
    def generate(cls, alg: str = DEFAULT_ALGORITHM) -> SigningKey:
        """Create a fresh key: P-256 for ES256, 3072-bit RSA for RS256, Ed25519 for EdDSA.

        Raises:
            SigningKeyError: ``alg`` is not one Keyturn signs with.
        """
        private_key: PrivateKey
        if alg == "ES256":
            private_key = ec.generate_private_key(ec.SECP256R1())
        elif alg == "RS256":
            private_key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
        elif alg == "EdDSA":
            private_key = ed25519.Ed25519PrivateKey.generate()
        else:
            raise SigningKeyError(
                f"cannot sign with {alg!r}; use one of {', '.join(SUPPORTED_ALGORITHMS)}"
            )
        return cls.from_private_key(private_key)

    @classmethod
    def from_private_key(
        cls, private_key: PrivateKey, *, alg: str | None = None, kid: str | None = None
    ) -> SigningKey:
        """Wrap a `cryptography` private key, binding it to its one algorithm."""
        public = VerificationKey.from_public_key(private_key.public_key(), alg=alg, kid=kid)
        return cls(private_key=private_key, verification_key=public)

    @classmethod
    def from_pem(
        cls, pem: bytes | str, *, alg: str | None = None, password: bytes | None = None
    ) -> SigningKey:
        """Load a PEM private key (PKCS#8, PKCS#1 or SEC1), optionally encrypted.

        Raises:
            SigningKeyError: not a private key, wrong password, weak or unsupported key.
        """
        data = pem.encode() if isinstance(pem, str) else pem
        try:
            private_key = serialization.load_pem_private_key(data, password=password)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            # Never include the PEM itself: the message may reach a log.
            raise SigningKeyError("not a usable PEM private key (or wrong password)") from exc
        if not isinstance(
            private_key,
            ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey,
        ):
            raise SigningKeyError(f"unsupported private key type {type(private_key).__name__}")
        return cls.from_private_key(private_key, alg=alg)

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any]) -> SigningKey:
        """Load a private JWK (with ``d``); its ``alg`` and ``kid`` are kept when present.

        Raises:
            SigningKeyError: the JWK is public-only, malformed, weak or mismatched.
        """
        key = _parse_jwk(jwk)
        if _is_public(key):
            raise SigningKeyError("this JWK has no private part ('d'); it can only verify")
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise SigningKeyError("JWK 'kid' must be a string")
        return cls.from_private_key(cast("PrivateKey", key), alg=jwk.get("alg"), kid=kid)

    def private_pem(self, password: bytes | None = None) -> bytes:
        """Export the private key as PKCS#8 PEM, encrypted when ``password`` is given."""
        encryption: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(password)
            if password
            else serialization.NoEncryption()
        )
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
        )

    def private_jwk(self) -> dict[str, Any]:
        """Export the private JWK (with ``d``): for encrypted storage only, never publish it."""
        jwk = dict(_ALGORITHMS[self.alg].to_jwk(self.private_key, as_dict=True))
        return {**jwk, "kid": self.kid, "alg": self.alg, "use": "sig"}

    def sign(self, signing_input: bytes) -> bytes:
        """Sign ``signing_input`` (``header.payload``) and return the raw JWS signature."""
        key = self.private_key
        if isinstance(key, ec.EllipticCurvePrivateKey):  # ES256: always P-256 (_algorithm_for)
            r, s = decode_dss_signature(key.sign(signing_input, _ES256_SIGNATURE))
            return r.to_bytes(_P256_BYTES, "big") + s.to_bytes(_P256_BYTES, "big")
        if isinstance(key, rsa.RSAPrivateKey):
            return key.sign(signing_input, _RS256_PADDING, _SHA256)
        return key.sign(signing_input)


@dataclass(frozen=True, slots=True)
class KeySet:
    """The keys a deployment trusts: at most one active signing key, plus verify-only keys.

    Verify-only keys cover rotation overlap: a pending key is published before it signs,
    and a retired key stays until every token it signed has expired.
    """

    signing_key: SigningKey | None = None
    verification_keys: tuple[VerificationKey, ...] = ()
    _by_kid: dict[str, VerificationKey] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_kid: dict[str, VerificationKey] = {}
        keys = list(self.verification_keys)
        if self.signing_key is not None:
            keys.insert(0, self.signing_key.verification_key)
        for key in keys:
            known = by_kid.get(key.kid)
            if known is not None and known != key:
                raise SigningKeyError(f"two different keys share the kid {key.kid!r}")
            by_kid[key.kid] = key
        object.__setattr__(self, "verification_keys", tuple(by_kid.values()))
        object.__setattr__(self, "_by_kid", by_kid)

    @classmethod
    def of(cls, signing_key: SigningKey | None, *others: VerificationKey) -> KeySet:
        """Build a key set from an active key and any verification-only keys."""
        return cls(signing_key=signing_key, verification_keys=others)

    @classmethod
    def from_jwks(cls, jwks: Mapping[str, Any]) -> KeySet:
        """Build a verify-only key set from a JWKS document, skipping keys it cannot use.

        RFC 7517 §5: members of an unknown ``kty`` (or, here, with ``use`` other than
        ``sig`` or an algorithm Keyturn does not accept) are ignored, not fatal.

        Raises:
            SigningKeyError: the document is not a JWK Set.
        """
        members = jwks.get("keys") if isinstance(jwks, Mapping) else None
        if not isinstance(members, list):
            raise SigningKeyError("a JWK Set needs a 'keys' array")
        keys: list[VerificationKey] = []
        for member in members:
            try:
                keys.append(VerificationKey.from_jwk(member))
            except SigningKeyError:
                continue
        return cls(signing_key=None, verification_keys=tuple(keys))

    def get(self, kid: str) -> VerificationKey | None:
        """Return the trusted key with this ``kid``, or None."""
        return self._by_kid.get(kid)

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    def __len__(self) -> int:
        return len(self._by_kid)

    @property
    def kids(self) -> frozenset[str]:
        """The ids of every trusted key."""
        return frozenset(self._by_kid)

    def jwks(self) -> JWKSet:
        """Render the public JWK Set: ``kid``, ``alg``, ``use``; no private or x5* members."""
        return {"keys": [key.to_jwk() for key in self._by_kid.values()]}

    def with_signing_key(self, signing_key: SigningKey) -> KeySet:
        """Return a copy whose active key is ``signing_key``; the old one stays verify-only."""
        return KeySet(signing_key=signing_key, verification_keys=self.verification_keys)

    def without(self, kid: str) -> KeySet:
        """Return a copy that no longer trusts ``kid`` (it cannot be the active key)."""
        if self.signing_key is not None and self.signing_key.kid == kid:
            raise SigningKeyError("cannot drop the active signing key; activate another first")
        kept = tuple(key for key in self.verification_keys if key.kid != kid)
        return KeySet(signing_key=self.signing_key, verification_keys=kept)
