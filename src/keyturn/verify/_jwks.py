"""`JWKSVerifier`: fetch the issuer's JWKS over httpx, cache it, verify tokens locally.

The cache follows the JWKS response's ``Cache-Control`` within ``[min_ttl, max_ttl]``.
A token whose ``kid`` is not in the cached set triggers one refetch, at most once per
``refetch_interval`` however many requests carry unknown kids (T-ROT-04; PyJWT
CVE-2026-48524). A failed refresh keeps the keys already held (PyJWT GHSA-fhv5-28vv-h8m8):
an outage of the issuer must not become an outage of every service.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

import httpx

from keyturn.core.dpop import DEFAULT_PROOF_MAX_AGE
from keyturn.core.signing import KeySet
from keyturn.core.tokens import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_LIFETIME,
    RevocationCheck,
    TokenVerifier,
    VerifiedToken,
    peek_unverified_claims,
)
from keyturn.errors import (
    MalformedTokenError,
    SigningKeyError,
    TokenSignatureError,
    VerifierUnavailableError,
)
from keyturn.verify._common import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT,
    cache_lifetime,
    check_url,
    fetch_capped,
)
from keyturn.verify._dpop import DPoPCheck, ReplayStore, Scheme

__all__ = ["JWKSVerifier"]

logger = logging.getLogger("keyturn.verify")

_ACCEPT: Final = {
    "Accept": "application/jwk-set+json, application/json",
    "Accept-Encoding": "identity",
}


class JWKSVerifier:
    """Verify access tokens against the issuer's published JWKS.

    Create one per service (it holds the cache) and close it with `aclose` or
    ``async with``. The first `verify` fetches the keys; call `refresh` at start-up to
    fail fast instead.

    Args:
        jwks_url: the issuer's JWKS, e.g. ``https://auth.example.com/.well-known/jwks.json``.
        issuer: the exact ``iss`` to accept.
        audience: the value ``aud`` must contain.
        client: an `httpx.AsyncClient` to fetch with (you close it); by default the
            verifier opens its own and closes it in `aclose`.
        allow_insecure_http: accept an ``http://`` URL (loopback and tests only).
        default_ttl: seconds to cache a JWKS whose response has no ``max-age``.
        min_ttl: the shortest the cache may live, whatever ``Cache-Control`` says.
        max_ttl: the longest; also bounds how long a key removed from the JWKS is trusted.
        refetch_interval: at least this many seconds between two fetches (unknown
            ``kid``, expiry, or retry after a failure).
        timeout: seconds a whole fetch may take (connect, headers and body).
        max_response_bytes: the largest JWKS body accepted.
        leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        max_lifetime: the largest ``exp - iat`` accepted, in seconds.
        cache_size: verified tokens remembered until they expire; 0 disables that cache.
        revocation: consulted for every accepted token.
        dpop_max_age: how old a DPoP proof's ``iat`` may be, in seconds.
        replay_store: where DPoP proof ``jti``s are claimed once; by default a
            `DPoPReplayCache` in this process (see ``docs/verify.md`` for replicas).
        clock: returns the current UNIX time; inject ``FakeClock.timestamp`` in tests.

    Raises:
        ValueError: the URL is not https (see ``allow_insecure_http``) or a bound is
            inconsistent.
    """

    def __init__(
        self,
        jwks_url: str,
        *,
        issuer: str,
        audience: str,
        client: httpx.AsyncClient | None = None,
        allow_insecure_http: bool = False,
        default_ttl: float = 300.0,
        min_ttl: float = 60.0,
        max_ttl: float = 3600.0,
        refetch_interval: float = 30.0,
        timeout: float = DEFAULT_TIMEOUT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        leeway: int = DEFAULT_LEEWAY,
        max_lifetime: int = DEFAULT_MAX_LIFETIME,
        cache_size: int = 10_000,
        revocation: RevocationCheck | None = None,
        dpop_max_age: int = DEFAULT_PROOF_MAX_AGE,
        replay_store: ReplayStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.jwks_url = check_url(
            jwks_url, allow_insecure_http=allow_insecure_http, what="JWKS URL"
        )
        if not 0 < min_ttl <= default_ttl <= max_ttl:
            raise ValueError("need 0 < min_ttl <= default_ttl <= max_ttl")
        if refetch_interval <= 0 or timeout <= 0 or max_response_bytes <= 0:
            raise ValueError("refetch_interval, timeout and max_response_bytes must be positive")
        self.default_ttl = default_ttl
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.refetch_interval = refetch_interval
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self._client = client
        self._owns_client = client is None
        self._clock = clock
        self._token_verifier = TokenVerifier(
            KeySet(),
            issuer=issuer,
            audience=audience,
            leeway=leeway,
            max_lifetime=max_lifetime,
            cache_size=cache_size,
            revocation=revocation,
            clock=clock,
        )
        self._dpop = DPoPCheck(
            leeway=leeway, max_age=dpop_max_age, replay_store=replay_store, clock=clock
        )
        self._keys: KeySet | None = None
        self._expires_at = -math.inf
        self._last_attempt = -math.inf
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"JWKSVerifier({self.jwks_url!r})"

    @property
    def keys(self) -> KeySet | None:
        """The key set fetched last, or None before the first successful fetch."""
        return self._keys

    @property
    def expires_at(self) -> float:
        """When (UNIX time) the cached key set goes stale; -inf before the first fetch."""
        return self._expires_at

    async def __aenter__(self) -> JWKSVerifier:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client the verifier opened (a client you passed stays open)."""
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None

    async def refresh(self) -> KeySet:
        """Fetch the JWKS now, whatever the cache says; concurrent calls share one fetch.

        Raises:
            VerifierUnavailableError: the JWKS could not be fetched or is not a JWK Set.
        """
        started = self._clock()
        async with self._lock:
            if self._keys is None or self._last_attempt < started:
                await self._fetch(self._clock())
            if self._keys is None:
                raise VerifierUnavailableError("the JWKS could not be fetched")
            return self._keys

    async def verify(
        self,
        token: str,
        *,
        required_scopes: Iterable[str] = (),
        dpop_proof: str | None = None,
        method: str | None = None,
        url: str | None = None,
        scheme: Scheme | None = None,
    ) -> VerifiedToken:
        """Verify ``token`` as the request presents it and check it holds ``required_scopes``.

        A DPoP-bound token (``cnf.jkt``) passes only as ``scheme="dpop"`` with a
        ``dpop_proof`` for this request's ``method`` and ``url`` (RFC 9449 §7.1); see
        `keyturn.verify.Verifier.verify`.

        Raises:
            InvalidTokenError: the token is not valid (a subclass says why), including a
                ``kid`` still unknown after the one permitted refetch.
            InvalidDPoPProofError: bound token as Bearer or without a valid, fresh proof.
            InsufficientScopeError: valid, but a required scope is missing.
            VerifierUnavailableError: no usable key set (or the refetch its unknown
                ``kid`` needed) could be fetched; answer 503, not 401.
        """
        verified = await self._verified(token)
        await self._dpop.check(
            verified, token, scheme=scheme, dpop_proof=dpop_proof, method=method, url=url
        )
        verified.require_scopes(required_scopes)
        return verified

    async def _verified(self, token: str) -> VerifiedToken:
        await self._ensure_fresh()
        try:
            return self._token_verifier.verify(token)
        except TokenSignatureError as exc:
            kid = self._unknown_kid(token)
            if kid is None:
                raise
            error = exc
        if await self._refetch_for(kid):
            return self._token_verifier.verify(token)
        raise error

    def _unknown_kid(self, token: str) -> str | None:
        """The token's ``kid`` when it names no cached key (a bad signature is not that)."""
        try:
            header, _ = peek_unverified_claims(token)
        except MalformedTokenError:
            return None
        kid: Any = header.get("kid")
        if not isinstance(kid, str) or self._keys is None or kid in self._keys:
            return None
        return kid

    def _cooling_down(self, now: float) -> bool:
        return now - self._last_attempt < self.refetch_interval

    async def _ensure_fresh(self) -> None:
        if self._keys is not None and self._clock() < self._expires_at:
            return
        async with self._lock:
            now = self._clock()
            if self._keys is not None and now < self._expires_at:
                return  # another task refreshed while this one waited
            if self._cooling_down(now):
                if self._keys is None:
                    wait = self._last_attempt + self.refetch_interval - now
                    raise VerifierUnavailableError(
                        "the JWKS could not be fetched; retrying shortly",
                        retry_after=max(1, math.ceil(wait)),
                    )
                return  # keep serving the stale keys until the next attempt is due
            try:
                await self._fetch(now)
            except VerifierUnavailableError as exc:
                if self._keys is None:
                    raise
                logger.warning(
                    "JWKS refresh from %s failed (%s); keeping %d cached keys",
                    self.jwks_url,
                    exc.message,
                    len(self._keys),
                )

    async def _refetch_for(self, kid: str) -> bool:
        """Fetch once for an unknown ``kid``; True when the new set has it."""
        async with self._lock:
            if self._keys is not None and kid in self._keys:
                return True  # the fetch another task made while this one waited
            now = self._clock()
            if self._cooling_down(now):
                return False
            logger.info("unknown kid %s: refetching the JWKS from %s", kid, self.jwks_url)
            await self._fetch(now)
            return self._keys is not None and kid in self._keys

    async def _fetch(self, now: float) -> None:
        """Download, parse and install the JWKS. Call with the lock held."""
        self._last_attempt = now
        if self._client is None:
            self._client = httpx.AsyncClient()
        request = self._client.build_request("GET", self.jwks_url, headers=_ACCEPT)
        response, body = await fetch_capped(
            self._client,
            request,
            timeout=self.timeout,
            max_bytes=self.max_response_bytes,
            what="the JWKS endpoint",
        )
        if response.status_code != 200:
            raise VerifierUnavailableError(
                f"the JWKS endpoint answered HTTP {response.status_code}"
            )
        try:
            keys = KeySet.from_jwks(json.loads(body))
        except (ValueError, RecursionError, SigningKeyError) as exc:  # JSONDecodeError too
            raise VerifierUnavailableError("the JWKS endpoint did not return a JWK Set") from exc
        lifetime = cache_lifetime(
            response.headers.get("cache-control"),
            response.headers.get("age"),
            default=self.default_ttl,
            minimum=self.min_ttl,
            maximum=self.max_ttl,
        )
        self._install(keys, expires_at=now + lifetime)

    def _install(self, keys: KeySet, *, expires_at: float) -> None:
        previous = self._keys
        if previous is None or keys.jwks() != previous.jwks():
            # A new set also drops every cached verification result (TokenVerifier).
            self._token_verifier.set_keys(keys)
            old = previous.kids if previous is not None else frozenset()
            logger.info(
                "JWKS from %s: %d keys (added %s, removed %s)",
                self.jwks_url,
                len(keys),
                sorted(keys.kids - old),
                sorted(old - keys.kids),
            )
        self._keys = keys
        self._expires_at = expires_at
