"""Storage for keyless clients: their public keys and the replay guard (single-use ids).

`SQLClientKeyRepository` keeps the public JWKs an API key (an OAuth client) signs
``private_key_jwt`` assertions with; `SQLReplayRepository` remembers single-use ids
(assertion ``jti``s, DPoP proof ids) until they expire. Claiming an id is one ``INSERT …
ON CONFLICT``, atomic across every instance on the database, on the hot path
(`keyturn.storage.sql.hot`) when the storage has one.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final

import sqlalchemy as sa

from keyturn.core.records import ApiKeyRecord, AuditEvent, ClientPublicKeyRecord
from keyturn.storage.sql.hot import Busy
from keyturn.storage.sql.pooled import Repository
from keyturn.storage.sql.rows import API_KEY_COLUMNS, api_key_record, api_key_values, audit_params
from keyturn.storage.sql.statements import (
    CLAIM_REPLAY,
    FIND_CLIENT,
    INSERT_API_KEY,
    INSERT_AUDIT_EVENT,
)
from keyturn.storage.tables import client_public_keys, replay_guard

if TYPE_CHECKING:
    from keyturn.storage.base import ClientKeyRepository, ReplayRepository

__all__ = ["SQLClientKeyRepository", "SQLReplayRepository"]

_INSERT_CLIENT_KEY: Final = sa.insert(client_public_keys)
_LIST_CLIENT_KEYS: Final = (
    sa.select(client_public_keys)
    .where(client_public_keys.c.key_id == sa.bindparam("key_id"))
    .order_by(client_public_keys.c.created_at, client_public_keys.c.kid)
)


class _TooManyKeysError(Exception):
    """Adding would pass the limit (raised inside the transaction, to roll it back)."""


def _client_key_values(key: ClientPublicKeyRecord) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "kid": key.kid,
        "alg": key.alg,
        "jwk": dict(key.jwk),
        "created_at": key.created_at,
    }


def _client_key(row: sa.RowMapping) -> ClientPublicKeyRecord:
    return ClientPublicKeyRecord(
        key_id=row["key_id"],
        kid=row["kid"],
        alg=row["alg"],
        jwk=dict(row["jwk"]),
        created_at=row["created_at"],
    )


def _client(
    rows: Sequence[Sequence[Any]],
) -> tuple[ApiKeyRecord | None, builtins.list[ClientPublicKeyRecord]]:
    """The key and its public keys from the rows of `FIND_CLIENT`."""
    if not rows:
        return None, []
    width = len(API_KEY_COLUMNS)
    keys = [
        ClientPublicKeyRecord(key_id=key_id, kid=kid, alg=alg, jwk=dict(jwk), created_at=created_at)
        for key_id, kid, alg, jwk, created_at in (row[width:] for row in rows)
        if kid is not None
    ]
    return api_key_record(rows[0][:width]), keys


class SQLClientKeyRepository(Repository):
    """Public keys of clients (`keyturn.storage.base.ClientKeyRepository`)."""

    async def create_key(
        self,
        key: ApiKeyRecord,
        public_keys: Sequence[ClientPublicKeyRecord],
        *,
        audit: AuditEvent,
    ) -> None:
        """Store a new API key with its public keys, in one transaction."""
        values, event = api_key_values(key), audit_params(audit)
        rows = [_client_key_values(k) for k in public_keys]

        def store(conn: sa.Connection) -> None:
            conn.execute(INSERT_API_KEY, values)
            if rows:
                conn.execute(_INSERT_CLIENT_KEY, rows)
            conn.execute(INSERT_AUDIT_EVENT, event)

        await self._pooled.write_transaction("store the API key", store)

    async def add(
        self,
        public_keys: Sequence[ClientPublicKeyRecord],
        *,
        limit: int,
        audit: AuditEvent,
    ) -> builtins.list[ClientPublicKeyRecord] | None:
        """Add public keys (all of one API key) unless already there.

        Returns the key's public keys afterwards, or None (nothing written) when they
        would number more than ``limit``.
        """
        if not public_keys:
            raise ValueError("no public keys to add")
        key_id = public_keys[0].key_id
        event = audit_params(audit)
        insert = self._pooled.insert(client_public_keys)
        query = insert.on_conflict_do_nothing(
            index_elements=[client_public_keys.c.key_id, client_public_keys.c.kid]
        )
        rows = [_client_key_values(k) for k in public_keys]

        def store(conn: sa.Connection) -> builtins.list[ClientPublicKeyRecord] | None:
            if self._pooled.postgresql:  # serialise adders of one key, so the limit holds
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext(:key_id))"), {"key_id": key_id}
                )
            conn.execute(query, rows)
            result = conn.execute(_LIST_CLIENT_KEYS, {"key_id": key_id}).mappings()
            stored = [_client_key(row) for row in result]
            if len(stored) > limit:
                raise _TooManyKeysError  # rolls the transaction back
            conn.execute(INSERT_AUDIT_EVENT, event)
            return stored

        try:
            return await self._pooled.write_transaction("store the public keys", store)
        except _TooManyKeysError:
            return None

    async def remove(self, key_id: str, kid: str, *, audit: AuditEvent) -> bool:
        """Remove one public key; False (nothing written) when the key has no such one."""
        event = audit_params(audit)
        query = sa.delete(client_public_keys).where(
            client_public_keys.c.key_id == key_id, client_public_keys.c.kid == kid
        )

        def delete(conn: sa.Connection) -> bool:
            if conn.execute(query).rowcount == 0:
                return False
            conn.execute(INSERT_AUDIT_EVENT, event)
            return True

        return await self._pooled.write_transaction("remove the public key", delete)

    async def list(self, key_id: str) -> builtins.list[ClientPublicKeyRecord]:
        """The public keys of API key ``key_id``, oldest first."""

        def read(conn: sa.Connection) -> builtins.list[ClientPublicKeyRecord]:
            result = conn.execute(_LIST_CLIENT_KEYS, {"key_id": key_id}).mappings()
            return [_client_key(row) for row in result]

        return await self._pooled.read("read the public keys", read)

    async def find_client(
        self, key_id: str
    ) -> tuple[ApiKeyRecord | None, builtins.list[ClientPublicKeyRecord]]:
        """API key ``key_id`` and its public keys (oldest first) in one read: (None, [])
        for an unknown key. On the hot path when the storage has one (``private_key_jwt``)."""
        params = {"client": key_id}
        if self._hot is not None:
            with contextlib.suppress(Busy):
                return _client(await self._hot.find_client(params))
        rows = await self._pooled.read(
            "read the client", lambda conn: conn.execute(FIND_CLIENT, params).all()
        )
        return _client(rows)


class SQLReplayRepository(Repository):
    """Single-use ids (`keyturn.storage.base.ReplayRepository`)."""

    async def claim(self, replay_id: str, *, expires_at: datetime, now: datetime) -> bool:
        """Record ``replay_id`` as used until ``expires_at``: True the first time only.

        An entry that has expired by ``now`` is taken over (its id may be used again).
        On the hot path the claims of concurrent callers share one statement (PostgreSQL)
        or one group commit (SQLite); each caller returns after that commit, and a failure
        is an error, never a True (a replay is never let through).
        """
        params = {"id": replay_id, "expires_at": expires_at, "now": now}
        if self._hot is not None:
            with contextlib.suppress(Busy):
                return await self._hot.claim_replay(params)
        first = await self._pooled.write(
            "claim the single-use id", lambda c: c.execute(CLAIM_REPLAY, params).first()
        )
        return first is not None

    async def delete_expired(self, *, before: datetime) -> int:
        """Forget entries that expired before ``before``; returns how many."""
        query = sa.delete(replay_guard).where(replay_guard.c.expires_at < before)
        count: int = await self._pooled.write(
            "forget used ids", lambda c: c.execute(query).rowcount
        )
        return count


if TYPE_CHECKING:
    _conforms_keys: type[ClientKeyRepository] = SQLClientKeyRepository
    _conforms_replays: type[ReplayRepository] = SQLReplayRepository
