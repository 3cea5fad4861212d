"""The SQL storage: async repositories over SQLAlchemy Core, on SQLite or PostgreSQL.

`SQLStorage` (`keyturn.storage.sql.storage`) is the entry point; see there.
"""

from __future__ import annotations

from keyturn.storage.sql.client_keys import SQLClientKeyRepository, SQLReplayRepository
from keyturn.storage.sql.storage import (
    SQLAuditRepository,
    SQLKeyRepository,
    SQLRefreshTokenRepository,
    SQLRevocationRepository,
    SQLSigningKeyRepository,
    SQLStorage,
    SQLUserRepository,
)

__all__ = [
    "SQLAuditRepository",
    "SQLClientKeyRepository",
    "SQLKeyRepository",
    "SQLRefreshTokenRepository",
    "SQLReplayRepository",
    "SQLRevocationRepository",
    "SQLSigningKeyRepository",
    "SQLStorage",
    "SQLUserRepository",
]
