"""Helpers for testing code that uses Keyturn: a controllable clock and an in-memory storage.

Public on purpose (as ``structlog.testing`` is): applications testing their own token
handling can move time instead of sleeping, and run `keyturn.service.KeyturnService` on
`InMemoryStorage` (`keyturn.storage.memory`) without a database.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from keyturn.storage.memory import InMemoryStorage

__all__ = ["FakeClock", "InMemoryStorage"]


class FakeClock:
    """A clock that stands still until told to move; call it for the current time.

    Pass it as ``clock=`` to `keyturn.service.KeyturnService`, and ``clock.timestamp`` to
    `keyturn.core.tokens.TokenVerifier`.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 1, tzinfo=UTC)
        if self.now.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")

    def __call__(self) -> datetime:
        return self.now

    def timestamp(self) -> float:
        """The current time as UNIX seconds."""
        return self.now.timestamp()

    def advance(self, seconds: float = 0, **delta: float) -> datetime:
        """Move forward by ``seconds`` (or ``minutes=``, ``hours=``, ``days=``)."""
        self.now += timedelta(seconds=seconds, **delta)
        return self.now
