"""Refresh-token rotation as a pure decision: what to do with a presented token.

RFC 9700 §4.14.2 and OWASP ASVS 5.0 §10.4.5: every use of a rotating refresh token
returns a successor, and presenting an already-used token again means it was stolen
(or the client is broken): the whole family is revoked. A short grace window after the
first use tolerates concurrent or retried requests from the rightful client: such a
replay is refused, but does not revoke the family. Legacy (JWThenticator) tokens never
rotate: its client keeps reusing the first one (``docs/migrate-from-jwthenticator.md``).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import Enum

from keyturn.core.records import RefreshTokenRecord

__all__ = ["RefreshDecision", "decide_refresh"]


class RefreshDecision(Enum):
    """The outcome for one presentation of a refresh token."""

    ROTATE = "rotate"  # unused and live: mark used, issue a successor
    REUSE_LEGACY = "reuse_legacy"  # a legacy token: issue an access token, keep the token
    EXPIRED = "expired"  # past its absolute deadline
    REVOKED = "revoked"  # revoked (family revoked, key revoked, logout)
    REPLAY_IN_GRACE = "replay_in_grace"  # used moments ago: refuse, keep the family
    REUSE_DETECTED = "reuse_detected"  # used before the grace window: revoke the family


def decide_refresh(
    record: RefreshTokenRecord, *, now: datetime, grace: timedelta
) -> RefreshDecision:
    """Classify a presented refresh token at ``now``, given the reuse grace window."""
    if record.revoked_at is not None:
        return RefreshDecision.REVOKED
    if now >= record.expires_at:
        return RefreshDecision.EXPIRED
    if not record.rotating:
        return RefreshDecision.REUSE_LEGACY
    if record.used_at is None:
        return RefreshDecision.ROTATE
    if now - record.used_at <= grace:
        return RefreshDecision.REPLAY_IN_GRACE
    return RefreshDecision.REUSE_DETECTED
