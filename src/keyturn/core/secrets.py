"""API keys and refresh tokens: generate, parse, hash and compare, with no I/O.

A generated secret reads ``<prefix>_<id>_<secret><checksum>``:

* ``prefix`` -- ``kt`` for API keys, ``ktr`` for refresh tokens, so secret scanners and
  people can tell what leaked;
* ``id`` -- 16 base62 characters naming the stored record; safe to log;
* ``secret`` -- 43 base62 characters carrying 256 random bits from `secrets`;
* ``checksum`` -- CRC32 of everything before it, 6 base62 characters, so a mistyped or
  truncated secret is refused before any storage lookup (as GitHub's tokens do).

Stored form: HMAC-SHA-256 under a server-side pepper, with the secret's purpose mixed in
so an API key hash can never match a refresh token hash (OWASP ASVS 5.0 §6.5.2 allows a
fast hash for secrets of 112+ bits; argon2 is for passwords). Comparison is constant-time.

`Pepper.fingerprint` names a pepper without revealing it, so a server can tell whether
its pepper is the one a database was set up with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass, field
from enum import Enum
from typing import Final

from keyturn.errors import MalformedSecretError

__all__ = [
    "FINGERPRINT_BYTES",
    "LEGACY_HASH_BYTES",
    "LEGACY_KEY_MAX_LENGTH",
    "MIN_PEPPER_BYTES",
    "ParsedSecret",
    "Pepper",
    "SecretKind",
    "check_legacy_key",
    "generate_secret",
    "is_legacy_refresh_token",
    "legacy_key_hash",
    "looks_generated",
    "parse_secret",
    "secret_hashes_match",
]

_ALPHABET: Final = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LENGTH: Final = 16  # ~95 bits: a collision-free public handle
SECRET_BYTES: Final = 32  # 256 bits
SECRET_LENGTH: Final = 43  # ceil(256 / log2(62))
CHECKSUM_LENGTH: Final = 6  # 62**6 > 2**32
MIN_PEPPER_BYTES: Final = 32
LEGACY_KEY_MAX_LENGTH: Final = 1024  # caller-chosen (JWThenticator) keys
FINGERPRINT_BYTES: Final = 16  # 128 bits: two peppers never share a fingerprint by chance
# Cannot equal a `Pepper.hash` message, which starts "kt\x00" or "ktr\x00".
_FINGERPRINT_MESSAGE: Final = b"keyturn pepper fingerprint v1"
_DERIVE_MESSAGE: Final = b"keyturn derived key v1\x00"
_BASE62_PAIRS: Final = tuple(high + low for high in _ALPHABET for low in _ALPHABET)
# Random ids by rejection sampling: a byte below 248 (4 * 62) becomes digit ``byte % 62``,
# uniformly; bytes 248-255 are dropped.
_BYTE_TO_BASE62: Final = bytes(ord(_ALPHABET[byte % 62]) for byte in range(256))
_REJECTED_BYTES: Final = bytes(range(4 * 62, 256))
_ID_DRAW_BYTES: Final = ID_LENGTH + 8


class SecretKind(Enum):
    """What a secret is for; the value is its visible prefix."""

    API_KEY = "kt"
    REFRESH_TOKEN = "ktr"  # noqa: S105 -- a prefix, not a password

    @property
    def label(self) -> str:
        """A human name for messages."""
        return "API key" if self is SecretKind.API_KEY else "refresh token"


_PREFIXES: Final = tuple(f"{kind.value}_" for kind in SecretKind)


def _base62(number: int, length: int) -> str:
    digits = []
    for _ in range(length // 2):  # two digits per division: half the big-int divisions
        number, pair = divmod(number, 62 * 62)
        digits.append(_BASE62_PAIRS[pair])
    if length % 2:
        number, last = divmod(number, 62)
        digits.append(_ALPHABET[last])
    if number:
        raise ValueError("number does not fit")
    digits.reverse()
    return "".join(digits)


def _is_base62(text: str) -> bool:
    # The base62 alphabet is exactly the ASCII letters and digits.
    return text.isascii() and text.isalnum()


def _random_id() -> str:
    """`ID_LENGTH` base62 characters, each uniformly random."""
    while True:
        drawn = secrets.randbits(8 * _ID_DRAW_BYTES).to_bytes(_ID_DRAW_BYTES, "big")
        digits = drawn.translate(_BYTE_TO_BASE62, _REJECTED_BYTES)
        if len(digits) >= ID_LENGTH:  # short less than once in 10**7 draws
            return digits[:ID_LENGTH].decode("ascii")


def _checksum(body: str) -> str:
    # _base62(crc, CHECKSUM_LENGTH) unrolled: a CRC32 is below 62**6, so three digit pairs.
    high, low = divmod(zlib.crc32(body.encode("ascii")), 62 * 62)
    high, middle = divmod(high, 62 * 62)
    return _BASE62_PAIRS[high] + _BASE62_PAIRS[middle] + _BASE62_PAIRS[low]


@dataclass(frozen=True, slots=True)
class ParsedSecret:
    """A secret whose shape and checksum are right; says nothing of whether it is stored."""

    kind: SecretKind
    id: str
    value: str = field(repr=False)

    def __str__(self) -> str:
        return f"{self.kind.value}_{self.id}_…"  # never the secret itself


def generate_secret(kind: SecretKind, *, secret_id: str | None = None) -> ParsedSecret:
    """Create a new API key or refresh token with 256 random bits.

    ``secret_id`` keeps an existing id (rotating a key's secret); by default a new random
    id is drawn.
    """
    if secret_id is None:
        secret_id = _random_id()
    elif len(secret_id) != ID_LENGTH or not _is_base62(secret_id):
        raise ValueError(f"a secret id is {ID_LENGTH} base62 characters")
    body = (
        f"{kind.value}_{secret_id}_"
        f"{_base62(int.from_bytes(secrets.token_bytes(SECRET_BYTES), 'big'), SECRET_LENGTH)}"
    )
    return ParsedSecret(kind=kind, id=secret_id, value=body + _checksum(body))


def parse_secret(value: str, kind: SecretKind) -> ParsedSecret:
    """Check that ``value`` has the shape and checksum of a ``kind`` Keyturn generates.

    Raises:
        MalformedSecretError: wrong prefix, length, alphabet or checksum. The message never
            contains ``value``.
    """
    prefix = f"{kind.value}_"
    expected = len(prefix) + ID_LENGTH + 1 + SECRET_LENGTH + CHECKSUM_LENGTH
    if not isinstance(value, str) or len(value) != expected or not value.startswith(prefix):
        raise MalformedSecretError(f"not a Keyturn {kind.label}")
    secret_id = value[len(prefix) : len(prefix) + ID_LENGTH]
    rest = value[len(prefix) + ID_LENGTH :]
    if rest[0] != "_" or not _is_base62(secret_id + rest[1:]):
        raise MalformedSecretError(f"not a Keyturn {kind.label}")
    body, checksum = value[:-CHECKSUM_LENGTH], value[-CHECKSUM_LENGTH:]
    if not hmac.compare_digest(_checksum(body), checksum):
        raise MalformedSecretError(f"{kind.label} checksum does not match (mistyped or truncated?)")
    return ParsedSecret(kind=kind, id=secret_id, value=value)


def looks_generated(value: str) -> bool:
    """Tell whether ``value`` claims to be a generated secret (has a Keyturn prefix).

    Legacy caller-chosen keys may not start with ``kt_`` or ``ktr_``, so a string that
    does is parsed strictly and never treated as a legacy key.
    """
    return value.startswith(_PREFIXES)


#: Length of a JWThenticator key hash (SHA-512): stored hashes of this length are legacy.
LEGACY_HASH_BYTES: Final = 64
_LEGACY_REFRESH_TOKEN: Final = re.compile(r"[0-9a-f]{128}")


def legacy_key_hash(value: str) -> bytes:
    """JWThenticator 1.6.3's stored form of a key: SHA-512 of its UTF-8 bytes (no pepper).

    Only to find keys imported from JWThenticator (`keyturn import jwthenticator`); a key
    found this way is re-hashed with the pepper at once.
    """
    return hashlib.sha512(value.encode("utf-8")).digest()


def is_legacy_refresh_token(value: str) -> bool:
    """True for a JWThenticator refresh token: 128 lower-case hex digits (SHA-512 of a uuid4)."""
    return _LEGACY_REFRESH_TOKEN.fullmatch(value) is not None


def check_legacy_key(value: str) -> str:
    """Validate a caller-chosen (JWThenticator ``register_key``) API key.

    Raises:
        MalformedSecretError: empty, too long, not printable, or using a Keyturn prefix.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= LEGACY_KEY_MAX_LENGTH:
        raise MalformedSecretError(
            f"an API key is between 1 and {LEGACY_KEY_MAX_LENGTH} characters"
        )
    if not value.isprintable():
        raise MalformedSecretError("an API key may only contain printable characters")
    if looks_generated(value):
        raise MalformedSecretError("caller-chosen keys may not use a Keyturn prefix (kt_, ktr_)")
    return value


class Pepper:
    """The server-side HMAC key for stored secrets; its repr never shows the bytes.

    Raises:
        ValueError: shorter than `MIN_PEPPER_BYTES`.
    """

    __slots__ = ("_key", "_keyed")

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_PEPPER_BYTES:
            raise ValueError(f"a pepper needs at least {MIN_PEPPER_BYTES} bytes")
        self._key = bytes(key)
        # HMAC keyed once; each hash copies it instead of re-deriving the padded keys.
        self._keyed = hmac.new(self._key, digestmod=hashlib.sha256)

    def __repr__(self) -> str:
        return "Pepper(<hidden>)"

    @classmethod
    def generate(cls) -> Pepper:
        """Draw a fresh 256-bit pepper."""
        return cls(secrets.token_bytes(MIN_PEPPER_BYTES))

    def hash(self, value: str, kind: SecretKind) -> bytes:
        """Return the 32-byte stored form of a secret: HMAC-SHA-256(pepper, kind ‖ value)."""
        mac = self._keyed.copy()
        mac.update(kind.value.encode("ascii") + b"\x00" + value.encode("utf-8"))
        return mac.digest()

    def matches(self, value: str, kind: SecretKind, stored_hash: bytes) -> bool:
        """Compare a presented secret with a stored hash in constant time."""
        return secret_hashes_match(self.hash(value, kind), stored_hash)

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose``, the same on every instance sharing this pepper.

        HMAC-SHA-256(pepper, "keyturn derived key v1" ‖ purpose): independent of the
        stored hashes and of any other purpose's key (e.g. the DPoP nonce key).
        """
        message = _DERIVE_MESSAGE + purpose.encode("utf-8")
        return hmac.digest(self._key, message, hashlib.sha256)

    def fingerprint(self) -> str:
        """A public name for this pepper: equal peppers have equal fingerprints.

        The first `FINGERPRINT_BYTES` of HMAC-SHA-256(pepper, "keyturn pepper fingerprint
        v1"), base64url without padding (22 characters). Like any stored hash it tells
        nothing about the pepper: finding one from the other means guessing 256 bits.
        """
        digest = hmac.digest(self._key, _FINGERPRINT_MESSAGE, hashlib.sha256)
        return base64.urlsafe_b64encode(digest[:FINGERPRINT_BYTES]).rstrip(b"=").decode("ascii")


def secret_hashes_match(presented: bytes, stored: bytes) -> bool:
    """Constant-time equality of two secret hashes."""
    return hmac.compare_digest(presented, stored)
