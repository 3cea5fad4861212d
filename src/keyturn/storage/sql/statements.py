"""Statements built once, at import, with named parameters.

So every execution hits SQLAlchemy's compiled cache without building a statement or its
cache key again, and the hot paths (`keyturn.storage.sql.hot`) render the same statements
once for their drivers. Parameter names never equal a column of the table a statement
writes: SQLAlchemy would take them for its values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from keyturn.storage.sql.rows import (
    API_KEY_COLUMNS,
    AUDIT_FIELDS,
    REFRESH_TOKEN_COLUMNS,
    REFRESH_TOKEN_FIELDS,
)
from keyturn.storage.tables import (
    UTCDateTime,
    api_keys,
    audit_events,
    client_public_keys,
    refresh_tokens,
    replay_guard,
    revoked_tokens,
    users,
)

__all__ = [
    "ADD_REFRESH_TOKENS_WITH_AUDIT",
    "ADD_REFRESH_TOKEN_WITH_AUDIT",
    "ALL_REVOCATIONS",
    "AT",
    "AUDIT",
    "CLAIM_REPLAY",
    "CLAIM_REPLAYS",
    "CLIENT_PUBLIC_KEY_COLUMNS",
    "FIND_CLIENT",
    "FIND_KEYS_BY_HASH",
    "FIND_KEY_BY_HASH",
    "FIND_REFRESH_TOKENS_WITH_KEY",
    "FIND_REFRESH_TOKEN_WITH_KEY",
    "HASH",
    "INSERT_API_KEY",
    "INSERT_AUDIT_EVENT",
    "INSERT_AUDIT_EVENTS",
    "INSERT_REFRESH_TOKEN",
    "ISSUANCE_KEY_IS_LIVE",
    "KEY_IS_LIVE",
    "MARK_KEY_USED",
    "MARK_REFRESH_TOKEN_USED",
    "NEW_TOKEN",
    "NOW",
    "RECENT_REVOCATIONS",
    "RECORD_ISSUANCE",
    "RECORD_ISSUANCES",
    "REVOKE_REFRESH_FAMILY",
    "ROTATE_WITH_SUCCESSOR_AND_AUDIT",
]


def _params(table: sa.Table, prefix: str, names: Iterable[str]) -> dict[str, sa.BindParameter[Any]]:
    """A parameter per column, named ``prefix + column`` and typed like the column."""
    return {name: sa.bindparam(prefix + name, type_=table.c[name].type) for name in names}


def _typed(table: sa.Table, params: Mapping[str, sa.BindParameter[Any]]) -> list[Any]:
    """Parameters cast to their columns' types, for ``INSERT ... SELECT``."""
    return [sa.cast(param, table.c[name].type).label(name) for name, param in params.items()]


NOW: Final = sa.bindparam("now", type_=UTCDateTime())
AT: Final = sa.bindparam("at", type_=UTCDateTime())
NEW_TOKEN: Final = _params(refresh_tokens, "new_", REFRESH_TOKEN_FIELDS)
AUDIT: Final = _params(audit_events, "audit_", AUDIT_FIELDS)

INSERT_API_KEY: Final = sa.insert(api_keys)
INSERT_AUDIT_EVENT: Final = sa.insert(audit_events).values(AUDIT)
INSERT_REFRESH_TOKEN: Final = sa.insert(refresh_tokens).values(NEW_TOKEN)


def _key_live(key_id: sa.ColumnElement[Any], at: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """False for a dead key: revoked (issue 18), or expired ``at`` (issue 19: a cached key
    record may not know yet); a user's token (no key) is always stored.

    An unknown key is left to the foreign key, which refuses it (`ConflictError`).
    """
    dead = sa.or_(api_keys.c.revoked_at.is_not(None), api_keys.c.expires_at <= at)
    return ~sa.exists().where(api_keys.c.id == key_id, dead)


def _add_refresh_token_with_audit() -> sa.Select[tuple[str]]:
    # The token and its audit row in one statement, atomic on its own, unless its key
    # is revoked by then: a revocation committed before it leaves nothing written (the
    # statement answers no row), so no token is issued once the revocation is in.
    typed = _typed(refresh_tokens, NEW_TOKEN)
    stored = (
        sa.insert(refresh_tokens)
        .from_select(
            list(NEW_TOKEN),
            sa.select(*typed).where(_key_live(NEW_TOKEN["key_id"], NEW_TOKEN["created_at"])),
        )
        .returning(refresh_tokens.c.id)
        .cte("stored_token")
    )
    audited = (
        sa.insert(audit_events)
        .from_select(list(AUDIT), sa.select(*_typed(audit_events, AUDIT)).select_from(stored))
        .returning(audit_events.c.id)
        .cte("audited")
    )
    return sa.select(stored.c.id).add_cte(audited)


# PostgreSQL: one statement, one round trip; a row when stored.
ADD_REFRESH_TOKEN_WITH_AUDIT: Final = _add_refresh_token_with_audit()
# SQLite: the same check, in the storing transaction.
KEY_IS_LIVE: Final = sa.select(sa.literal(1)).where(
    _key_live(NEW_TOKEN["key_id"], NEW_TOKEN["created_at"])
)


def _key_with_hash(
    hash_: sa.ColumnElement[bytes], now: sa.ColumnElement[datetime]
) -> sa.Select[Any]:
    """The key whose current hash, or previous hash still in grace at ``now``, is ``hash_``."""
    return (
        sa.select(*API_KEY_COLUMNS)
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
        sa.select(*REFRESH_TOKEN_COLUMNS, *API_KEY_COLUMNS)
        .select_from(refresh_tokens.outerjoin(api_keys, api_keys.c.id == refresh_tokens.c.key_id))
        .where(refresh_tokens.c.token_hash == hash_)
    )


HASH: Final = sa.bindparam("hash", type_=sa.LargeBinary())
FIND_KEY_BY_HASH: Final = _key_with_hash(HASH, NOW)
#: A client's public key, in the order `FIND_CLIENT` returns it after the key's columns.
CLIENT_PUBLIC_KEY_COLUMNS: Final = (
    client_public_keys.c.key_id,
    client_public_keys.c.kid,
    client_public_keys.c.alg,
    client_public_keys.c.jwk,
    client_public_keys.c.created_at,
)
#: A ``private_key_jwt`` client (``client``): one row per public key, oldest first, each the
#: key's `API_KEY_COLUMNS` then `CLIENT_PUBLIC_KEY_COLUMNS` (all None when it has none);
#: no row for an unknown key. One read for what took two (issue 17's figures).
FIND_CLIENT: Final = (
    sa.select(*API_KEY_COLUMNS, *CLIENT_PUBLIC_KEY_COLUMNS)
    .select_from(
        api_keys.outerjoin(client_public_keys, client_public_keys.c.key_id == api_keys.c.id)
    )
    .where(api_keys.c.id == sa.bindparam("client"))
    .order_by(client_public_keys.c.created_at, client_public_keys.c.kid)
)
MARK_KEY_USED: Final = (
    sa.update(api_keys)
    .where(
        api_keys.c.id == sa.bindparam("key"),
        sa.or_(api_keys.c.last_used_at.is_(None), api_keys.c.last_used_at < AT),
    )
    .values(last_used_at=AT)
)

FIND_REFRESH_TOKEN_WITH_KEY: Final = _token_with_hash(HASH)
# The compare-and-set of a rotation: only a live token is marked used.
MARK_REFRESH_TOKEN_USED: Final = (
    sa.update(refresh_tokens)
    .where(
        refresh_tokens.c.id == sa.bindparam("token"),
        refresh_tokens.c.used_at.is_(None),
        refresh_tokens.c.revoked_at.is_(None),
        refresh_tokens.c.expires_at > NOW,
    )
    .values(used_at=NOW, replaced_by=NEW_TOKEN["id"])
    .returning(refresh_tokens.c.id)
)


def _rotate_with_successor_and_audit() -> sa.Select[tuple[int]]:
    # The compare-and-set and both inserts in one statement: concurrent callers queue
    # on the token's row lock, and a loser's UPDATE then matches nothing, so its
    # inserts (which select from the UPDATE's output) write nothing either.
    used = MARK_REFRESH_TOKEN_USED.cte("used")
    stored = (
        sa.insert(refresh_tokens)
        .from_select(
            list(NEW_TOKEN), sa.select(*_typed(refresh_tokens, NEW_TOKEN)).select_from(used)
        )
        .returning(refresh_tokens.c.id)
        .cte("stored")
    )
    audited = (
        sa.insert(audit_events)
        .from_select(list(AUDIT), sa.select(*_typed(audit_events, AUDIT)).select_from(stored))
        .returning(audit_events.c.id)
        .cte("audited")
    )
    return sa.select(sa.func.count()).select_from(used).add_cte(stored, audited)


# PostgreSQL: one statement, one round trip.
ROTATE_WITH_SUCCESSOR_AND_AUDIT: Final = _rotate_with_successor_and_audit()

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
    rows = sa.select(*(each.c[name] for name in params)).order_by(each.c.n)
    return sa.insert(table).from_select(list(params), rows)


FIND_KEYS_BY_HASH: Final = _lookups({"hash": HASH, "now": NOW}, _key_with_hash)
FIND_REFRESH_TOKENS_WITH_KEY: Final = _lookups({"hash": HASH}, _token_with_hash)


def _add_refresh_tokens_with_audit() -> sa.Select[tuple[int, str]]:
    """`ADD_REFRESH_TOKEN_WITH_AUDIT` for a batch: ``(n, id)`` for each call stored."""
    each = _each(NEW_TOKEN | AUDIT)
    calls = sa.select(*each.c).select_from(each).cte("calls")
    stored = (
        sa.insert(refresh_tokens)
        .from_select(
            list(NEW_TOKEN),
            sa.select(*(calls.c[name] for name in NEW_TOKEN)).where(
                _key_live(calls.c.key_id, calls.c.created_at)
            ),
        )
        .returning(refresh_tokens.c.id)
        .cte("stored_tokens")
    )
    joined = calls.join(stored, stored.c.id == calls.c.id)
    audited = (
        sa.insert(audit_events)
        .from_select(
            list(AUDIT),
            sa.select(*(calls.c[name] for name in AUDIT)).select_from(joined).order_by(calls.c.n),
        )
        .returning(audit_events.c.id)
        .cte("audited")
    )
    return sa.select(calls.c.n, stored.c.id).select_from(joined).add_cte(audited)


ADD_REFRESH_TOKENS_WITH_AUDIT: Final = _add_refresh_tokens_with_audit()


def _record_issuance() -> sa.Insert:
    # The audit row of an access token issued alone (client credentials without a refresh
    # token), unless the key it names (``audit_target_id``) is revoked or expired by then:
    # the database decides, whatever a cached key record says (issue 19).
    typed = sa.select(*_typed(audit_events, AUDIT)).where(
        _key_live(AUDIT["target_id"], AUDIT["at"])
    )
    return sa.insert(audit_events).from_select(list(AUDIT), typed).returning(audit_events.c.id)


def _record_issuances() -> sa.Select[tuple[int]]:
    """`RECORD_ISSUANCE` for a batch: ``(n,)`` for each call whose row was written."""
    each = _each(AUDIT)
    live = (
        sa.select(*each.c)
        .select_from(each)
        .where(_key_live(each.c.target_id, each.c.at))
        .cte("live_calls")
    )
    audited = (
        sa.insert(audit_events)
        .from_select(list(AUDIT), sa.select(*(live.c[name] for name in AUDIT)).order_by(live.c.n))
        .returning(audit_events.c.id)
        .cte("audited")
    )
    return sa.select(live.c.n).add_cte(audited)


# PostgreSQL: one statement; a row when written.
RECORD_ISSUANCE: Final = _record_issuance()
RECORD_ISSUANCES: Final = _record_issuances()
# SQLite: the same check, in the writing transaction.
ISSUANCE_KEY_IS_LIVE: Final = sa.select(sa.literal(1)).where(
    _key_live(AUDIT["target_id"], AUDIT["at"])
)
# `INSERT_AUDIT_EVENT` for a batch: the audit rows of one turn's issuances, one statement.
INSERT_AUDIT_EVENTS: Final = _inserts(audit_events, AUDIT)
REVOKE_REFRESH_FAMILY: Final = (
    sa.update(refresh_tokens)
    .where(
        refresh_tokens.c.family_id == sa.bindparam("family"),
        refresh_tokens.c.revoked_at.is_(None),
    )
    .values(revoked_at=AT)
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
        ).where(revoked_tokens.c.expires_at > NOW),
        revoked_keys,
        disabled_users,
    )


