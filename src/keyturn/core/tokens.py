"""Issue and verify RFC 9068 access tokens (JWT, compact JWS), with no I/O.

The verifier closes the gaps PyJWT leaves to applications (``docs/threats.md``): a
pre-parse format check, a header allowlist, the algorithm taken from the key the
``kid`` selects, exact ``iss``, ``aud`` containment, integer NumericDates, a maximum
lifetime, and one exception tree. PyJWT's algorithm objects do the signature maths; PyJWT's
own ``jwt.decode`` is kept as the test oracle (``tests/security/test_differential.py``).
"""

from __future__ import annotations

import functools
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Protocol

from keyturn.core._encoding import b64url_decode, b64url_encode, compact_json
from keyturn.core.claim_checks import check_claims as _check_claims
from keyturn.core.jws import KeyLookup
from keyturn.core.jws import check_header as _check_header
from keyturn.core.jws import json_object as _json_object
from keyturn.core.jws import parse_header as _parse_header
from keyturn.core.jws import split as _split
from keyturn.core.scopes import format_scope, is_scope_token, parse_scope
from keyturn.core.signing import SigningKey
from keyturn.errors import (
    InsufficientScopeError,
    MalformedTokenError,
    PolicyViolation,
    RevokedTokenError,
    TokenClaimsError,
    TokenSignatureError,
)

__all__ = [
    "ACCESS_TOKEN_TYPE",
    "DEFAULT_LEEWAY",
    "DEFAULT_MAX_LIFETIME",
    "FAMILY_CLAIM",
    "MAX_TOKEN_BYTES",
    "REGISTERED_CLAIMS",
    "IssuedToken",
    "KeyLookup",
    "RevocationCheck",
    "TokenVerifier",
    "VerifiedToken",
    "VerifiedTokenCache",
    "format_scope",
    "issue_access_token",
    "new_token_id",
    "parse_scope",
    "peek_unverified_claims",
    "verify_access_token",
]

ACCESS_TOKEN_TYPE: Final = "at+jwt"  # noqa: S105 -- RFC 9068 §2.1 media type
MAX_TOKEN_BYTES: Final = 8192  # checked before any decoding (Authlib CVE-2025-61920)
DEFAULT_LEEWAY: Final = 30  # seconds; RFC 7519 §4.1.4 "no more than a few minutes"
# Seconds between iat and exp accepted at all: what a Keyturn server may issue (its
# access_token_lifetime is capped at two days, room for JWThenticator's 25 hours), so the
# tokens a server issues always pass the verifiers (keyturn.verify) left at their defaults.
DEFAULT_MAX_LIFETIME: Final = 172_800
#: The refresh-token family (grant) an access token was issued from, when there is one:
#: revoking the family revokes its access tokens too (RFC 7009 §2.1).
FAMILY_CLAIM: Final = "sid"
#: Claims only Keyturn sets; no policy extra or caller input may supply them.
REGISTERED_CLAIMS: Final = frozenset(
    {
        "iss",
        "sub",
        "aud",
        "exp",
        "nbf",
        "iat",
        "jti",
        "client_id",
        "scope",
        "identifier",
        "token_id",
        FAMILY_CLAIM,
        "cnf",  # RFC 7800 / RFC 9449 §6: the key a DPoP-bound token is bound to
    }
)


