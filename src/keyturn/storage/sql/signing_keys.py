"""Signing keys: `SQLSigningKeyRepository`."""

from __future__ import annotations

import builtins
from datetime import datetime

import sqlalchemy as sa

from keyturn.core.records import (
    AuditEvent,
    SigningKeyRecord,
    SigningKeyState,
)
from keyturn.storage.sql.pooled import Repository
from keyturn.storage.sql.rows import (
    audit_params,
    signing_key_record,
    signing_key_values,
)
from keyturn.storage.sql.statements import (
    INSERT_AUDIT_EVENT,
)
from keyturn.storage.tables import (
    signing_keys,
)

__all__ = ["SQLSigningKeyRepository"]


class SQLSigningKeyRepository(Repository):
    """Signing keys (`keyturn.storage.base.SigningKeyRepository`)."""

    async def list(self) -> builtins.list[SigningKeyRecord]:
        """Every stored key, oldest first."""
        query = sa.select(signing_keys).order_by(signing_keys.c.created_at, signing_keys.c.kid)
        rows = await self._pooled.read(
            "list signing keys", lambda conn: conn.execute(query).mappings().all()
        )
        return [signing_key_record(row) for row in rows]

    async def add(self, key: SigningKeyRecord, *, audit: AuditEvent) -> bool:
        """Store a key; False (nothing written) if it is ACTIVE and another key is."""
        # The partial unique index is the arbiter: a second active key is skipped, not an
        # error, and a concurrent inserter waits for the first to commit (T-ROT-05).
        query = (
            self._pooled.insert(signing_keys)
            .values(signing_key_values(key))
            .on_conflict_do_nothing(
                index_elements=[signing_keys.c.state],
                # A literal, not a bound parameter: PostgreSQL cannot match a parameter to
                # the partial index once it uses a generic plan for the prepared statement
                # (from the sixth execution on a connection), and the INSERT then failed.
                index_where=sa.text("state = 'active'"),
            )
            .returning(signing_keys.c.kid)
        )
        event = audit_params(audit)

        def store(conn: sa.Connection) -> bool:
            if conn.execute(query).first() is None:
                return False
            conn.execute(INSERT_AUDIT_EVENT, event)
            return True

        return await self._pooled.write_transaction("store the signing key", store)

    async def activate(
        self, kid: str, *, at: datetime, retired_publish_until: datetime, audit: AuditEvent
    ) -> bool:
        """Make a pending key active and retire the active one, atomically."""
        state = sa.select(signing_keys.c.state).where(signing_keys.c.kid == kid)
        retire = (
            sa.update(signing_keys)
            .where(signing_keys.c.state == SigningKeyState.ACTIVE.value)
            .values(
                state=SigningKeyState.RETIRED.value,
                retired_at=at,
                publish_until=retired_publish_until,
            )
        )
        activate = (
            sa.update(signing_keys)
            .where(signing_keys.c.kid == kid)
            .values(state=SigningKeyState.ACTIVE.value, activated_at=at)
        )
        event = audit_params(audit)

        def swap(conn: sa.Connection) -> bool:
            if self._pooled.postgresql:
                # Serialise activations: two at once would each retire only the key they
                # saw and then clash on the one-active index. Readers are not blocked.
                conn.execute(sa.text("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE"))
            if conn.execute(state).scalar() != SigningKeyState.PENDING.value:
                return False
            conn.execute(retire)
            conn.execute(activate)
            conn.execute(INSERT_AUDIT_EVENT, event)
            return True

        return await self._pooled.write_transaction("activate the signing key", swap)

    async def delete_unpublished(self, *, now: datetime) -> int:
        """Delete retired keys whose ``publish_until`` has passed; returns the count."""
        query = sa.delete(signing_keys).where(
            signing_keys.c.state == SigningKeyState.RETIRED.value,
            signing_keys.c.publish_until < now,
        )
        return await self._pooled.write(
            "delete unpublished signing keys", lambda conn: int(conn.execute(query).rowcount)
        )
