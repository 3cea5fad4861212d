"""The audit trail: `SQLAuditRepository`."""

from __future__ import annotations

import builtins
import contextlib

import sqlalchemy as sa

from keyturn.core.records import (
    AuditEvent,
)
from keyturn.storage.base import StoredAuditEvent
from keyturn.storage.sql.hot import Busy
from keyturn.storage.sql.pooled import Repository
from keyturn.storage.sql.rows import (
    audit_params,
    stored_audit_event,
)
from keyturn.storage.sql.statements import (
    INSERT_AUDIT_EVENT,
    ISSUANCE_KEY_IS_LIVE,
)
from keyturn.storage.tables import (
    audit_events,
)

__all__ = ["SQLAuditRepository"]


class SQLAuditRepository(Repository):
    """The audit trail (`keyturn.storage.base.AuditRepository`)."""

    async def record(self, event: AuditEvent) -> None:
        """Append an event that goes with no other state change, durable once it returns.

        On the hot path the events of concurrent callers share one statement (PostgreSQL)
        or one group commit (SQLite); each caller returns after that commit.
        """
        params = audit_params(event)
        if self._hot is not None:
            with contextlib.suppress(Busy):
                await self._hot.record_audit(params)
                return
        await self._pooled.write(
            "record the audit event", lambda conn: conn.execute(INSERT_AUDIT_EVENT, params)
        )

    async def record_issuance(self, event: AuditEvent) -> bool:
        """Append the audit row of a token issued to key ``event.target_id`` alone, unless
        that key is revoked or expired at ``event.at``: then False, and nothing written.

        The database decides, whatever record of the key the caller holds (issue 19).
        """
        params = audit_params(event)
        if self._hot is not None:
            with contextlib.suppress(Busy):
                return await self._hot.record_issuance(params)

        def record(conn: sa.Connection) -> bool:
            if conn.execute(ISSUANCE_KEY_IS_LIVE, params).first() is None:
                return False
            conn.execute(INSERT_AUDIT_EVENT, params)
            return True

        return await self._pooled.write_transaction("record the token's issuance", record)

    async def list(
        self,
        *,
        limit: int,
        before: int | None = None,
        action: str | None = None,
        target_id: str | None = None,
    ) -> builtins.list[StoredAuditEvent]:
        """Events newest first, with ids below ``before``, optionally filtered."""
        query = sa.select(audit_events).order_by(audit_events.c.id.desc()).limit(limit)
        if before is not None:
            query = query.where(audit_events.c.id < before)
        if action is not None:
            query = query.where(audit_events.c.action == action)
        if target_id is not None:
            query = query.where(audit_events.c.target_id == target_id)
        rows = await self._pooled.read(
            "read the audit trail", lambda conn: conn.execute(query).mappings().all()
        )
        return [stored_audit_event(row) for row in rows]
