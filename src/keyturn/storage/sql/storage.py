"""The SQL storage: async repositories over SQLAlchemy Core, on SQLite or PostgreSQL.

Each verb is one transaction, and each state change writes its audit row in it. Reads
and single-statement writes run on autocommit connections (no BEGIN/COMMIT round
trips). On PostgreSQL the hot paths are one statement each, hence one round trip: a
data-modifying CTE stores a refresh token with its audit row, and another does the
rotation compare-and-set, the successor and the audit row together. SQLite has no such
CTEs; there the same verbs are short ``BEGIN IMMEDIATE`` transactions, which serialise
writers instead of failing them.

CPU per verb: the hot statements are built once, with named parameters, so SQLAlchemy
finds them compiled without building them or their cache keys again; and each verb runs
all its statements on one connection in a single greenlet (`_Repository`). On PostgreSQL
the hot verbs (`find_by_hash`, `mark_used`, and the refresh tokens' `add`,
`find_with_key` and `rotate`) skip SQLAlchemy's execution layer: the same statements,
rendered once, run on asyncpg connections leased from the pool
(`keyturn.storage.sql.hot_postgres`). On a SQLite file the same verbs run on the event
loop's own ``sqlite3`` connection, falling back to the pooled path when another writer
holds the database (`keyturn.storage.sql.hot_sqlite`).

Errors: a database that cannot be reached (refused or dropped connection, pool timeout,
locked or read-only SQLite file) raises `StorageUnavailableError`, a clash with a unique
constraint raises `ConflictError`; the driver's exception is kept as the cause.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.util import greenlet_spawn

from keyturn.core.records import (
    ApiKeyRecord,
    AuditEvent,
    RefreshTokenRecord,
    SigningKeyRecord,
    SigningKeyState,
    UserRecord,
)
from keyturn.core.revocation import family_entry
from keyturn.errors import ConflictError
from keyturn.storage._errors import storage_error, translate_errors
from keyturn.storage.base import RevocationSnapshot, Storage, StoredAuditEvent
from keyturn.storage.engine import (
    autocommit,
    autocommit_options,
    create_engine,
    has_sqlite_hooks,
    sqlite_file,
)
from keyturn.storage.migrate import upgrade_engine
from keyturn.storage.schema import DEFAULT_SCHEMA, SchemaMissingError, find_schema, is_postgresql
from keyturn.storage.sql.hot_sqlite import Busy, LiteConnection, LitePath, LiteStatement
from keyturn.storage.tables import (
    UTCDateTime,
    api_keys,
    audit_events,
    refresh_tokens,
    revoked_tokens,
    server_settings,
    signing_keys,
    users,
)

__all__ = [
    "SQLAuditRepository",
    "SQLKeyRepository",
    "SQLRefreshTokenRepository",
    "SQLRevocationRepository",
    "SQLSigningKeyRepository",
    "SQLStorage",
    "SQLUserRepository",
]

_T = TypeVar("_T")


def _on_connection(
    engine: sa.Engine, options: Mapping[str, Any] | None, work: Callable[[sa.Connection], _T]
) -> _T:
    """Run ``work`` with the autocommit ``options``, or in a transaction when None."""
    if options is None:
        with engine.begin() as conn:
            return work(conn)
    with engine.connect() as conn:
        return work(conn.execution_options(**options))


class _Repository:
    """Shared plumbing: run a verb's work on a connection, and the dialect.

    A verb's work is a plain function of a synchronous `sa.Connection`, run in one
    greenlet by `greenlet_spawn`, the way `AsyncConnection` runs each of its calls: one
    switch per verb instead of one each for the checkout, every statement and the
    release. Autocommit is set per connection (`autocommit_options`), not through an
    engine view, which would make SQLAlchemy dispatch events around every statement.

    ``write_lock`` (SQLite) queues this process's writers in the event loop: SQLite
    admits one writer at a time anyway, and waiting here is cheaper and fairer than
    sleeping in SQLite's busy handler while holding a pooled connection. A writer waits
    there no longer than the pool's timeout, as for a pooled connection: then the
    database is unavailable (503) rather than a queue seconds long.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write_lock: asyncio.Lock | None = None,
        lite: LitePath | None = None,
        fast: FastPath | None = None,
    ) -> None:
        self._engine = engine.sync_engine
        self._lite = lite
        self._autocommit = autocommit_options(engine)
        self._postgresql = engine.dialect.name == "postgresql"
        self._write_lock = write_lock
        timeout = getattr(self._engine.pool, "timeout", None)
        self._queue_timeout: float | None = timeout() if callable(timeout) else None
        self._fast = fast
        if self._postgresql and fast is None:  # on its own: no leased connections
            from keyturn.storage.sql.hot_postgres import FastPath  # noqa: PLC0415 -- asyncpg is optional

            self._fast = FastPath(self._engine, limit=0)

    async def _read(self, doing: str, work: Callable[[sa.Connection], _T]) -> _T:
        """Run ``work`` on an autocommit connection (reads)."""
        return await self._run(doing, work, self._autocommit, writes=False)

    async def _write(self, doing: str, work: Callable[[sa.Connection], _T]) -> _T:
        """Run ``work``, a single statement that writes, on an autocommit connection."""
        return await self._run(doing, work, self._autocommit, writes=True)

    async def _write_transaction(self, doing: str, work: Callable[[sa.Connection], _T]) -> _T:
        """Run ``work`` in one write transaction (``BEGIN IMMEDIATE`` on SQLite).

        An exception rolls it back; returning commits it.
        """
        return await self._run(doing, work, None, writes=True)

    async def _run(
        self,
        doing: str,
        work: Callable[[sa.Connection], _T],
        options: Mapping[str, Any] | None,
        *,
        writes: bool,
    ) -> _T:
        try:
            lock = self._write_lock
            if writes and lock is not None:
                if lock.locked():  # queue behind this process's writers, for a bounded time
                    async with asyncio.timeout(self._queue_timeout):
                        await lock.acquire()
                else:
                    await lock.acquire()
                try:
                    return await greenlet_spawn(_on_connection, self._engine, options, work)
                finally:
                    lock.release()
            return await greenlet_spawn(_on_connection, self._engine, options, work)
        except Exception as exc:
            error = storage_error(exc, doing)
            if error is None:
                raise
            raise error from exc

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        """The dialect's INSERT, which knows ``ON CONFLICT``."""
        return postgresql.insert(table) if self._postgresql else sqlite.insert(table)


# --- rows <-> records --------------------------------------------------------------------
#
# Rows are read by position: `_API_KEY_COLUMNS` and `_REFRESH_TOKEN_COLUMNS` fix the order
# that `_api_key` and `_refresh_token` unpack.

_API_KEY_COLUMNS: Final = tuple(
    api_keys.c[name]
    for name in (
        "id",
        "key_hash",
        "identifier",
        "name",
        "roles",
        "scopes",
        "extra_claims",
        "metadata",
        "legacy",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
        "revoked_reason",
        "previous_hash",
        "previous_expires_at",
    )
)
_REFRESH_TOKEN_FIELDS: Final = (
    "id",
    "family_id",
    "parent_id",
    "token_hash",
    "subject",
    "scope",
    "rotating",
    "key_id",
    "user_id",
    "identifier",
    "created_at",
    "expires_at",
    "used_at",
    "replaced_by",
    "revoked_at",
)
_REFRESH_TOKEN_COLUMNS: Final = tuple(refresh_tokens.c[name] for name in _REFRESH_TOKEN_FIELDS)
_AUDIT_FIELDS: Final = (
    "at",
    "action",
    "outcome",
    "actor",
    "target_type",
    "target_id",
    "request_id",
    "detail",
)


def _api_key_values(key: ApiKeyRecord) -> dict[str, Any]:
    return {
        "id": key.id,
        "key_hash": key.key_hash,
        "identifier": key.identifier,
        "name": key.name,
        "roles": list(key.roles),
        "scopes": None if key.scopes is None else list(key.scopes),
        "extra_claims": dict(key.extra_claims),
        "metadata": dict(key.metadata),
        "legacy": key.legacy,
        "created_at": key.created_at,
        "expires_at": key.expires_at,
        "last_used_at": key.last_used_at,
        "revoked_at": key.revoked_at,
        "revoked_reason": key.revoked_reason,
        "previous_hash": key.previous_hash,
        "previous_expires_at": key.previous_expires_at,
    }


def _api_key(row: Sequence[Any]) -> ApiKeyRecord:
    """The record for a row of `_API_KEY_COLUMNS`."""
    (
        key_id,
        key_hash,
        identifier,
        name,
        roles,
        scopes,
        extra_claims,
        metadata,
        legacy,
        created_at,
        expires_at,
        last_used_at,
        revoked_at,
        revoked_reason,
        previous_hash,
        previous_expires_at,
    ) = row
    return ApiKeyRecord(
        id=key_id,
        key_hash=bytes(key_hash),
        created_at=created_at,
        identifier=identifier,
        name=name,
        roles=tuple(roles),
        scopes=None if scopes is None else tuple(scopes),
        extra_claims=extra_claims,
        metadata=metadata,
        legacy=bool(legacy),
        expires_at=expires_at,
        last_used_at=last_used_at,
        revoked_at=revoked_at,
        revoked_reason=revoked_reason,
        previous_hash=None if previous_hash is None else bytes(previous_hash),
        previous_expires_at=previous_expires_at,
    )


def _new_token_params(token: RefreshTokenRecord) -> dict[str, Any]:
    """Values for the ``new_*`` parameters of `_NEW_TOKEN`."""
    return {
        "new_id": token.id,
        "new_family_id": token.family_id,
        "new_parent_id": token.parent_id,
        "new_token_hash": token.token_hash,
        "new_subject": token.subject,
        "new_scope": list(token.scope),
        "new_rotating": token.rotating,
        "new_key_id": token.key_id,
        "new_user_id": token.user_id,
        "new_identifier": token.identifier,
        "new_created_at": token.created_at,
        "new_expires_at": token.expires_at,
        "new_used_at": token.used_at,
        "new_replaced_by": token.replaced_by,
        "new_revoked_at": token.revoked_at,
    }


def _refresh_token(row: Sequence[Any]) -> RefreshTokenRecord:
    """The record for a row of `_REFRESH_TOKEN_COLUMNS`."""
    (
        token_id,
        family_id,
        parent_id,
        token_hash,
        subject,
        scope,
        rotating,
        key_id,
        user_id,
        identifier,
        created_at,
        expires_at,
        used_at,
        replaced_by,
        revoked_at,
    ) = row
    return RefreshTokenRecord(
        id=token_id,
        family_id=family_id,
        token_hash=bytes(token_hash),
        subject=subject,
        scope=tuple(scope),
        created_at=created_at,
        expires_at=expires_at,
        rotating=bool(rotating),
        parent_id=parent_id,
        key_id=key_id,
        user_id=user_id,
        identifier=identifier,
        used_at=used_at,
        replaced_by=replaced_by,
        revoked_at=revoked_at,
    )


def _signing_key_values(key: SigningKeyRecord) -> dict[str, Any]:
    return {
        "kid": key.kid,
        "alg": key.alg,
        "public_jwk": dict(key.public_jwk),
        "sealed_private_key": key.sealed_private_key,
        "state": SigningKeyState(key.state).value,
        "created_at": key.created_at,
        "activated_at": key.activated_at,
        "retired_at": key.retired_at,
        "publish_until": key.publish_until,
    }


def _signing_key(row: sa.RowMapping) -> SigningKeyRecord:
    return SigningKeyRecord(
        kid=row["kid"],
        alg=row["alg"],
        public_jwk=row["public_jwk"],
        sealed_private_key=bytes(row["sealed_private_key"]),
        state=SigningKeyState(row["state"]),
        created_at=row["created_at"],
        activated_at=row["activated_at"],
        retired_at=row["retired_at"],
        publish_until=row["publish_until"],
    )


def _audit_params(event: AuditEvent) -> dict[str, Any]:
    """Values for the ``audit_*`` parameters of `_AUDIT`."""
    return {
        "audit_at": event.at,
        "audit_action": event.action,
        "audit_outcome": event.outcome,
        "audit_actor": event.actor,
        "audit_target_type": event.target_type,
        "audit_target_id": event.target_id,
        "audit_request_id": event.request_id,
        "audit_detail": dict(event.detail),
    }


def _stored_audit_event(row: sa.RowMapping) -> StoredAuditEvent:
    event = AuditEvent(
        at=row["at"],
        action=row["action"],
        outcome=row["outcome"],
        actor=row["actor"],
        target_type=row["target_type"],
        target_id=row["target_id"],
        request_id=row["request_id"],
        detail=row["detail"],
    )
    return StoredAuditEvent(id=int(row["id"]), event=event)


# --- statements built once ---------------------------------------------------------------
#
# Built at import with named parameters, so every execution hits SQLAlchemy's compiled
# cache without building a statement or its cache key again. Parameter names never equal
# a column of the table a statement writes: SQLAlchemy would take them for its values.


def _params(table: sa.Table, prefix: str, names: Iterable[str]) -> dict[str, sa.BindParameter[Any]]:
    """A parameter per column, named ``prefix + column`` and typed like the column."""
    return {name: sa.bindparam(prefix + name, type_=table.c[name].type) for name in names}


def _typed(table: sa.Table, params: Mapping[str, sa.BindParameter[Any]]) -> list[Any]:
    """Parameters cast to their columns' types, for ``INSERT ... SELECT``."""
    return [sa.cast(param, table.c[name].type).label(name) for name, param in params.items()]


_NOW: Final = sa.bindparam("now", type_=UTCDateTime())
_AT: Final = sa.bindparam("at", type_=UTCDateTime())
_NEW_TOKEN: Final = _params(refresh_tokens, "new_", _REFRESH_TOKEN_FIELDS)
_AUDIT: Final = _params(audit_events, "audit_", _AUDIT_FIELDS)

_INSERT_API_KEY: Final = sa.insert(api_keys)
_INSERT_AUDIT_EVENT: Final = sa.insert(audit_events).values(_AUDIT)
_INSERT_REFRESH_TOKEN: Final = sa.insert(refresh_tokens).values(_NEW_TOKEN)


def _key_live(key_id: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """False for a revoked key (issue 18); a user's token (no key) is always stored.

    An unknown key is left to the foreign key, which refuses it (`ConflictError`).
    """
    return ~sa.exists().where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_not(None))


def _add_refresh_token_with_audit() -> sa.Select[tuple[str]]:
    # The token and its audit row in one statement, atomic on its own, unless its key
    # is revoked by then: a revocation committed before it leaves nothing written (the
    # statement answers no row), so no token is issued once the revocation is in.
    typed = _typed(refresh_tokens, _NEW_TOKEN)
    stored = (
        sa.insert(refresh_tokens)
        .from_select(list(_NEW_TOKEN), sa.select(*typed).where(_key_live(_NEW_TOKEN["key_id"])))
        .returning(refresh_tokens.c.id)
        .cte("stored_token")
    )
    audited = (
        sa.insert(audit_events)
        .from_select(list(_AUDIT), sa.select(*_typed(audit_events, _AUDIT)).select_from(stored))
        .returning(audit_events.c.id)
        .cte("audited")
    )
    return sa.select(stored.c.id).add_cte(audited)


# PostgreSQL: one statement, one round trip; a row when stored.
_ADD_REFRESH_TOKEN_WITH_AUDIT: Final = _add_refresh_token_with_audit()
# SQLite: the same check, in the storing transaction.
_KEY_IS_LIVE: Final = sa.select(sa.literal(1)).where(_key_live(_NEW_TOKEN["key_id"]))


def _key_with_hash(
    hash_: sa.ColumnElement[bytes], now: sa.ColumnElement[datetime]
) -> sa.Select[Any]:
    """The key whose current hash, or previous hash still in grace at ``now``, is ``hash_``."""
    return (
        sa.select(*_API_KEY_COLUMNS)
        .where(
            sa.or_(
                api_keys.c.key_hash == hash_,
                sa.and_(api_keys.c.previous_hash == hash_, api_keys.c.previous_expires_at > now),
            )
        )
        .limit(1)
    )


def _token_with_hash(hash_: sa.ColumnElement[bytes]) -> sa.Select[Any]:
    """The refresh token with hash ``hash_``, joined to its API key (if any)."""
    return (
        sa.select(*_REFRESH_TOKEN_COLUMNS, *_API_KEY_COLUMNS)
        .select_from(refresh_tokens.outerjoin(api_keys, api_keys.c.id == refresh_tokens.c.key_id))
        .where(refresh_tokens.c.token_hash == hash_)
    )


_HASH: Final = sa.bindparam("hash", type_=sa.LargeBinary())
_FIND_KEY_BY_HASH: Final = _key_with_hash(_HASH, _NOW)
_MARK_KEY_USED: Final = (
    sa.update(api_keys)
    .where(
        api_keys.c.id == sa.bindparam("key"),
        sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < _AT),
    )
    .values(last_used_at=_AT)
)

_FIND_REFRESH_TOKEN_WITH_KEY: Final = _token_with_hash(_HASH)
# The compare-and-set of a rotation: only a live token is marked used.
_MARK_REFRESH_TOKEN_USED: Final = (
    sa.update(refresh_tokens)
    .where(
        refresh_tokens.c.id == sa.bindparam("token"),
        refresh_tokens.c.used_at.is_(None),
        refresh_tokens.c.revoked_at.is_(None),
        refresh_tokens.c.expires_at > _NOW,
    )
    .values(used_at=_NOW, replaced_by=_NEW_TOKEN["id"])
    .returning(refresh_tokens.c.id)
)


def _rotate_with_successor_and_audit() -> sa.Select[tuple[int]]:
    # The compare-and-set and both inserts in one statement: concurrent callers queue
    # on the token's row lock, and a loser's UPDATE then matches nothing, so its
    # inserts (which select from the UPDATE's output) write nothing either.
    used = _MARK_REFRESH_TOKEN_USED.cte("used")
    stored = (
        sa.insert(refresh_tokens)
        .from_select(
            list(_NEW_TOKEN), sa.select(*_typed(refresh_tokens, _NEW_TOKEN)).select_from(used)
        )
        .returning(refresh_tokens.c.id)
        .cte("stored")
    )
    audited = (
        sa.insert(audit_events)
        .from_select(list(_AUDIT), sa.select(*_typed(audit_events, _AUDIT)).select_from(stored))
        .returning(audit_events.c.id)
        .cte("audited")
    )
    return sa.select(sa.func.count()).select_from(used).add_cte(stored, audited)


# PostgreSQL: one statement, one round trip.
_ROTATE_WITH_SUCCESSOR_AND_AUDIT: Final = _rotate_with_successor_and_audit()

# PostgreSQL, for `keyturn.storage.sql._batch`: the calls of one event-loop turn in one
# statement. Each single-row statement's parameter ``p`` becomes an array ``each_p``, the
# arrays are unnested in step into numbered rows, and a lookup answers row ``n`` through
# a LATERAL join (so ``LIMIT 1`` still applies per call).


def _each(params: Mapping[str, sa.BindParameter[Any]]) -> sa.TableValuedAlias:
    """The rows of a batch: ``params`` as arrays, unnested side by side, numbered ``n``.

    Strings are cast without a length: an explicit ``::VARCHAR(64)`` would truncate
    silently, where storing into the column refuses a value too long, as it does alone.
    """
    arrays = [
        sa.bindparam(
            f"each_{param.key}",
            type_=postgresql.ARRAY(
                sa.String() if isinstance(param.type, sa.String) else param.type,
                dimensions=1,  # a JSON list is one value, not a dimension of the array
            ),
        )
        for param in params.values()
    ]
    return (
        sa.func.unnest(*arrays)
        .table_valued(*params, with_ordinality="n")
        .render_derived(name="each_call")
    )


def _lookups(
    params: Mapping[str, sa.BindParameter[Any]], lookup: Callable[..., sa.Select[Any]]
) -> sa.Select[Any]:
    """``lookup`` for every row of a batch: ``(n, *columns)`` for the rows it finds."""
    each = _each(params)
    found = lookup(*(each.c[name] for name in params)).lateral("found")
    return sa.select(each.c.n, *found.c).select_from(each.join(found, sa.true()))


def _inserts(table: sa.Table, params: Mapping[str, sa.BindParameter[Any]]) -> sa.Insert:
    """``INSERT INTO table SELECT ... FROM unnest(...)``: a row per call of a batch.

    ``params`` maps each column to the single-row statement's parameter for it.
    """
    each = _each(params)
    return sa.insert(table).from_select(list(params), sa.select(*(each.c[name] for name in params)))


_FIND_KEYS_BY_HASH: Final = _lookups({"hash": _HASH, "now": _NOW}, _key_with_hash)
_FIND_REFRESH_TOKENS_WITH_KEY: Final = _lookups({"hash": _HASH}, _token_with_hash)


def _add_refresh_tokens_with_audit() -> sa.Select[tuple[int, str]]:
    """`_ADD_REFRESH_TOKEN_WITH_AUDIT` for a batch: ``(n, id)`` for each call stored."""
    each = _each(_NEW_TOKEN | _AUDIT)
    calls = sa.select(*each.c).select_from(each).cte("calls")
    stored = (
        sa.insert(refresh_tokens)
        .from_select(
            list(_NEW_TOKEN),
            sa.select(*(calls.c[name] for name in _NEW_TOKEN)).where(_key_live(calls.c.key_id)),
        )
        .returning(refresh_tokens.c.id)
        .cte("stored_tokens")
    )
    joined = calls.join(stored, stored.c.id == calls.c.id)
    audited = (
        sa.insert(audit_events)
        .from_select(
            list(_AUDIT),
            sa.select(*(calls.c[name] for name in _AUDIT)).select_from(joined).order_by(calls.c.n),
        )
        .returning(audit_events.c.id)
        .cte("audited")
    )
    return sa.select(calls.c.n, stored.c.id).select_from(joined).add_cte(audited)


_ADD_REFRESH_TOKENS_WITH_AUDIT: Final = _add_refresh_tokens_with_audit()
_REVOKE_REFRESH_FAMILY: Final = (
    sa.update(refresh_tokens)
    .where(
        refresh_tokens.c.family_id == sa.bindparam("family"),
        refresh_tokens.c.revoked_at.is_(None),
    )
    .values(revoked_at=_AT)
    .returning(refresh_tokens.c.used_at, refresh_tokens.c.expires_at)
)


def _revocations(*, revoked_since: bool) -> sa.CompoundSelect[tuple[str, str, datetime]]:
    """Unexpired revoked ``jti``s, revoked keys and disabled users (optionally only lately)."""
    revoked_keys = sa.select(
        sa.literal("key").label("kind"),
        api_keys.c.id.label("name"),
        api_keys.c.revoked_at.label("at"),
    ).where(api_keys.c.revoked_at.is_not(None))
    if revoked_since:
        revoked_keys = revoked_keys.where(
            api_keys.c.revoked_at >= sa.bindparam("revoked_since", type_=UTCDateTime())
        )
    disabled_users = sa.select(
        sa.literal("user").label("kind"),
        users.c.id.label("name"),
        users.c.tokens_revoked_at.label("at"),
    ).where(users.c.tokens_revoked_at.is_not(None))
    if revoked_since:
        disabled_users = disabled_users.where(
            users.c.tokens_revoked_at >= sa.bindparam("revoked_since", type_=UTCDateTime())
        )
    return sa.union_all(
        sa.select(
            sa.literal("token").label("kind"),
            revoked_tokens.c.jti.label("name"),
            revoked_tokens.c.expires_at.label("at"),
        ).where(revoked_tokens.c.expires_at > _NOW),
        revoked_keys,
        disabled_users,
    )


_ALL_REVOCATIONS: Final = _revocations(revoked_since=False)
_RECENT_REVOCATIONS: Final = _revocations(revoked_since=True)


# --- repositories ------------------------------------------------------------------------


class SQLKeyRepository(_Repository):
    """API keys (`keyturn.storage.base.KeyRepository`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write_lock: asyncio.Lock | None = None,
        lite: LitePath | None = None,
        fast: FastPath | None = None,
    ) -> None:
        super().__init__(engine, write_lock=write_lock, lite=lite, fast=fast)
        self._fast_mark_used: FastStatement | None = None
        self._find_batch: Batcher[Mapping[str, Any], Any] | None = None
        if self._fast is not None:
            self._fast_mark_used = self._fast.prepare(_MARK_KEY_USED)
            self._find_batch = self._fast.batched_lookups(
                "look up the API key", _FIND_KEY_BY_HASH, _FIND_KEYS_BY_HASH
            )
        self._lite_find: LiteStatement | None = None
        self._lite_mark_used: LiteStatement | None = None
        if lite is not None:
            self._lite_find = lite.prepare(_FIND_KEY_BY_HASH)
            self._lite_mark_used = lite.prepare(_MARK_KEY_USED)

    async def add(self, key: ApiKeyRecord, *, audit: AuditEvent) -> None:
        """Store a new key; `ConflictError` if its id or hash is taken."""
        values, event = _api_key_values(key), _audit_params(audit)

        def store(conn: sa.Connection) -> None:
            conn.execute(_INSERT_API_KEY, values)
            conn.execute(_INSERT_AUDIT_EVENT, event)

        await self._write_transaction("store the API key", store)

    async def register_legacy(self, key: ApiKeyRecord, *, audit: AuditEvent) -> ApiKeyRecord:
        """Store a caller-chosen key, or renew the expiry of the same key.

        When renewed, an audit event whose ``target_id`` is the proposed ``key.id`` is
        recorded against the stored key's id instead.
        """
        insert = self._insert(api_keys).values(_api_key_values(key))
        upsert = insert.on_conflict_do_update(
            index_elements=[api_keys.c.key_hash],
            set_={"expires_at": insert.excluded.expires_at},
            # Never rebind a key to another identifier, nor revive a revoked one (T-AZ-07).
            where=sa.and_(
                api_keys.c.identifier.is_not_distinct_from(insert.excluded.identifier),
                api_keys.c.revoked_at.is_(None),
            ),
        ).returning(*_API_KEY_COLUMNS)

        def register(conn: sa.Connection) -> ApiKeyRecord:
            row = conn.execute(upsert).first()
            if row is None:
                raise ConflictError("this key is registered to another identifier, or was revoked")
            stored = _api_key(row)
            event = audit
            if stored.id != key.id and audit.target_id == key.id:
                event = dataclasses.replace(audit, target_id=stored.id)
            conn.execute(_INSERT_AUDIT_EVENT, _audit_params(event))
            return stored

        return await self._write_transaction("register the API key", register)

    async def find_by_hash(self, key_hash: bytes, *, now: datetime) -> ApiKeyRecord | None:
        """The key whose current hash, or still-in-grace previous hash, is ``key_hash``."""
        params = {"hash": key_hash, "now": now}
        if self._find_batch is not None:
            row = await self._find_batch(params)
            return None if row is None else _api_key(row)
        if self._lite is not None and (find := self._lite_find) is not None:
            with contextlib.suppress(Busy):
                row = self._lite.read("look up the API key", lambda conn: conn.first(find, params))
                return None if row is None else _api_key(row)
        row = await self._read(
            "look up the API key", lambda conn: conn.execute(_FIND_KEY_BY_HASH, params).first()
        )
        return None if row is None else _api_key(row)

    async def get(self, key_id: str) -> ApiKeyRecord | None:
        """The key with this id, or None."""
        query = sa.select(*_API_KEY_COLUMNS).where(api_keys.c.id == key_id)
        row = await self._read("read the API key", lambda conn: conn.execute(query).first())
        return None if row is None else _api_key(row)

    async def list(
        self,
        *,
        limit: int,
        after: str | None = None,
        identifier: str | None = None,
        include_revoked: bool = True,
    ) -> builtins.list[ApiKeyRecord]:
        """Keys ordered by id, starting after ``after`` (keyset pagination)."""
        query = sa.select(*_API_KEY_COLUMNS).order_by(api_keys.c.id).limit(limit)
        if after is not None:
            query = query.where(api_keys.c.id > after)
        if identifier is not None:
            query = query.where(api_keys.c.identifier == identifier)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        rows = await self._read("list API keys", lambda conn: conn.execute(query).all())
        return [_api_key(row) for row in rows]

    async def revoke(
        self, key_id: str, *, at: datetime, reason: str, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Revoke a key and its refresh tokens; a revoked key is returned unchanged."""
        revoke_key = (
            sa.update(api_keys)
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=at, revoked_reason=reason)
            .returning(*_API_KEY_COLUMNS)
        )
        revoke_tokens = (
            sa.update(refresh_tokens)
            .where(refresh_tokens.c.key_id == key_id, refresh_tokens.c.revoked_at.is_(None))
            .values(revoked_at=at)
        )
        event = _audit_params(audit)

        def revoke(conn: sa.Connection) -> ApiKeyRecord | None:
            row = conn.execute(revoke_key).first()
            if row is None:  # unknown, or revoked already: nothing changes, nothing audited
                query = sa.select(*_API_KEY_COLUMNS).where(api_keys.c.id == key_id)
                row = conn.execute(query).first()
                return None if row is None else _api_key(row)
            conn.execute(revoke_tokens)
            conn.execute(_INSERT_AUDIT_EVENT, event)
            return _api_key(row)

        return await self._write_transaction("revoke the API key", revoke)

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
            .returning(*_API_KEY_COLUMNS)
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
            .returning(*_API_KEY_COLUMNS)
        )
        return await self._change_key("change the API key's expiry", query, audit)

    async def _change_key(
        self, doing: str, update: sa.UpdateBase, audit: AuditEvent
    ) -> ApiKeyRecord | None:
        """Run an UPDATE ... RETURNING of one key and audit it if it matched."""
        event = _audit_params(audit)

        def change(conn: sa.Connection) -> ApiKeyRecord | None:
            row = conn.execute(update).first()
            if row is None:
                return None
            conn.execute(_INSERT_AUDIT_EVENT, event)
            return _api_key(row)

        return await self._write_transaction(doing, change)

    async def mark_used(self, key_id: str, *, at: datetime) -> None:
        """Record ``last_used_at`` (never moves it backwards)."""
        params = {"key": key_id, "at": at}
        if self._fast is not None and self._fast_mark_used is not None:
            await self._fast.fetchrow("record the API key's use", self._fast_mark_used, params)
            return
        if self._lite is not None and (mark := self._lite_mark_used) is not None:
            with contextlib.suppress(Busy):
                await self._lite.write(
                    "record the API key's use", lambda conn: conn.execute(mark, params)
                )
                return
        await self._write(
            "record the API key's use", lambda conn: conn.execute(_MARK_KEY_USED, params)
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
            .returning(*_API_KEY_COLUMNS)
        )
        return await self._change_key("upgrade the API key's hash", query, audit)


