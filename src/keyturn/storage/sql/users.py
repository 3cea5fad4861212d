"""Users: `SQLUserRepository`."""

from __future__ import annotations

import builtins
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa

from keyturn.core.records import (
    AuditEvent,
    UserRecord,
)
from keyturn.storage.sql.pooled import Repository
from keyturn.storage.sql.rows import (
    USER_COLUMNS,
    audit_params,
    user_record,
    user_values,
)
from keyturn.storage.sql.statements import (
    INSERT_AUDIT_EVENT,
)
from keyturn.storage.tables import (
    refresh_tokens,
    users,
)

__all__ = ["SQLUserRepository"]


_FIND_USER_BY_EMAIL: Final = sa.select(*USER_COLUMNS).where(
    users.c.email_key == sa.bindparam("email_key")
)
_GET_USER: Final = sa.select(*USER_COLUMNS).where(users.c.id == sa.bindparam("user"))


class SQLUserRepository(Repository):
    """Users (`keyturn.storage.base.UserRepository`)."""

    async def add(self, user: UserRecord, *, audit: AuditEvent) -> None:
        """Store a new user; `ConflictError` if the id or the email is taken."""
        values, event = user_values(user), audit_params(audit)
        insert = sa.insert(users)

        def store(conn: sa.Connection) -> None:
            conn.execute(insert, values)
            conn.execute(INSERT_AUDIT_EVENT, event)

        await self._pooled.write_transaction("store the user", store)

    async def get(self, user_id: str) -> UserRecord | None:
        """The user with this id, or None."""
        params = {"user": user_id}
        row = await self._pooled.read(
            "read the user", lambda conn: conn.execute(_GET_USER, params).first()
        )
        return None if row is None else user_record(row)

    async def find_by_email(self, email_key: str) -> UserRecord | None:
        """The user with this case-folded email, or None."""
        params = {"email_key": email_key}
        row = await self._pooled.read(
            "look up the user", lambda conn: conn.execute(_FIND_USER_BY_EMAIL, params).first()
        )
        return None if row is None else user_record(row)

    async def list(
        self, *, limit: int, after: str | None = None, include_disabled: bool = True
    ) -> builtins.list[UserRecord]:
        """Users ordered by id, starting after ``after`` (keyset pagination)."""
        query = sa.select(*USER_COLUMNS).order_by(users.c.id).limit(limit)
        if after is not None:
            query = query.where(users.c.id > after)
        if not include_disabled:
            query = query.where(users.c.disabled_at.is_(None))
        rows = await self._pooled.read("list users", lambda conn: conn.execute(query).all())
        return [user_record(row) for row in rows]

    async def set_disabled(
        self, user_id: str, *, disabled_at: datetime | None, reason: str | None, audit: AuditEvent
    ) -> UserRecord | None:
        """Disable or enable a user; disabling revokes their refresh tokens too."""
        state = (
            users.c.disabled_at.is_(None)
            if disabled_at is not None
            else users.c.disabled_at.is_not(None)
        )
        values: dict[str, Any] = {"disabled_at": disabled_at, "disabled_reason": reason}
        if disabled_at is not None:
            values["tokens_revoked_at"] = disabled_at
        change = (
            sa.update(users)
            .where(users.c.id == user_id, state)
            .values(values)
            .returning(*USER_COLUMNS)
        )
        revoke_tokens = _revoke_user_tokens(user_id, audit.at)
        event = audit_params(audit)

        def toggle(conn: sa.Connection) -> UserRecord | None:
            row = conn.execute(change).first()
            if row is None:  # unknown, or already in that state: nothing changes
                row = conn.execute(_GET_USER, {"user": user_id}).first()
                return None if row is None else user_record(row)
            if disabled_at is not None:
                conn.execute(revoke_tokens)
            conn.execute(INSERT_AUDIT_EVENT, event)
            return user_record(row)

        return await self._pooled.write_transaction("change the user", toggle)

    async def set_password(
        self, user_id: str, *, password_hash: str, at: datetime, audit: AuditEvent
    ) -> UserRecord | None:
        """Replace the password hash, clear failures, revoke the user's refresh tokens."""
        change = (
            sa.update(users)
            .where(users.c.id == user_id)
            .values(
                password_hash=password_hash,
                password_changed_at=at,
                failed_logins=0,
                last_failed_login_at=None,
            )
            .returning(*USER_COLUMNS)
        )
        revoke_tokens = _revoke_user_tokens(user_id, at)
        event = audit_params(audit)

        def replace(conn: sa.Connection) -> UserRecord | None:
            row = conn.execute(change).first()
            if row is None:
                return None
            conn.execute(revoke_tokens)
            conn.execute(INSERT_AUDIT_EVENT, event)
            return user_record(row)

        return await self._pooled.write_transaction("change the user's password", replace)

    async def record_login(
        self,
        user_id: str,
        *,
        at: datetime,
        audit: AuditEvent,
        rehashed_password: str | None = None,
    ) -> None:
        """Set ``last_login_at``, clear failures, store a rehashed password; audit it."""
        values: dict[str, Any] = {
            "last_login_at": at,
            "failed_logins": 0,
            "last_failed_login_at": None,
        }
        if rehashed_password is not None:
            values["password_hash"] = rehashed_password
        change = sa.update(users).where(users.c.id == user_id).values(values)
        event = audit_params(audit)

        def record(conn: sa.Connection) -> None:
            conn.execute(change)
            conn.execute(INSERT_AUDIT_EVENT, event)

        await self._pooled.write_transaction("record the login", record)

    async def record_failed_login(self, user_id: str, *, at: datetime, audit: AuditEvent) -> None:
        """Count a wrong password and audit it."""
        change = (
            sa.update(users)
            .where(users.c.id == user_id)
            .values(failed_logins=users.c.failed_logins + 1, last_failed_login_at=at)
        )
        event = audit_params(audit)

        def record(conn: sa.Connection) -> None:
            conn.execute(change)
            conn.execute(INSERT_AUDIT_EVENT, event)

        await self._pooled.write_transaction("record the failed login", record)


def _revoke_user_tokens(user_id: str, at: datetime) -> sa.Update:
    return (
        sa.update(refresh_tokens)
        .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )
