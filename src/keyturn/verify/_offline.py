"""`OfflineVerifier`: verify against a key set you already hold; no network at all."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from keyturn.core.tokens import (
    DEFAULT_LEEWAY,
    DEFAULT_MAX_LIFETIME,
    KeyLookup,
    RevocationCheck,
    TokenVerifier,
    VerifiedToken,
)

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

    async def verify(self, token: str, *, required_scopes: Iterable[str] = ()) -> VerifiedToken:
        """Verify ``token`` and check it holds ``required_scopes``.

        Raises:
            InvalidTokenError: the token is not valid (a subclass says why).
            InsufficientScopeError: valid, but a required scope is missing.
        """
        return self.token_verifier.verify(token, required_scopes=required_scopes)