ALL_REVOCATIONS: Final = _revocations(revoked_since=False)
RECENT_REVOCATIONS: Final = _revocations(revoked_since=True)


# The replay guard (single-use ids, `keyturn.storage.sql.client_keys`). Text, as SQLAlchemy's
# dialect ``insert`` constructs have no cache key (they were compiled on every claim).
# One statement both dialects speak (PostgreSQL and SQLite >= 3.35 upserts): a row when the
# id was new, or its entry had expired by ``now`` and is taken over.
_REPLAY_EXPIRES: Final = replay_guard.c.expires_at.type
CLAIM_REPLAY: Final = (
    sa.text(
        "INSERT INTO replay_guard (id, expires_at) VALUES (:id, :expires_at) "
        "ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at "
        "WHERE replay_guard.expires_at <= :now RETURNING id"
    )
    .bindparams(
        sa.bindparam("id", type_=replay_guard.c.id.type),
        sa.bindparam("expires_at", type_=_REPLAY_EXPIRES),
        sa.bindparam("now", type_=_REPLAY_EXPIRES),
    )
    .columns(replay_guard.c.id)
)
# PostgreSQL, `CLAIM_REPLAY` for a batch: ``(n,)`` for each call that claimed its id. The
# first call of an id in the batch claims it, a later one is refused as a replay (one
# ``INSERT`` may not touch a row twice); rows are written in id order, so two batches
# claiming the same ids on two instances wait for each other rather than deadlock. The
# array parameters' types are rendered as casts (asyncpg's bind casts).
CLAIM_REPLAYS: Final = (
    sa.text(
        "WITH each_call AS (SELECT * FROM unnest(:each_id, :each_expires_at, :each_now) "
        "WITH ORDINALITY AS c (id, expires_at, now, n)), "
        "firsts AS (SELECT DISTINCT ON (id) id, expires_at, now, n FROM each_call "
        "ORDER BY id, n), "
        "claimed AS (INSERT INTO replay_guard (id, expires_at) "
        "SELECT id, expires_at FROM firsts ORDER BY id "
        "ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at "
        "WHERE replay_guard.expires_at <= "
        "(SELECT f.now FROM firsts AS f WHERE f.id = excluded.id) RETURNING id) "
        "SELECT firsts.n FROM firsts JOIN claimed ON claimed.id = firsts.id"
    )
    .bindparams(
        sa.bindparam("each_id", type_=postgresql.ARRAY(sa.String(), dimensions=1)),
        sa.bindparam("each_expires_at", type_=postgresql.ARRAY(_REPLAY_EXPIRES, dimensions=1)),
        sa.bindparam("each_now", type_=postgresql.ARRAY(_REPLAY_EXPIRES, dimensions=1)),
    )
    .columns(sa.column("n", sa.BigInteger()))
)