class SQLRefreshTokenRepository(_Repository):
    """Refresh tokens (`keyturn.storage.base.RefreshTokenRepository`)."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        write_lock: asyncio.Lock | None = None,
        lite: LitePath | None = None,
        fast: FastPath | None = None,
    ) -> None:
        super().__init__(engine, write_lock=write_lock, lite=lite, fast=fast)
        self._add_batch: Batcher[Mapping[str, Any], Any] | None = None
        self._find_batch: Batcher[Mapping[str, Any], Any] | None = None
        self._fast_rotate: FastStatement | None = None
        if self._fast is not None:
            self._add_batch = self._fast.batched_lookups(
                "store the refresh token",
                _ADD_REFRESH_TOKEN_WITH_AUDIT,
                _ADD_REFRESH_TOKENS_WITH_AUDIT,
            )
            self._find_batch = self._fast.batched_lookups(
                "look up the refresh token",
                _FIND_REFRESH_TOKEN_WITH_KEY,
                _FIND_REFRESH_TOKENS_WITH_KEY,
            )
            self._fast_rotate = self._fast.prepare(_ROTATE_WITH_SUCCESSOR_AND_AUDIT)
        self._lite_statements: _LiteRefreshStatements | None = None
        if lite is not None:
            self._lite_statements = _LiteRefreshStatements(lite)

    async def add(self, token: RefreshTokenRecord, *, audit: AuditEvent) -> bool:
        """Store a new refresh token and its audit row; `ConflictError` on a clash.

        False, and nothing written, when the token's key is revoked by then.
        """
        stored, event = _new_token_params(token), _audit_params(audit)
        if self._add_batch is not None:
            return await self._add_batch(stored | event) is not None
        if self._postgresql:
            params = stored | event
            row = await self._write(
                "store the refresh token",
                lambda conn: conn.execute(_ADD_REFRESH_TOKEN_WITH_AUDIT, params).first(),
            )
            return row is not None

        if self._lite is not None and (lite := self._lite_statements) is not None:

            def store_fast(conn: LiteConnection) -> bool:
                if conn.first(lite.key_is_live, stored) is None:
                    return False
                conn.execute(lite.insert_token, stored)
                conn.execute(lite.insert_audit, event)
                return True

            with contextlib.suppress(Busy):
                return await self._lite.write("store the refresh token", store_fast)

        def store(conn: sa.Connection) -> bool:
            if conn.execute(_KEY_IS_LIVE, stored).first() is None:
                return False
            conn.execute(_INSERT_REFRESH_TOKEN, stored)
            conn.execute(_INSERT_AUDIT_EVENT, event)
            return True

        return await self._write_transaction("store the refresh token", store)

    async def find_with_key(
        self, token_hash: bytes
    ) -> tuple[RefreshTokenRecord, ApiKeyRecord | None] | None:
        """The refresh token with this hash and its API key, in one query."""
        row = await self._find_row({"hash": token_hash})
        if row is None:
            return None
        values = tuple(row)
        split = len(_REFRESH_TOKEN_COLUMNS)
        key = None if values[split] is None else _api_key(values[split:])
        return _refresh_token(values[:split]), key

    async def _find_row(self, params: Mapping[str, Any]) -> Any:
        """The joined row: asyncpg fast path, else SQLite fast path, else the pooled path."""
        doing = "look up the refresh token"
        if self._find_batch is not None:
            return await self._find_batch(params)
        if self._lite is not None and (lite := self._lite_statements) is not None:
            with contextlib.suppress(Busy):
                return self._lite.read(doing, lambda conn: conn.first(lite.find, params))
        return await self._read(
            doing, lambda conn: conn.execute(_FIND_REFRESH_TOKEN_WITH_KEY, params).first()
        )

    async def rotate(
        self, token_id: str, successor: RefreshTokenRecord, *, now: datetime, audit: AuditEvent
    ) -> bool:
        """Mark ``token_id`` used and store ``successor``, if the token is still live."""
        used = {"token": token_id, "now": now, "new_id": successor.id}
        stored, event = _new_token_params(successor), _audit_params(audit)
        if self._fast is not None and self._fast_rotate is not None:
            params = used | stored | event
            row = await self._fast.fetchrow("rotate the refresh token", self._fast_rotate, params)
            return bool(row[0])
        if self._postgresql:
            params = used | stored | event
            rotated = await self._write(
                "rotate the refresh token",
                lambda conn: conn.execute(_ROTATE_WITH_SUCCESSOR_AND_AUDIT, params).scalar_one(),
            )
            return bool(rotated)

        if self._lite is not None and (lite := self._lite_statements) is not None:

            def rotate_fast(conn: LiteConnection) -> bool:
                if conn.first(lite.mark_used, used) is None:
                    return False
                conn.execute(lite.insert_token, stored)
                conn.execute(lite.insert_audit, event)
                return True

            with contextlib.suppress(Busy):
                return await self._lite.write("rotate the refresh token", rotate_fast)

        def rotate(conn: sa.Connection) -> bool:
            if conn.execute(_MARK_REFRESH_TOKEN_USED, used).first() is None:
                return False
            conn.execute(_INSERT_REFRESH_TOKEN, stored)
            conn.execute(_INSERT_AUDIT_EVENT, event)
            return True

        return await self._write_transaction("rotate the refresh token", rotate)

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
        params, event = {"family": family_id, "at": at}, _audit_params(audit)
        deny = None
        if access_tokens_until is not None:
            insert = self._insert(revoked_tokens).values(
                jti=family_entry(family_id), expires_at=access_tokens_until
            )
            deny = insert.on_conflict_do_update(
                index_elements=[revoked_tokens.c.jti],
                set_={"expires_at": insert.excluded.expires_at},
                where=revoked_tokens.c.expires_at < insert.excluded.expires_at,
            )

        def revoke(conn: sa.Connection) -> builtins.list[sa.Row[Any]]:
            rows = conn.execute(_REVOKE_REFRESH_FAMILY, params).all()
            if rows:
                conn.execute(_INSERT_AUDIT_EVENT, event)
            if deny is not None:
                conn.execute(deny)
            return list(rows)

        rows = await self._write_transaction("revoke the refresh token family", revoke)
        return sum(1 for used_at, expires_at in rows if used_at is None and expires_at > at)

    async def delete_expired(self, *, before: datetime) -> int:
        """Delete tokens whose absolute expiry is before ``before``; returns the count."""
        query = sa.delete(refresh_tokens).where(refresh_tokens.c.expires_at < before)
        return await self._write(
            "delete expired refresh tokens", lambda conn: int(conn.execute(query).rowcount)
        )


class _LiteRefreshStatements:
    """The refresh-token statements of the SQLite fast path, rendered once."""

    __slots__ = ("find", "insert_audit", "insert_token", "key_is_live", "mark_used")

    def __init__(self, lite: LitePath) -> None:
        self.find: Final = lite.prepare(_FIND_REFRESH_TOKEN_WITH_KEY)
        self.key_is_live: Final = lite.prepare(_KEY_IS_LIVE)
        self.mark_used: Final = lite.prepare(_MARK_REFRESH_TOKEN_USED)
        self.insert_token: Final = lite.prepare(_INSERT_REFRESH_TOKEN)
        self.insert_audit: Final = lite.prepare(_INSERT_AUDIT_EVENT)


class SQLSigningKeyRepository(_Repository):
    """Signing keys (`keyturn.storage.base.SigningKeyRepository`)."""

    async def list(self) -> builtins.list[SigningKeyRecord]:
        """Every stored key, oldest first."""
        query = sa.select(signing_keys).order_by(signing_keys.c.created_at, signing_keys.c.kid)
        rows = await self._read(
            "list signing keys", lambda conn: conn.execute(query).mappings().all()
        )
        return [_signing_key(row) for row in rows]

    async def add(self, key: SigningKeyRecord, *, audit: AuditEvent) -> bool:
        """Store a key; False (nothing written) if it is ACTIVE and another key is."""
        # The partial unique index is the arbiter: a second active key is skipped, not an
        # error, and a concurrent inserter waits for the first to commit (T-ROT-05).
        query = (
            self._insert(signing_keys)
            .values(_signing_key_values(key))
            .on_conflict_do_nothing(
                index_elements=[signing_keys.c.state],
                # A literal, not a bound parameter: PostgreSQL cannot match a parameter to
                # the partial index once it uses a generic plan for the prepared statement
                # (from the sixth execution on a connection), and the INSERT then failed.
                index_where=sa.text("state = 'active'"),
            )
            .returning(signing_keys.c.kid)
        )
        event = _audit_params(audit)

        def store(conn: sa.Connection) -> bool:
            if conn.execute(query).first() is None:
                return False
            conn.execute(_INSERT_AUDIT_EVENT, event)
            return True

        return await self._write_transaction("store the signing key", store)

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
        event = _audit_params(audit)

        def swap(conn: sa.Connection) -> bool:
            if self._postgresql:
                # Serialise activations: two at once would each retire only the key they
                # saw and then clash on the one-active index. Readers are not blocked.
                conn.execute(sa.text("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE"))
            if conn.execute(state).scalar() != SigningKeyState.PENDING.value:
                return False
            conn.execute(retire)
            conn.execute(activate)
            conn.execute(_INSERT_AUDIT_EVENT, event)
            return True

        return await self._write_transaction("activate the signing key", swap)

    async def delete_unpublished(self, *, now: datetime) -> int:
        """Delete retired keys whose ``publish_until`` has passed; returns the count."""
        query = sa.delete(signing_keys).where(
            signing_keys.c.state == SigningKeyState.RETIRED.value,
            signing_keys.c.publish_until < now,
        )
        return await self._write(
            "delete unpublished signing keys", lambda conn: int(conn.execute(query).rowcount)
        )


class SQLRevocationRepository(_Repository):
    """Revoked access tokens (`keyturn.storage.base.RevocationRepository`)."""

    async def revoke_access_token(
        self, jti: str, *, expires_at: datetime, audit: AuditEvent
    ) -> None:
        """Refuse ``jti`` until ``expires_at``; repeating it changes and audits nothing."""
        insert = self._insert(revoked_tokens).values(jti=jti, expires_at=expires_at)
        query = insert.on_conflict_do_update(
            index_elements=[revoked_tokens.c.jti],
            set_={"expires_at": insert.excluded.expires_at},
            where=revoked_tokens.c.expires_at < insert.excluded.expires_at,
        ).returning(revoked_tokens.c.jti)
        event = _audit_params(audit)

        def revoke(conn: sa.Connection) -> None:
            if conn.execute(query).first() is not None:
                conn.execute(_INSERT_AUDIT_EVENT, event)

        await self._write_transaction("revoke the access token", revoke)

    async def snapshot(
        self, *, now: datetime, max_token_lifetime: timedelta | None = None
    ) -> RevocationSnapshot:
        """Revoked ``jti``s unexpired at ``now`` and revoked key subjects, in one query.

        With ``max_token_lifetime``, keys revoked more than that before ``now`` are left
        out: every token issued to them has expired.
        """
        if max_token_lifetime is None:
            query, params = _ALL_REVOCATIONS, {"now": now}
        else:
            if max_token_lifetime < timedelta(0):
                raise ValueError("max_token_lifetime may not be negative")
            query = _RECENT_REVOCATIONS
            params = {"now": now, "revoked_since": now - max_token_lifetime}
        rows = await self._read("read revocations", lambda conn: conn.execute(query, params).all())
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


class SQLAuditRepository(_Repository):
    """The audit trail (`keyturn.storage.base.AuditRepository`)."""

    async def record(self, event: AuditEvent) -> None:
        """Append an event that goes with no other state change."""
        params = _audit_params(event)
        await self._write(
            "record the audit event", lambda conn: conn.execute(_INSERT_AUDIT_EVENT, params)
        )

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
        rows = await self._read(
            "read the audit trail", lambda conn: conn.execute(query).mappings().all()
        )
        return [_stored_audit_event(row) for row in rows]


_USER_FIELDS: Final = (
    "id",
    "email",
    "email_key",
    "password_hash",
    "roles",
    "scopes",
    "created_at",
    "disabled_at",
    "disabled_reason",
    "tokens_revoked_at",
    "password_changed_at",
    "last_login_at",
    "failed_logins",
    "last_failed_login_at",
)
_USER_COLUMNS: Final = tuple(users.c[name] for name in _USER_FIELDS)


def _user_values(user: UserRecord) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "email_key": user.email_key,
        "password_hash": user.password_hash,
        "roles": list(user.roles),
        "scopes": None if user.scopes is None else list(user.scopes),
        "created_at": user.created_at,
        "disabled_at": user.disabled_at,
        "disabled_reason": user.disabled_reason,
        "tokens_revoked_at": user.tokens_revoked_at,
        "password_changed_at": user.password_changed_at,
        "last_login_at": user.last_login_at,
        "failed_logins": user.failed_logins,
        "last_failed_login_at": user.last_failed_login_at,
    }


def _user(row: Sequence[Any]) -> UserRecord:
    """The record for a row of `_USER_COLUMNS`."""
    values = dict(zip(_USER_FIELDS, row, strict=True))
    values["roles"] = tuple(values["roles"])
    values["scopes"] = None if values["scopes"] is None else tuple(values["scopes"])
    values["failed_logins"] = int(values["failed_logins"])
    return UserRecord(**values)


_FIND_USER_BY_EMAIL: Final = sa.select(*_USER_COLUMNS).where(
    users.c.email_key == sa.bindparam("email_key")
)
_GET_USER: Final = sa.select(*_USER_COLUMNS).where(users.c.id == sa.bindparam("user"))


class SQLUserRepository(_Repository):
    """Users (`keyturn.storage.base.UserRepository`)."""

    async def add(self, user: UserRecord, *, audit: AuditEvent) -> None:
        """Store a new user; `ConflictError` if the id or the email is taken."""
        values, event = _user_values(user), _audit_params(audit)
        insert = sa.insert(users)

        def store(conn: sa.Connection) -> None:
            conn.execute(insert, values)
            conn.execute(_INSERT_AUDIT_EVENT, event)

        await self._write_transaction("store the user", store)

    async def get(self, user_id: str) -> UserRecord | None:
        """The user with this id, or None."""
        params = {"user": user_id}
        row = await self._read(
            "read the user", lambda conn: conn.execute(_GET_USER, params).first()
        )
        return None if row is None else _user(row)

    async def find_by_email(self, email_key: str) -> UserRecord | None:
        """The user with this case-folded email, or None."""
        params = {"email_key": email_key}
        row = await self._read(
            "look up the user", lambda conn: conn.execute(_FIND_USER_BY_EMAIL, params).first()
        )
        return None if row is None else _user(row)

    async def list(
        self, *, limit: int, after: str | None = None, include_disabled: bool = True
    ) -> builtins.list[UserRecord]:
        """Users ordered by id, starting after ``after`` (keyset pagination)."""
        query = sa.select(*_USER_COLUMNS).order_by(users.c.id).limit(limit)
        if after is not None:
            query = query.where(users.c.id > after)
        if not include_disabled:
            query = query.where(users.c.disabled_at.is_(None))
        rows = await self._read("list users", lambda conn: conn.execute(query).all())
        return [_user(row) for row in rows]

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
            .returning(*_USER_COLUMNS)
        )
        revoke_tokens = _revoke_user_tokens(user_id, audit.at)
        event = _audit_params(audit)

        def toggle(conn: sa.Connection) -> UserRecord | None:
            row = conn.execute(change).first()
            if row is None:  # unknown, or already in that state: nothing changes
                row = conn.execute(_GET_USER, {"user": user_id}).first()
                return None if row is None else _user(row)
            if disabled_at is not None:
                conn.execute(revoke_tokens)
            conn.execute(_INSERT_AUDIT_EVENT, event)
            return _user(row)

        return await self._write_transaction("change the user", toggle)

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
            .returning(*_USER_COLUMNS)
        )
        revoke_tokens = _revoke_user_tokens(user_id, at)
        event = _audit_params(audit)

        def replace(conn: sa.Connection) -> UserRecord | None:
            row = conn.execute(change).first()
            if row is None:
                return None
            conn.execute(revoke_tokens)
            conn.execute(_INSERT_AUDIT_EVENT, event)
            return _user(row)

        return await self._write_transaction("change the user's password", replace)

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
        event = _audit_params(audit)

        def record(conn: sa.Connection) -> None:
            conn.execute(change)
            conn.execute(_INSERT_AUDIT_EVENT, event)

        await self._write_transaction("record the login", record)

    async def record_failed_login(self, user_id: str, *, at: datetime, audit: AuditEvent) -> None:
        """Count a wrong password and audit it."""
        change = (
            sa.update(users)
            .where(users.c.id == user_id)
            .values(failed_logins=users.c.failed_logins + 1, last_failed_login_at=at)
        )
        event = _audit_params(audit)

        def record(conn: sa.Connection) -> None:
            conn.execute(change)
            conn.execute(_INSERT_AUDIT_EVENT, event)

        await self._write_transaction("record the failed login", record)


def _revoke_user_tokens(user_id: str, at: datetime) -> sa.Update:
    return (
        sa.update(refresh_tokens)
        .where(refresh_tokens.c.user_id == user_id, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=at)
    )


class _SQLServerSettings(_Repository):
    """Server settings, written once (`SQLStorage.claim_setting`)."""

    async def claim(self, name: str, value: str, *, at: datetime, audit: AuditEvent) -> str:
        """Store ``name`` = ``value`` unless it is set, and return the stored value."""
        # A concurrent claim of the same name waits for the first to commit and then
        # inserts nothing (PostgreSQL); SQLite's BEGIN IMMEDIATE runs them one at a time.
        # Either way the SELECT, a statement of its own, sees the winner's row.
        insert = (
            self._insert(server_settings)
            .values(name=name, value=value, created_at=at)
            .on_conflict_do_nothing(index_elements=[server_settings.c.name])
            .returning(server_settings.c.name)
        )
        stored = sa.select(server_settings.c.value).where(server_settings.c.name == name)
        event = _audit_params(audit)

        def claim(conn: sa.Connection) -> str:
            if conn.execute(insert).first() is not None:
                conn.execute(_INSERT_AUDIT_EVENT, event)
                return value
            result: str = conn.execute(stored).scalar_one()
            return result

        return await self._write_transaction("claim the server setting", claim)


class SQLStorage:
    """`keyturn.storage.base.Storage` on SQLite or PostgreSQL.

    Build it from an engine made by `keyturn.storage.engine.create_engine` (the SQLite
    transaction handling lives there), or with `SQLStorage.open`.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        if engine.dialect.name == "sqlite" and not has_sqlite_hooks(engine):
            raise ValueError("create SQLite engines with keyturn.storage.engine.create_engine")
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database: {engine.dialect.name}")
        self._engine = engine
        lock = asyncio.Lock() if engine.dialect.name == "sqlite" else None
        path = sqlite_file(engine)
        self._lite = None if path is None else LitePath(path, engine.dialect, write_lock=lock)
        self._fast: FastPath | None = None
        if engine.dialect.name == "postgresql":
            from keyturn.storage.sql.hot_postgres import FastPath  # noqa: PLC0415 -- asyncpg is optional

            self._fast = FastPath(engine.sync_engine)
        self._keys = SQLKeyRepository(engine, write_lock=lock, lite=self._lite, fast=self._fast)
        self._refresh_tokens = SQLRefreshTokenRepository(
            engine, write_lock=lock, lite=self._lite, fast=self._fast
        )
        self._users = SQLUserRepository(engine, write_lock=lock)
        self._signing_keys = SQLSigningKeyRepository(engine, write_lock=lock)
        self._revocations = SQLRevocationRepository(engine, write_lock=lock)
        self._audit = SQLAuditRepository(engine, write_lock=lock)
        self._settings = _SQLServerSettings(engine, write_lock=lock)
        # keyless builds on this module's plumbing, so it is imported here.
        from keyturn.storage.sql.client_keys import (  # noqa: PLC0415
            SQLClientKeyRepository,
            SQLReplayRepository,
        )

        self._client_keys = SQLClientKeyRepository(engine, write_lock=lock)
        self._replays = SQLReplayRepository(engine, write_lock=lock)

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        migrate: bool = False,
        pool_size: int = 10,
        max_overflow: int = 10,
        pool_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        statement_timeout: float | None = None,
        echo: bool = False,
        schema: str = DEFAULT_SCHEMA,
    ) -> SQLStorage:
        """Connect to ``url``; with ``migrate``, first bring the schema up to date.

        ``schema``: the PostgreSQL schema of Keyturn's tables (`keyturn.storage.schema`).

        Raises:
            StorageUnavailableError: the database is down (PostgreSQL: it is asked which
                schema holds Keyturn's tables).
            SchemaMissingError: PostgreSQL without Keyturn's tables, and no ``migrate``.
        """
        if is_postgresql(url):
            schema, present = await find_schema(url, schema)
            if not present and not migrate:
                # One clear line instead of "relation ... does not exist" later on (e.g. a
                # JWThenticator database Keyturn was pointed at before `db upgrade`).
                raise SchemaMissingError(
                    f"the database holds no Keyturn tables (schema {schema}): run "
                    "`keyturn db upgrade` first, or set KEYTURN_MIGRATE_ON_START=true"
                )
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            echo=echo,
            schema=schema,
        )
        if migrate:
            try:
                await upgrade_engine(engine, schema=schema)
            except BaseException:
                await engine.dispose()
                raise
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        """The engine underneath (for health checks and tests)."""
        return self._engine

    @property
    def keys(self) -> SQLKeyRepository:
        """API keys."""
        return self._keys

    @property
    def refresh_tokens(self) -> SQLRefreshTokenRepository:
        """Refresh tokens."""
        return self._refresh_tokens

    @property
    def users(self) -> SQLUserRepository:
        """People who log in with a password."""
        return self._users

    @property
    def signing_keys(self) -> SQLSigningKeyRepository:
        """Signing keys."""
        return self._signing_keys

    @property
    def revocations(self) -> SQLRevocationRepository:
        """Revoked access tokens and revocation snapshots."""
        return self._revocations

    @property
    def audit(self) -> SQLAuditRepository:
        """The audit trail."""
        return self._audit

    @property
    def client_keys(self) -> SQLClientKeyRepository:
        """Public keys of clients (``private_key_jwt``)."""
        return self._client_keys

    @property
    def replays(self) -> SQLReplayRepository:
        """Single-use ids (client assertion ``jti``s)."""
        return self._replays

    async def claim_setting(self, name: str, value: str, *, at: datetime, audit: AuditEvent) -> str:
        """Store server setting ``name`` as ``value`` unless it is set; return the stored value.

        Atomic across instances: one claim inserts (and writes ``audit``), every claim
        returns the value stored.
        """
        return await self._settings.claim(name, value, at=at, audit=audit)

    async def ping(self) -> None:
        """Round-trip to the database; `StorageUnavailableError` if it is down."""
        autocommit_engine = autocommit(self._engine)
        async with translate_errors("reach the database"), autocommit_engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    async def close(self) -> None:
        """Release every connection."""
        if self._lite is not None:
            await self._lite.close()
        if self._fast is not None:
            await self._fast.close()
        await self._engine.dispose()


if TYPE_CHECKING:
    from keyturn.storage.sql._batch import Batcher
    from keyturn.storage.sql.client_keys import SQLClientKeyRepository, SQLReplayRepository
    from keyturn.storage.sql.hot_postgres import FastPath, FastStatement

    _conforms: type[Storage] = SQLStorage  # mypy checks SQLStorage against the Protocol
