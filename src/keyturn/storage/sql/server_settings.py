"""Server settings, written once: `SQLServerSettings` (`SQLStorage.claim_setting`)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa

from keyturn.core.records import (
    AuditEvent,
)
from keyturn.storage.sql.pooled import Repository
from keyturn.storage.sql.rows import (
    audit_params,
)
from keyturn.storage.sql.statements import (
    INSERT_AUDIT_EVENT,
)
from keyturn.storage.tables import (
    server_settings,
)

__all__ = ["SQLServerSettings"]


class SQLServerSettings(Repository):
    """Server settings, written once (`SQLStorage.claim_setting`)."""

    async def claim(self, name: str, value: str, *, at: datetime, audit: AuditEvent) -> str:
        """Store ``name`` = ``value`` unless it is set, and return the stored value."""
        # A concurrent claim of the same name waits for the first to commit and then
        # inserts nothing (PostgreSQL); SQLite's BEGIN IMMEDIATE runs them one at a time.
        # Either way the SELECT, a statement of its own, sees the winner's row.
        insert = (
            self._pooled.insert(server_settings)
            .values(name=name, value=value, created_at=at)
            .on_conflict_do_nothing(index_elements=[server_settings.c.name])
            .returning(server_settings.c.name)
        )
        stored = sa.select(server_settings.c.value).where(server_settings.c.name == name)
        event = audit_params(audit)

        def claim(conn: sa.Connection) -> str:
            if conn.execute(insert).first() is not None:
                conn.execute(INSERT_AUDIT_EVENT, event)
                return value
            result: str = conn.execute(stored).scalar_one()
            return result

        return await self._pooled.write_transaction("claim the server setting", claim)
