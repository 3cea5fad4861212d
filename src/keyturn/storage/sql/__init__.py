"""The SQL storage: async repositories over SQLAlchemy Core, on SQLite or PostgreSQL.

`SQLStorage` (`keyturn.storage.sql.storage`) is the entry point and picks the database's
hot path (`keyturn.storage.sql.hot`) once, when it is built. Each repository has a module
of its own (`keys`, `refresh_tokens`, `users`, `signing_keys`, `revocations`, `audit`,
`server_settings`, `client_keys`), written once against the pooled path
(`keyturn.storage.sql.pooled`) and the rows and statements built once (`rows`,
`statements`).
"""

from __future__ import annotations

from keyturn.storage.sql.audit import SQLAuditRepository
from keyturn.storage.sql.client_keys import SQLClientKeyRepository, SQLReplayRepository
from keyturn.storage.sql.keys import SQLKeyRepository
from keyturn.storage.sql.refresh_tokens import SQLRefreshTokenRepository
from keyturn.storage.sql.revocations import SQLRevocationRepository
from keyturn.storage.sql.signing_keys import SQLSigningKeyRepository
from keyturn.storage.sql.storage import SQLStorage
from keyturn.storage.sql.users import SQLUserRepository

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
