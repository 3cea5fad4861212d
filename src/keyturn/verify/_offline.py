"""`OfflineVerifier`: verify against a key set you already hold; no network at all."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from keyturn.core.dpop import DEFAULT_PROOF_MAX_AGE
from keyturn.core.tokens import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_LIFETIME,
    KeyLookup,
    RevocationCheck,
    TokenVerifier,
    VerifiedToken,
)
from keyturn.verify._dpop import DPoPCheck, ReplayStore, Scheme

__all__ = ["OfflineVerifier"]


class OfflineVerifier:
    """Verify tokens with a static key set (a `KeySet`, e.g. `KeySet.from_jwks(document)`).

    For air-gapped services, tests, and deployments that ship the public keys with the
    configuration. The checks are those of `keyturn.core.tokens.TokenVerifier`.

    Args:
        keys: the trusted keys.
        issuer: the exact ``iss`` to accept.
        audience: the value ``aud`` must contain.
        leeway: seconds of clock skew tolerated on ``exp``, ``nbf`` and ``iat``.
        max_lifetime: the largest ``exp - iat`` accepted, in seconds.
        cache_size: verified tokens remembered until they expire; 0 disables the cache.
        revocation: consulted for every accepted token.
        dpop_max_age: how old a DPoP proof's ``iat`` may be, in seconds.
        replay_store: where DPoP proof ``jti``s are claimed once; by default a
            `DPoPReplayCache` in this process (see ``docs/verify.md`` for replicas).
        clock: returns the current UNIX time; inject ``FakeClock.timestamp`` in tests.
    """

    def __init__(
        self,
        keys: KeyLookup,
        *,
        issuer: str,
        audience: str,
        leeway: int = DEFAULT_LEEWAY,
        max_lifetime: int = DEFAULT_MAX_LIFETIME,
        cache_size: int = 10_000,
        revocation: RevocationCheck | None = None,
        dpop_max_age: int = DEFAULT_PROOF_MAX_AGE,
        replay_store: ReplayStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_verifier = TokenVerifier(
            keys,
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

        A DPoP-bound token passes only with a proof (see `keyturn.verify.Verifier.verify`).

        Raises:
            InvalidTokenError: the token is not valid (a subclass says why).
            InvalidDPoPProofError: bound token as Bearer or without a valid, fresh proof.
            InsufficientScopeError: valid, but a required scope is missing.
        """
        verified = self.token_verifier.verify(token)
        await self._dpop.check(
            verified, token, scheme=scheme, dpop_proof=dpop_proof, method=method, url=url
        )
        verified.require_scopes(required_scopes)
        return verified
