"""DPoP at the server (RFC 9449): checking a request's proof, nonces, and the binding rules.

`DPoPChecker.check` is the one check of a request's ``DPoP`` header that ``/v1/token``,
``/v1/login`` and ``/v1/validate`` use: `keyturn.core.dpop.verify_dpop_proof` (every
§4.3 check that needs no storage), the server-nonce policy (§8, `DPoPNonces`) and the
proof's ``jti`` claimed once in the replay store that private_key_jwt assertions use
(the database's ``replay_guard`` or Redis), so a proof is single use across instances.

The rules for a verified access token, which the verifier library mirrors:

* a check that can see the proof (``/v1/validate``) applies
  `keyturn.core.dpop.check_binding`: a bound token needs ``Authorization: DPoP`` and a
  proof by the key of its ``cnf.jkt`` (no downgrade to Bearer);
* a check that cannot (legacy ``/validate``, ``/validate_request``, `TokenService.validate`
  by default) refuses a bound token: `refuse_unproven` raises `DPoPBoundTokenError`;
* introspection (RFC 7662, RFC 9449 §6.2) reports a bound token with its ``cnf``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Final

from keyturn.core.dpop import (
    MAX_PROOF_BYTES,
    DPoPProof,
    InvalidDPoPProofError,
    normalize_htu,
    verify_dpop_proof,
)
from keyturn.core.records import ApiKeyRecord, UserRecord
from keyturn.core.tokens import VerifiedToken
from keyturn.errors import InvalidTokenError
from keyturn.service.config import ServiceConfig
from keyturn.service.context import ServiceContext
from keyturn.storage.base import ReplayRepository

__all__ = [
    "DPOP_NONCE_HEADER",
    "NONCE_KEY_PURPOSE",
    "NONCE_WINDOW",
    "DPoPBoundTokenError",
    "DPoPChecker",
    "DPoPNonces",
    "refuse_unproven",
    "require_proof",
]

#: RFC 9449 §8.1: the response header carrying a fresh server nonce.
DPOP_NONCE_HEADER: Final = "DPoP-Nonce"
#: A nonce is made for a window of this many seconds and accepted during that window and
#: the next one (so it lives between one and two windows).
NONCE_WINDOW: Final = 300
#: `keyturn.core.secrets.Pepper.derive`'s purpose for the nonce key (same on every instance).
NONCE_KEY_PURPOSE: Final = "dpop-nonce"
_NONCE_BYTES: Final = 18  # 144 bits of HMAC: 24 base64url characters


class DPoPBoundTokenError(InvalidTokenError):
    """A DPoP-bound token where its proof cannot be checked, or presented as Bearer.

    An `InvalidTokenError` (401 on every token-check route) with RFC 9449's error code.
    """

    error_code = "invalid_dpop_proof"


def require_proof(
    config: ServiceConfig, holder: ApiKeyRecord | UserRecord | None, jkt: str | None
) -> None:
    """Refuse a token request without a DPoP proof where one is required.

    ``holder`` None checks the deployment-wide rule (``dpop_required``) alone; a key adds
    its own attribute (`ApiKeyRecord.dpop_required`).

    Raises:
        InvalidDPoPProofError: DPoP is required and ``jkt`` is None (no proof came).
    """
    if jkt is not None:
        return
    if config.dpop_required:
        raise InvalidDPoPProofError("this server requires a DPoP proof (RFC 9449) for tokens")
    if isinstance(holder, ApiKeyRecord) and holder.dpop_required:
        raise InvalidDPoPProofError("this key requires a DPoP proof (RFC 9449) for tokens")


def refuse_unproven(verified: VerifiedToken) -> None:
    """Refuse a bound token at a check that cannot see a DPoP proof (RFC 9449 §7.1).

    Raises:
        DPoPBoundTokenError: the token has ``cnf.jkt``.
    """
    if "cnf" in verified.claims and verified.jkt is not None:
        raise DPoPBoundTokenError(
            "the token is DPoP-bound: present it as 'Authorization: DPoP' with a DPoP proof"
        )


class DPoPNonces:
    """Stateless server nonces (RFC 9449 §8): an HMAC of the time window.

    Every instance derives the same key from the shared pepper, so a nonce one instance
    issued is accepted by all of them, without storage.
    """

    __slots__ = ("_key", "_window")

    def __init__(self, key: bytes, *, window: int = NONCE_WINDOW) -> None:
        self._key = bytes(key)
        self._window = window

    def _for(self, window: int) -> str:
        message = b"dpop nonce\x00" + window.to_bytes(8, "big", signed=True)
        digest = hmac.digest(self._key, message, hashlib.sha256)[:_NONCE_BYTES]
        return base64.urlsafe_b64encode(digest).decode("ascii")

    def issue(self, now: int) -> str:
        """The nonce of the current window."""
        return self._for(now // self._window)

    def accepts(self, nonce: str, now: int) -> bool:
        """Whether ``nonce`` is the current or the previous window's."""
        if not nonce.isascii():  # ours are base64url; a lone surrogate must not reach encode
            return False
        window = now // self._window
        return any(
            hmac.compare_digest(nonce.encode("ascii"), self._for(w).encode("ascii"))
            for w in (window, window - 1)
        )


