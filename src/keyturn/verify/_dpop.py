"""DPoP-bound tokens at the verifier (RFC 9449 §7): the proof, the binding, single use.

`DPoPCheck` is what `JWKSVerifier` and `OfflineVerifier` run after a token's own checks:
no downgrade (a token with ``cnf.jkt`` only as ``DPoP``, with a proof), the proof's checks
of `keyturn.core.dpop.verify_dpop_proof` (``ath`` of this token, ``htm``/``htu`` of this
request), the proof made with the token's key, and its ``jti`` used once.

Single use lives in a `ReplayStore`. The default, `DPoPReplayCache`, is per process: a
proof replayed to *another* replica passes there until it is too old (its ``iat`` plus the
proof max age plus the leeway). Plug a shared store to close that window: any object with
the `ReplayStore` verb, such as Keyturn's own Redis replay guard.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

from keyturn.core.dpop import (
    DEFAULT_PROOF_MAX_AGE,
    InvalidDPoPProofError,
    check_binding,
    verify_dpop_proof,
)
from keyturn.core.tokens import VerifiedToken
from keyturn.errors import VerifierUnavailableError

__all__ = ["DEFAULT_REPLAY_CACHE_SIZE", "DPoPCheck", "DPoPReplayCache", "ReplayStore", "Scheme"]

Scheme = Literal["bearer", "dpop"]
#: Proofs remembered at once by the in-process cache (about 150 bytes each).
DEFAULT_REPLAY_CACHE_SIZE: Final = 100_000


class ReplayStore(Protocol):
    """Where proof ``jti``s are claimed once; share one between replicas to close the window.

    Keyturn's `keyturn.storage.redis_replay.RedisReplayRepository` has this verb.
    """

    async def claim(self, replay_id: str, *, expires_at: datetime, now: datetime) -> bool:
        """Record ``replay_id`` until ``expires_at``; True only the first time.

        Raises:
            StorageUnavailableError: the store cannot answer (refuse the proof: 503).
        """
        ...


class DPoPReplayCache:
    """A bounded in-process `ReplayStore`: entries live until they expire.

    When it holds ``max_entries`` live proofs it refuses new ones (503 + ``Retry-After``)
    rather than forget one that could still be replayed.
    """

    def __init__(self, max_entries: int = DEFAULT_REPLAY_CACHE_SIZE) -> None:
        if max_entries <= 0:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def claim(self, replay_id: str, *, expires_at: datetime, now: datetime) -> bool:
        """Record ``replay_id`` until ``expires_at``; True only the first time.

        Raises:
            VerifierUnavailableError: the cache is full of proofs that could still be replayed.
        """
        current = now.timestamp()
        self._drop_expired(current, full_scan=len(self._entries) >= self.max_entries)
        seen = self._entries.get(replay_id)
        if seen is not None and seen > current:
            return False
        if len(self._entries) >= self.max_entries:
            wait = min(self._entries.values()) - current
            raise VerifierUnavailableError(
                "the DPoP replay cache is full", retry_after=max(1, math.ceil(wait))
            )
        self._entries[replay_id] = expires_at.timestamp()
        return True

    def _drop_expired(self, now: float, *, full_scan: bool) -> None:
        # Entries arrive roughly in expiry order: the front is what expires first.
        while self._entries:
            replay_id, expires = next(iter(self._entries.items()))
            if expires > now:
                break
            del self._entries[replay_id]
        if full_scan:
            for replay_id in [r for r, expires in self._entries.items() if expires <= now]:
                del self._entries[replay_id]


class DPoPCheck:
    """The RFC 9449 checks a verifier runs on a verified token and its request.

    Args:
        leeway: seconds of clock skew tolerated on the proof's ``iat``.
        max_age: how old a proof's ``iat`` may be, in seconds.
        replay_store: where proof ``jti``s are claimed; a `DPoPReplayCache` by default.
        clock: returns the current UNIX time.
    """

    def __init__(
        self,
        *,
        leeway: int,
        max_age: int = DEFAULT_PROOF_MAX_AGE,
        replay_store: ReplayStore | None = None,
        clock: Callable[[], float],
    ) -> None:
        if max_age <= 0:
            raise ValueError("the DPoP proof max age must be positive")
        self.leeway = leeway
        self.max_age = max_age
        self.replay_store: ReplayStore = DPoPReplayCache() if replay_store is None else replay_store
        self._clock = clock

    async def check(
        self,
        verified: VerifiedToken,
        token: str,
        *,
        scheme: Scheme | None,
        dpop_proof: str | None,
        method: str | None,
        url: str | None,
    ) -> None:
        """Whether ``verified`` (the checked ``token``) may be used as this request presents it.

        ``scheme`` None means ``"dpop"`` when a proof is given, else ``"bearer"``.

        Raises:
            InvalidDPoPProofError: a bound token as Bearer or without a proof, a bearer token
                as DPoP, a proof failing a check, made with another key, or replayed.
            StorageUnavailableError: the replay store cannot answer.
            ValueError: a proof without the request's ``method`` and ``url``.
        """
        used: Scheme = scheme or ("dpop" if dpop_proof is not None else "bearer")
        if used == "bearer" or dpop_proof is None or verified.jkt is None:
            check_binding(verified.jkt, None, scheme=used)
            return
        if method is None or url is None:
            raise ValueError("a DPoP proof is checked against the request's method and url")
        now = self._clock()
        proof = verify_dpop_proof(
            dpop_proof,
            method=method,
            url=url,
            now=int(now),
            leeway=self.leeway,
            max_age=self.max_age,
            access_token=token,
        )
        check_binding(verified.jkt, proof, scheme=used)
        # The proof could pass until its iat is max_age + leeway old: remember it that long.
        expires_at = datetime.fromtimestamp(proof.iat + self.max_age + self.leeway, UTC)
        if not await self.replay_store.claim(
            proof.replay_id, expires_at=expires_at, now=datetime.fromtimestamp(now, UTC)
        ):
            raise InvalidDPoPProofError("the DPoP proof has been used before (jti replayed)")
