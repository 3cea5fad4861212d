"""Revoked access tokens and revocation snapshots: `SQLRevocationRepository`."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import sqlalchemy as sa

from keyturn.core.records import (
    AuditEvent,
)
from keyturn.storage.base import RevocationSnapshot
from keyturn.storage.sql.pooled import Repository
from keyturn.storage.sql.rows import (
    audit_params,
)
from keyturn.storage.sql.statements import (
    ALL_REVOCATIONS,
    INSERT_AUDIT_EVENT,
    RECENT_REVOCATIONS,
)
from keyturn.storage.tables import (
    revoked_tokens,
)

__all__ = ["SQLRevocationRepository"]


class SQLRevocationRepository(Repository):
    """Revoked access tokens (`keyturn.storage.base.RevocationRepository`)."""

    async def revoke_access_token(
        self, jti: str, *, expires_at: datetime, audit: AuditEvent
    ) -> None:
        """Refuse ``jti`` until ``expires_at``; repeating it changes and audits nothing."""
        insert = self._pooled.insert(revoked_tokens).values(jti=jti, expires_at=expires_at)
        query = insert.on_conflict_do_update(
            index_elements=[revoked_tokens.c.jti],
            set_={"expires_at": insert.excluded.expires_at},
            where=revoked_tokens.c.expires_at < insert.excluded.expires_at,
        ).returning(revoked_tokens.c.jti)
        event = audit_params(audit)

        def revoke(conn: sa.Connection) -> None:
            if conn.execute(query).first() is not None:
                conn.execute(INSERT_AUDIT_EVENT, event)

        await self._pooled.write_transaction("revoke the access token", revoke)

    async def snapshot(
        self, *, now: datetime, max_token_lifetime: timedelta | None = None
    ) -> RevocationSnapshot:
        """Revoked ``jti``s unexpired at ``now`` and revoked key subjects, in one query.

        With ``max_token_lifetime``, keys revoked more than that before ``now`` are left
        out: every token issued to them has expired.
        """
        if max_token_lifetime is None:
            query, params = ALL_REVOCATIONS, {"now": now}
        else:
            if max_token_lifetime < timedelta(0):
                raise ValueError("max_token_lifetime may not be negative")
            query = RECENT_REVOCATIONS
            params = {"now": now, "revoked_since": now - max_token_lifetime}
        rows = await self._pooled.read(
            "read revocations", lambda conn: conn.execute(query, params).all()
        )
        tokens: dict[str, int] = {}
        subjects: dict[str, int] = {}
        for kind, name, at in rows:
            # Rounded up: every token issued in the second of revocation is refused too.
            seconds = math.ceil(at.timestamp())
            if kind == "token":
                tokens[name] = seconds
            else:
                subjects[f"{kind}:{name}"] = seconds
        return RevocationSnapshot(tokens=tokens, subjects=subjects)