def _unverified_claims(proof: str) -> dict[str, Any]:
    """The proof's payload before any check (only to pick the htu and nonce to check)."""
    if len(proof) > MAX_PROOF_BYTES:
        return {}  # verify_dpop_proof refuses it
    try:
        segment = proof.split(".")[1]
        value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (IndexError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _htu_for(claims: dict[str, Any], urls: Sequence[str]) -> str:
    """Which of the request's acceptable URLs the proof's ``htu`` names (else the first)."""
    htu = claims.get("htu")
    if isinstance(htu, str) and len(urls) > 1:
        try:
            wanted = normalize_htu(htu)
            for url in urls:
                if normalize_htu(url) == wanted:
                    return url
        except ValueError:
            pass
    return urls[0]


class DPoPChecker:
    """Checks a request's DPoP proof: RFC 9449 §4.3, the nonce policy and single use."""

    def __init__(
        self, context: ServiceContext, replays: ReplayRepository, nonces: DPoPNonces
    ) -> None:
        self._context = context
        self._replays = replays
        self.nonces = nonces

    def nonce(self) -> str | None:
        """A fresh nonce for a ``DPoP-Nonce`` header, or None when nonces are off."""
        if not self._context.config.dpop_nonce:
            return None
        return self.nonces.issue(int(self._context.clock().timestamp()))

    async def check(
        self,
        proofs: Sequence[str],
        *,
        method: str,
        urls: Sequence[str],
        access_token: str | None = None,
        use_nonce: bool = False,
    ) -> DPoPProof | None:
        """The request's checked proof, or None when it sent no ``DPoP`` header.

        Args:
            proofs: the values of the request's ``DPoP`` headers (RFC 9449 §4.3: one).
            method: the request's method (``htm``).
            urls: the URLs ``htu`` may name, e.g. the endpoint's external URL and the URL
                the request arrived at (compared per §4.3, normalised).
            access_token: the token the request presents (the proof's ``ath``).
            use_nonce: apply the nonce policy (``dpop_nonce``) to this request.

        Raises:
            InvalidDPoPProofError: several headers, a failed check, or a replayed ``jti``.
            UseDPoPNonceError: a nonce is required and the proof has none or a stale one.
        """
        if not proofs:
            return None
        observer = self._context.observer
        if len(proofs) > 1:
            observer.authentication_failed("invalid_dpop_proof")
            raise InvalidDPoPProofError("send exactly one DPoP header")
        config = self._context.config
        now = self._context.clock()
        seconds = int(now.timestamp())
        claims = _unverified_claims(proofs[0])
        nonce = None
        if use_nonce and config.dpop_nonce:
            sent = claims.get("nonce")
            accepted = isinstance(sent, str) and self.nonces.accepts(sent, seconds)
            nonce = sent if accepted and isinstance(sent, str) else self.nonces.issue(seconds)
        try:
            proof = verify_dpop_proof(
                proofs[0],
                method=method,
                url=_htu_for(claims, urls),
                now=seconds,
                leeway=config.leeway,
                max_age=config.dpop_proof_max_age,
                access_token=access_token,
                nonce=nonce,
            )
        except InvalidDPoPProofError:
            observer.authentication_failed("invalid_dpop_proof")
            raise
        # Single use across every instance, kept until the proof's iat leaves the window.
        keep_until = proof.iat + config.dpop_proof_max_age + config.leeway
        expires_at = datetime.fromtimestamp(max(keep_until, seconds + 1), UTC)
        if not await self._replays.claim(proof.replay_id, expires_at=expires_at, now=now):
            observer.authentication_failed("dpop_proof_replayed")
            raise InvalidDPoPProofError("the DPoP proof was used before (its jti is spent)")
        return proof