def new_token_id() -> str:
    """Return a fresh ``jti``: 128 random bits from `secrets`, spelled as a UUID.

    The UUID spelling lets JWThenticator consumers, who read ``token_id`` as a UUID,
    parse the same value.
    """
    digits = secrets.token_bytes(16).hex()
    # str(uuid.UUID(bytes=...)) spelled out: the same 8-4-4-4-12 lowercase hex, no UUID object.
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly signed access token and the facts the caller needs to record."""

    token: str = field(repr=False)
    jti: str
    kid: str
    issued_at: int
    expires_at: int
    claims: Mapping[str, Any]

    @property
    def expires_in(self) -> int:
        """Seconds the token lives (RFC 6749 §5.1 ``expires_in``)."""
        return self.expires_at - self.issued_at


@functools.lru_cache(maxsize=64)
def _header_segment(alg: str, kid: str) -> str:
    # Every token one key signs has the same header, so it is encoded once per key.
    return b64url_encode(compact_json({"alg": alg, "kid": kid, "typ": ACCESS_TOKEN_TYPE}))


def _scope(scopes: Iterable[str]) -> str:
    """The ``scope`` claim for ``scopes``, each checked against RFC 6749 §3.3."""
    scope_tokens = frozenset(scopes)
    # Check each token, not the joined string: "a b" or "" would pass parse_scope once
    # joined, and the verifier would then read back other scopes than were granted.
    if not all(is_scope_token(token) for token in scope_tokens):
        raise ValueError("scope tokens may only contain printable ASCII except ' ', '\"', '\\'")
    return format_scope(scope_tokens)


def _registered_claims(
    *,
    issuer: str,
    audience: str | Sequence[str],
    subject: str,
    client_id: str,
    issued_at: int,
    expires_at: int,
    scope: str,
    token_id: str,
) -> dict[str, Any]:
    """The claims every access token carries, in their wire order."""
    return {
        "iss": issuer,
        "sub": subject,
        "aud": audience if isinstance(audience, str) else list(audience),
        "exp": expires_at,
        "iat": issued_at,
        "jti": token_id,
        "client_id": client_id,
        "scope": scope,
        "token_id": token_id,
    }


def issue_access_token(
    signing_key: SigningKey,
    *,
    issuer: str,
    audience: str | Sequence[str],
    subject: str,
    client_id: str,
    now: int,
    lifetime: int,
    scopes: Iterable[str] = (),
    identifier: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    jti: str | None = None,
    family: str | None = None,
    confirmation: Mapping[str, str] | None = None,
) -> IssuedToken:
    """Sign an RFC 9068 access token.

    Claims: ``iss``, ``sub``, ``aud``, ``exp``, ``iat``, ``jti``, ``client_id``, ``scope``,
    JWThenticator's ``token_id`` (= ``jti``) and ``identifier``, ``sid`` (the refresh-token
    ``family`` it was issued with, if any), then ``extra_claims`` (the claims policy's
    output: ``level``, ``factor``, ``roles``, ...). ``confirmation`` is ``cnf`` (RFC 9449 §6.1).

    Raises:
        PolicyViolation: ``extra_claims`` tries to set a registered claim, or the lifetime
            is not a positive whole number of seconds.
        ValueError: a scope token breaks the RFC 6749 §3.3 grammar.
    """
    if isinstance(lifetime, bool) or not isinstance(lifetime, int) or lifetime <= 0:
        raise PolicyViolation("exp", lifetime, "token lifetime must be a positive integer")
    token_id, issued_at = jti or new_token_id(), int(now)
    claims = _registered_claims(
        issuer=issuer,
        audience=audience,
        subject=subject,
        client_id=client_id,
        issued_at=issued_at,
        expires_at=issued_at + lifetime,
        scope=_scope(scopes),
        token_id=token_id,
    )
    cnf = None if confirmation is None else dict(confirmation)
    for name, value in (("identifier", identifier), (FAMILY_CLAIM, family), ("cnf", cnf)):
        if value is not None:
            claims[name] = value
    for name, value in (extra_claims or {}).items():
        if name in REGISTERED_CLAIMS:
            raise PolicyViolation(name, value, "registered claims cannot be set as extras")
        claims[name] = value
    header = _header_segment(signing_key.alg, signing_key.kid)
    signing_input = f"{header}.{b64url_encode(compact_json(claims))}"
    signature = signing_key.sign(signing_input.encode("ascii"))
    return IssuedToken(
        token=f"{signing_input}.{b64url_encode(signature)}",
        jti=token_id,
        kid=signing_key.kid,
        issued_at=issued_at,
        expires_at=issued_at + lifetime,
        claims=MappingProxyType(claims),
    )


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """The claims of an access token that passed every check."""

    subject: str
    jti: str
    client_id: str
    issued_at: int
    expires_at: int
    scopes: frozenset[str]
    kid: str
    claims: Mapping[str, Any] = field(repr=False)

    @property
    def identifier(self) -> str | None:
        """JWThenticator's ``identifier`` claim, when the token carries one."""
        value = self.claims.get("identifier")
        return value if isinstance(value, str) else None

    @property
    def jkt(self) -> str | None:
        """The JWK thumbprint a DPoP-bound token is bound to (``cnf.jkt``, RFC 9449 §6.1).

        None for a bearer token (or a ``cnf`` without a string ``jkt``).
        """
        confirmation = self.claims.get("cnf")
        if not isinstance(confirmation, Mapping):
            return None
        value = confirmation.get("jkt")
        return value if isinstance(value, str) else None

    def require_scopes(self, required: Iterable[str]) -> None:
        """Raise `InsufficientScopeError` unless the token holds every ``required`` scope."""
        missing = frozenset(required) - self.scopes
        if missing:
            raise InsufficientScopeError(
                f"token lacks required scope(s): {format_scope(missing)}", required=missing
            )


