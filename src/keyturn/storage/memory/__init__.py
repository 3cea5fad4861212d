"""`InMemoryStorage`: the storage `Protocol`s (`keyturn.storage.base`) kept in dicts.

The second implementation of the storage interface, for tests of code built on
`keyturn.service.KeyturnService` (it ships as `keyturn.testing.InMemoryStorage`): no
database, no files, nothing to clean up. It keeps the same rules as the SQL storage and
runs the same contract tests (``tests/storage/``): lookups by hash, unique ids, hashes and
emails (`ConflictError`), an audit row with each change, and atomic verbs. Each verb
checks everything before it changes anything and never awaits in between, so concurrent
callers on one event loop see it whole or not at all, as a transaction would give them.

It lives in one process: it is not shared between workers and forgets everything when
the process ends. Records are frozen; they are stored and returned as they are.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from keyturn.core.records import AuditEvent
from keyturn.storage.memory._tables import Tables
from keyturn.storage.memory.repositories import (
    InMemoryAuditRepository,
    InMemoryClientKeyRepository,
    InMemoryKeyRepository,
    InMemoryRefreshTokenRepository,
    InMemoryReplayRepository,
    InMemoryRevocationRepository,
    InMemorySigningKeyRepository,
    InMemoryUserRepository,
)

__all__ = [
    "InMemoryAuditRepository",
    "InMemoryClientKeyRepository",
    "InMemoryKeyRepository",
    "InMemoryRefreshTokenRepository",
    "InMemoryReplayRepository",
    "InMemoryRevocationRepository",
    "InMemorySigningKeyRepository",
    "InMemoryStorage",
    "InMemoryUserRepository",
]


class InMemoryStorage:
    """`keyturn.storage.base.Storage` in this process's memory, for tests.

    Pass it as ``storage=`` to `keyturn.service.KeyturnService`; a fresh instance is an
    empty database.
    """

    def __init__(self) -> None:
        tables = Tables()
        self._tables = tables
        self._keys = InMemoryKeyRepository(tables)
        self._refresh_tokens = InMemoryRefreshTokenRepository(tables)
        self._users = InMemoryUserRepository(tables)
        self._signing_keys = InMemorySigningKeyRepository(tables)
        self._revocations = InMemoryRevocationRepository(tables)
        self._audit = InMemoryAuditRepository(tables)
        self._client_keys = InMemoryClientKeyRepository(tables)
        self._replays = InMemoryReplayRepository(tables)

    @property
    def keys(self) -> InMemoryKeyRepository:
        """API keys."""
        return self._keys

    @property
    def refresh_tokens(self) -> InMemoryRefreshTokenRepository:
        """Refresh tokens."""
        return self._refresh_tokens

    @property
    def users(self) -> InMemoryUserRepository:
        """People who log in with a password."""
        return self._users

    @property
    def signing_keys(self) -> InMemorySigningKeyRepository:
        """Signing keys."""
        return self._signing_keys

    @property
    def revocations(self) -> InMemoryRevocationRepository:
        """Revoked access tokens and revocation snapshots."""
        return self._revocations

    @property
    def audit(self) -> InMemoryAuditRepository:
        """The audit trail."""
        return self._audit

    @property
    def client_keys(self) -> InMemoryClientKeyRepository:
        """Public keys of clients (``private_key_jwt``)."""
        return self._client_keys

    @property
    def replays(self) -> InMemoryReplayRepository:
        """Single-use ids (client assertion ``jti``s)."""
        return self._replays

    async def claim_setting(self, name: str, value: str, *, at: datetime, audit: AuditEvent) -> str:
        """Store server setting ``name`` as ``value`` unless it is set; return the stored value."""
        settings = self._tables.settings
        if name in settings:
            return settings[name]
        settings[name] = value
        self._tables.record(audit)
        return value

    async def ping(self) -> None:
        """Always reachable."""

    async def close(self) -> None:
        """Nothing to release."""


if TYPE_CHECKING:
    from keyturn.storage.base import Storage

    _conforms: type[Storage] = InMemoryStorage  # mypy checks it against the Protocol
