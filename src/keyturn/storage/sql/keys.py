"""API keys: `SQLKeyRepository`."""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
from datetime import datetime

import sqlalchemy as sa

from keyturn.core.records import (
    ApiKeyRecord,
    AuditEvent,
)
from keyturn.errors import ConflictError
from keyturn.storage.sql.hot import Busy
from keyturn.storage.sql.pooled import Repository
from keyturn.storage.sql.rows import (
    API_KEY_COLUMNS,
    api_key_record,
    api_key_values,
    audit_params,
)
from keyturn.storage.sql.statements import (
    FIND_KEY_BY_HASH,
    INSERT_API_KEY,
    INSERT_AUDIT_EVENT,
    MARK_KEY_USED,
)
from keyturn.storage.tables import (
    api_keys,
    refresh_tokens,
)

__all__ = ["SQLKeyRepository"]


class SQLKeyRepository(Repository):
    """API keys (`keyturn.storage.base.KeyRepository`)."""

    async def add(self, key: ApiKeyRecord, *, audit: AuditEvent) -> None:
        """Store a new key; `ConflictError` if its id or hash is taken."""
        values, event = api_key_values(key), audit_params(audit)

        def store(conn: sa.Connection) -> None:
            conn.execute(INSERT_API_KEY, values)
            conn.execute(INSERT_AUDIT_EVENT, event)

        await self._pooled.write_transaction("store the API key", store)

    async def register_legacy(self, key: ApiKeyRecord, *, audit: AuditEvent) -> ApiKeyRecord:
        """Store a caller-chosen key, or renew the expiry of the same key.

        When renewed, an audit event whose ``target_id`` is the proposed ``key.id`` is
        recorded against the stored key's id instead.
        """
        insert = self._pooled.insert(api_keys).values(api_key_values(key))
        upsert = insert.on_conflict_do_update(
            index_elements=[api_keys.c.key_hash],
            set_={"expires_at": insert.excluded.expires_at},
            # Never rebind a key to another identifier, nor revive a revoked one (T-AZ-07).
            where=sa.and_(
                api_keys.c.identifier.is_not_distinct_from(insert.excluded.identifier),
                api_keys.c.revoked_at.is_(None),
            ),
        ).returning(*API_KEY_COLUMNS)

        def register(conn: sa.Connection) -> ApiKeyRecord:
            row = conn.execute(upsert).first()
            if row is None:
                raise ConflictError("this key is registered to another identifier, or was revoked")
            stored = api_key_record(row)
            event = audit
            if stored.id != key.id and audit.target_id == key.id:
                event = dataclasses.replace(audit, target_id=stored.id)
            conn.execute(INSERT_AUDIT_EVENT, audit_params(event))
            return stored

        return await self._pooled.write_transaction("register the API key", register)

    async def find_by_hash(self, key_hash: bytes, *, now: datetime) -> ApiKeyRecord | None:
        """The key whose current hash, or still-in-grace previous hash, is ``key_hash``."""
        params = {"hash": key_hash, "now": now}
        if self._hot is not None:
            with contextlib.suppress(Busy):
                row = await self._hot.find_key_by_hash(params)
                return None if row is None else api_key_record(row)
        row = await self._pooled.read(
            "look up the API key", lambda conn: conn.execute(FIND_KEY_BY_HASH, params).first()
        )
        return None if row is None else api_key_record(row)

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, or None."""
        query = sa.select(*API_KEY_COLUMNS).where(api_keys.c.id == key_id)
        row = await self._pooled.read("read the API key", lambda conn: conn.execute(query).first())
        return None if row is None else api_key_record(row)

    async def list(
        self,
        *,
        limit: int,
        after: str | None = None,
        identifier: str | None = None,
        include_revoked: bool = True,
    ) -> builtins.list[ApiKeyRecord]:
        """Keys ordered by id, starting after ``after`` (keyset pagination)."""
        query = sa.select(*API_KEY_COLUMNS).order_by(api_keys.c.id).limit(limit)
        if after is not None:
            query = query.where(api_keys.c.id > after)
        if identifier is not None:
            query = query.where(api_keys.c.identifier == identifier)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        rows = await self._pooled.read("list API keys", lambda conn: conn.execute(query).all())
        return [api_key_record(row) for row in rows]

    async def revoke(
        self, key_id: str, *, at: datetime, reason: str, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Revoke a key and its refresh tokens; a revoked key is returned unchanged."""
        revoke_key = (
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at, revoked_reason=reason)
            .returning(*API_KEY_COLUMNS)
        )
        revoke_tokens = (
            sa.update(refresh_tokens)
            .where(refresh_tokens.c.key_id == key_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        event = audit_params(audit)

        def revoke(conn: sa.Connection) -> ApiKeyRecord | None:
            row = conn.execute(revoke_key).first()
            if row is None:  # unknown, or revoked already: nothing changes, nothing audited
                query = sa.select(*API_KEY_COLUMNS).where(api_keys.c.id == key_id)
                row = conn.execute(query).first()
                return None if row is None else api_key_record(row)
            conn.execute(revoke_tokens)
            conn.execute(INSERT_AUDIT_EVENT, event)
            return api_key_record(row)

        return await self._pooled.write_transaction("revoke the API key", revoke)

    async def rotate(
        self, key_id: str, *, new_hash: bytes, grace_until: datetime, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Give a usable key a new secret; the old one works until ``grace_until``.

        "Usable" is judged at ``audit.at``, the moment of the change.
        """
        now = audit.at
        query = (
            sa.update(api_keys)
            .where(
                api_keys.c.id == key_id,
                api_keys.c.revoked_at.is_(None),
                sa.or_(api_keys.c.expires_at.is_(None), api_keys.c.expires_at > now),
            )
            # SET expressions read the row as it was: previous_hash takes the old hash.
            .values(
                previous_hash=api_keys.c.key_hash,
                previous_expires_at=grace_until,
                key_hash=new_hash,
            )
            .returning(*API_KEY_COLUMNS)
        )
        return await self._change_key("rotate the API key", query, audit)

    async def set_expiry(
        self, key_id: str, *, expires_at: datetime, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Move a key's expiry; None if the id is unknown."""
        query = (
            sa.update(api_keys)
            .where(api_keys.c.id == key_id)
            .values(expires_at=expires_at)
            .returning(*API_KEY_COLUMNS)
        )
        return await self._change_key("change the API key's expiry", query, audit)

    async def _change_key(
        self, doing: str, update: sa.UpdateBase, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Run an UPDATE ... RETURNING of one key and audit it if it matched."""
        event = audit_params(audit)

        def change(conn: sa.Connection) -> ApiKeyRecord | None:
            row = conn.execute(update).first()
            if row is None:
                return None
            conn.execute(INSERT_AUDIT_EVENT, event)
            return api_key_record(row)

        return await self._pooled.write_transaction(doing, change)

    async def mark_used(self, key_id: str, *, at: datetime) -> None:
        """Record ``last_used_at`` (never moves it backwards)."""
        params = {"key": key_id, "at": at}
        if self._hot is not None:
            with contextlib.suppress(Busy):
                await self._hot.mark_key_used(params)
                return
        await self._pooled.write(
            "record the API key's use", lambda conn: conn.execute(MARK_KEY_USED, params)
        )

    async def upgrade_hash(
        self, key_id: str, *, legacy_hash: bytes, new_hash: bytes, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Replace a key's legacy (JWThenticator) hash by ``new_hash``, once.

        A compare-and-set: None when the key no longer carries ``legacy_hash`` (another
        request upgraded it first). `ConflictError` if ``new_hash`` belongs to another key.
        """
        query = (
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.key_hash == legacy_hash)
            .values(key_hash=new_hash)
            .returning(*API_KEY_COLUMNS)
        )
        return await self._change_key("upgrade the API key's hash", query, audit)