class RevocationCheck(Protocol):
    """Answers whether a verified token has since been revoked; must be cheap and sync."""

    def is_revoked(self, token: VerifiedToken) -> bool: ...


def peek_unverified_claims(token: str | bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return a token's header and claims WITHOUT checking its signature or any claim.

    For diagnostics (``keyturn token inspect``) only: nothing read here may decide access.

    Raises:
        MalformedTokenError: the token is not a compact JWS with JSON header and payload.
    """
    header, payload, _ = _split(token, MAX_TOKEN_BYTES)
    return _json_object(header, "header"), _json_object(payload, "payload")


def verify_access_token(
    token: str | bytes,
    *,
    keys: KeyLookup,
    issuer: str,
    audience: str,
    now: float,
    leeway: int = DEFAULT_LEEWAY,
    max_lifetime: int = DEFAULT_MAX_LIFETIME,
    token_type: str = ACCESS_TOKEN_TYPE,
    max_token_bytes: int = MAX_TOKEN_BYTES,
) -> VerifiedToken:
    """Verify an access token completely and return its claims.

    Raises:
        InvalidTokenError: one of its subclasses says which check failed; the message never
            contains the token.
    """
    header_segment, payload_segment, signature_segment = _split(token, max_token_bytes)
    key = _check_header(_parse_header(header_segment), keys, token_type)
    try:
        signature = b64url_decode(signature_segment)
    except ValueError as exc:
        raise MalformedTokenError("token signature is not canonical base64url") from exc
    signing_input = f"{header_segment}.{payload_segment}".encode("ascii")
    if not key.verify(signing_input, signature):
        raise TokenSignatureError("token signature does not verify")
    # The payload is parsed only after the signature holds (no work for forgers).
    claims = _json_object(payload_segment, "payload")
    exp, iat, scopes = _check_claims(
        claims,
        issuer=issuer,
        audience=audience,
        now=now,
        leeway=leeway,
        max_lifetime=max_lifetime,
    )
    return VerifiedToken(
        subject=claims["sub"],
        jti=claims["jti"],
        client_id=claims["client_id"],
        issued_at=iat,
        expires_at=exp,
        scopes=scopes,
        kid=key.kid,
        claims=MappingProxyType(claims),
    )


class VerifiedTokenCache:
    """A bounded LRU of verified tokens keyed on the exact token string.

    An entry lives until the token's ``exp``. Keying on the string is safe for a cache of
    *positive* results: another spelling of the same token (padding, ECDSA ``(r, n-s)``) just
    misses and is verified in full. Revocation is never decided here: the verifier still
    consults its `RevocationCheck` on every hit.
    """

    def __init__(self, maxsize: int = 10_000) -> None:
        if maxsize <= 0:
            raise ValueError("maxsize must be positive")
        self.maxsize = maxsize
        self._entries: OrderedDict[str, VerifiedToken] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str, now: float) -> VerifiedToken | None:
        """Return the cached result for ``token`` unless absent or expired."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                self.misses += 1
                return None
            if now >= entry.expires_at:
                del self._entries[token]
                self.misses += 1
                return None
            self._entries.move_to_end(token)
            self.hits += 1
            return entry

    def put(self, token: str, verified: VerifiedToken) -> None:
        """Remember a verified token, evicting the least recently used past ``maxsize``."""
        with self._lock:
            self._entries[token] = verified
            self._entries.move_to_end(token)
            while len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        """Forget every entry (called when the trusted key set changes)."""
        with self._lock:
            self._entries.clear()


class TokenVerifier:
    """A configured, hardened access-token verifier with an optional verified-token cache.

    Args:
        keys: the trusted keys (a `KeySet`, or anything with ``get(kid)``).
        issuer: the exact ``iss`` to accept.
        audience: the value ``aud`` must contain.
        leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        max_lifetime: the largest ``exp - iat`` accepted, in seconds.
        cache_size: entries in the verified-token cache; 0 disables it.
        revocation: consulted for every accepted token, cached or not.
        clock: returns the current UNIX time; inject a fixed one in tests.
        jwthenticator_tokens: also accept JWThenticator 1.6.3's tokens signed by a key
            published under its JWThenticator kid (`keyturn.core.jwthenticator_tokens`);
            only a JWKS that publishes such a key (after ``keyturn import jwthenticator``)
            makes any token of that shape pass.
    """

    def __init__(
        self,
        keys: KeyLookup,
        *,
        issuer: str,
        audience: str,
        leeway: int = DEFAULT_LEEWAY,
        max_lifetime: int = DEFAULT_MAX_LIFETIME,
        token_type: str = ACCESS_TOKEN_TYPE,
        max_token_bytes: int = MAX_TOKEN_BYTES,
        cache_size: int = 10_000,
        revocation: RevocationCheck | None = None,
        clock: Callable[[], float] = time.time,
        jwthenticator_tokens: bool = True,
    ) -> None:
        if not 0 <= leeway <= 300:
            raise ValueError("leeway must be between 0 and 300 seconds")
        if max_lifetime <= 0:
            raise ValueError("max_lifetime must be positive")
        self._keys = keys
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.max_lifetime = max_lifetime
        self.token_type = token_type
        self.max_token_bytes = max_token_bytes
        self.cache = VerifiedTokenCache(cache_size) if cache_size else None
        self.revocation = revocation
        self.clock = clock
        self.jwthenticator_tokens = jwthenticator_tokens

    @property
    def keys(self) -> KeyLookup:
        """The trusted keys."""
        return self._keys

    def set_keys(self, keys: KeyLookup) -> None:
        """Trust a new key set (after a rotation) and drop every cached result."""
        self._keys = keys
        if self.cache is not None:
            self.cache.clear()

    def verify(
        self, token: str | bytes, *, required_scopes: Iterable[str] = (), now: float | None = None
    ) -> VerifiedToken:
        """Verify ``token`` and check it holds ``required_scopes``.

        Raises:
            InvalidTokenError: the token is not valid (a subclass says why).
            InsufficientScopeError: valid, but a required scope is missing.
        """
        current = self.clock() if now is None else now
        cache = self.cache
        verified = cache.get(token, current) if cache is not None and type(token) is str else None
        if verified is None or self._keys.get(verified.kid) is None:
            try:
                verified = verify_access_token(
                    token,
                    keys=self._keys,
                    issuer=self.issuer,
                    audience=self.audience,
                    now=current,
                    leeway=self.leeway,
                    max_lifetime=self.max_lifetime,
                    token_type=self.token_type,
                    max_token_bytes=self.max_token_bytes,
                )
            except TokenClaimsError:
                # A JWThenticator token (typ JWT, no iss/sub/jti) signed by a key published
                # under its JWThenticator kid, after `keyturn import jwthenticator`.
                legacy = self._jwthenticator_token(token, current)
                if legacy is None:
                    raise
                verified = legacy
            if cache is not None and type(token) is str:
                cache.put(token, verified)
        if self.revocation is not None and self.revocation.is_revoked(verified):
            raise RevokedTokenError("token has been revoked")
        if required_scopes:
            verified.require_scopes(required_scopes)
        return verified

    def _jwthenticator_token(self, token: str | bytes, now: float) -> VerifiedToken | None:
        """``token`` verified as JWThenticator's, or None when it is not of that profile.

        Its lifetime cap is at least `DEFAULT_MAX_LIFETIME`: JWThenticator issued 25-hour
        tokens, whatever lifetime this deployment now gives its own.
        """
        if not self.jwthenticator_tokens:
            return None
        from keyturn.core.jwthenticator_tokens import (  # noqa: PLC0415 -- import cycle
            verify_jwthenticator_token,
        )

        return verify_jwthenticator_token(
            token,
            keys=self._keys,
            audience=self.audience,
            now=now,
            leeway=self.leeway,
            max_lifetime=max(self.max_lifetime, DEFAULT_MAX_LIFETIME),
            max_token_bytes=self.max_token_bytes,
        )
