"""Refresh tokens: `SQLRefreshTokenRepository`."""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from keyturn.core.records import (
    ApiKeyRecord,
    AuditEvent,
    RefreshTokenRecord,
)
from keyturn.core.revocation import family_entry
from keyturn.storage.sql.hot import Busy
from keyturn.storage.sql.pooled import Repository
from keyturn.storage.sql.rows import (
    REFRESH_TOKEN_COLUMNS,
    api_key_record,
    audit_params,
    new_token_params,
    refresh_token_record,
)
from keyturn.storage.sql.statements import (
    FIND_REFRESH_TOKEN_WITH_KEY,
    INSERT_AUDIT_EVENT,
    INSERT_REFRESH_TOKEN,
    KEY_IS_LIVE,
    MARK_REFRESH_TOKEN_USED,
    REVOKE_REFRESH_FAMILY,
)
from keyturn.storage.tables import (
    refresh_tokens,
    revoked_tokens,
)

__all__ = ["SQLRefreshTokenRepository"]


class SQLRefreshTokenRepository(Repository):
    """Refresh tokens (`keyturn.storage.base.RefreshTokenRepository`)."""

    async def add(self, token: RefreshTokenRecord, *, audit: AuditEvent) -> bool:
        """Store a new refresh token and its audit row; `ConflictError` on a clash.

        False, and nothing written, when the token's key is revoked by then.
        """
        stored, event = new_token_params(token), audit_params(audit)
        if self._hot is not None:
            with contextlib.suppress(Busy):
                return await self._hot.add_refresh_token(stored, event)

        def store(conn: sa.Connection) -> bool:
            if conn.execute(KEY_IS_LIVE, stored).first() is None:
                return False
            conn.execute(INSERT_REFRESH_TOKEN, stored)
            conn.execute(INSERT_AUDIT_EVENT, event)
            return True

        return await self._pooled.write_transaction("store the refresh token", store)

    async def find_with_key(
        self, token_hash: bytes
    ) -> tuple[RefreshTokenRecord, ApiKeyRecord | None] | None:
        """The refresh token with this hash and its API key, in one query."""
        row = await self._find_row({"hash": token_hash})
        if row is None:
            return None
        values = tuple(row)
        split = len(REFRESH_TOKEN_COLUMNS)
        key = None if values[split] is None else api_key_record(values[split:])
        return refresh_token_record(values[:split]), key

    async def _find_row(self, params: Mapping[str, Any]) -> Any:
        """The joined row: the hot path's, else the pooled path's."""
        doing = "look up the refresh token"
        if self._hot is not None:
            with contextlib.suppress(Busy):
                return await self._hot.find_refresh_token(params)
        return await self._pooled.read(
            doing, lambda conn: conn.execute(FIND_REFRESH_TOKEN_WITH_KEY, params).first()
        )

    async def rotate(
        self, token_id: str, successor: RefreshTokenRecord, *, now: datetime, audit: AuditEvent
    ) -> bool:
        """Mark ``token_id`` used and store ``successor``, if the token is still live."""
        used = {"token": token_id, "now": now, "new_id": successor.id}
        stored, event = new_token_params(successor), audit_params(audit)
        if self._hot is not None:
            with contextlib.suppress(Busy):
                return await self._hot.rotate_refresh_token(used, stored, event)

        def rotate(conn: sa.Connection) -> bool:
            if conn.execute(MARK_REFRESH_TOKEN_USED, used).first() is None:
                return False
            conn.execute(INSERT_REFRESH_TOKEN, stored)
            conn.execute(INSERT_AUDIT_EVENT, event)
            return True

        return await self._pooled.write_transaction("rotate the refresh token", rotate)

    async def revoke_family(
        self,
        family_id: str,
        *,
        at: datetime,
        audit: AuditEvent,
        access_tokens_until: datetime | None = None,
    ) -> int:
        """Revoke every unrevoked token of a family; returns how many could still be used.

        Used tokens are marked revoked too. The audit row is written when anything changed.
        With ``access_tokens_until``, the family's entry among the revoked access tokens is
        written (or extended) in the same transaction, even when the family was revoked
        before.
        """
        params, event = {"family": family_id, "at": at}, audit_params(audit)
        deny = None
        if access_tokens_until is not None:
            insert = self._pooled.insert(revoked_tokens).values(
                jti=family_entry(family_id), expires_at=access_tokens_until
            )
            deny = insert.on_conflict_do_update(
                index_elements=[revoked_tokens.c.jti],
                set_={"expires_at": insert.excluded.expires_at},
                where=revoked_tokens.c.expires_at < insert.excluded.expires_at,
            )

        def revoke(conn: sa.Connection) -> builtins.list[sa.Row[Any]]:
            rows = conn.execute(REVOKE_REFRESH_FAMILY, params).all()
            if rows:
                conn.execute(INSERT_AUDIT_EVENT, event)
            if deny is not None:
                conn.execute(deny)
            return list(rows)

        rows = await self._pooled.write_transaction("revoke the refresh token family", revoke)
        return sum(1 for used_at, expires_at in rows if used_at is None and expires_at > at)

    async def delete_expired(self, *, before: datetime) -> int:
        """Delete tokens whose absolute expiry is before ``before``; returns the count."""
        query = sa.delete(refresh_tokens).where(refresh_tokens.c.expires_at < before)
        return await self._pooled.write(
            "delete expired refresh tokens", lambda conn: int(conn.execute(query).rowcount)
        )
