"""Verify Keyturn access tokens in the services that receive them.

* `JWKSVerifier` fetches the issuer's JWKS over https, caches it (``Cache-Control``
  within bounds), refetches once for an unknown ``kid``, and verifies locally with the
  hardened `keyturn.core.tokens.TokenVerifier`: the usual choice.
* `OfflineVerifier` verifies against a key set you hold: no network.
* `RemoteVerifier` asks the Keyturn server's ``/v1/validate`` for every token
  (JWThenticator's model): revocation applies at once, at a round trip per request.

All three satisfy `Verifier` (``await verifier.verify(token, required_scopes=...)``),
which is what `keyturn.integrations.aiohttp` and `keyturn.integrations.starlette` accept.
All three check DPoP-bound tokens (RFC 9449): ``verify(token, dpop_proof=, method=, url=,
scheme="dpop")``; a bound token sent as Bearer is refused. `JWKSVerifier` and
`OfflineVerifier` remember used proofs in a `ReplayStore` (a `DPoPReplayCache` by default).
See ``docs/verify.md``.
"""

from __future__ import annotations

from keyturn.core.dpop import InvalidDPoPProofError
from keyturn.core.tokens import VerifiedToken
from keyturn.errors import VerifierUnavailableError
from keyturn.verify._common import Verifier, cache_lifetime
from keyturn.verify._dpop import DPoPReplayCache, ReplayStore, Scheme
from keyturn.verify._jwks import JWKSVerifier
from keyturn.verify._offline import OfflineVerifier
from keyturn.verify._remote import RemoteVerifier

__all__ = [
    "DPoPReplayCache",
    "InvalidDPoPProofError",
    "JWKSVerifier",
    "OfflineVerifier",
    "RemoteVerifier",
    "ReplayStore",
    "Scheme",
    "VerifiedToken",
    "Verifier",
    "VerifierUnavailableError",
    "cache_lifetime",
]
