"""The hot path: the verbs that have a faster way to the database than the pooled one.

Nine verbs run on every authentication and refresh: finding a key by its hash (or a
``private_key_jwt`` client by its id, with its public keys), recording
its use, storing a refresh token, finding one, rotating it, appending the audit row of an
issuance that stores no token (client credentials without a refresh token, unless the key
is revoked or expired by then), appending an audit event on its own, and claiming a
single-use id (every DPoP proof and ``private_key_jwt`` assertion's ``jti``). Each
database engine may offer them a faster way than the pooled SQLAlchemy path
(`keyturn.storage.sql.pooled`):

* PostgreSQL (`keyturn.storage.sql.hot_postgres`): the same statements, rendered once,
  on asyncpg connections leased from the pool, concurrent calls batched into one
  statement (`keyturn.storage.sql._batch`), and the refresh-token writes as one
  data-modifying CTE each, hence one round trip.
* SQLite (`keyturn.storage.sql.hot_sqlite`): the event loop's own ``sqlite3``
  connection to a WAL-mode file, with group commit.

`keyturn.storage.sql.storage.SQLStorage` picks the one for its engine once, when it is
built; a repository only asks whether it has one. A hot path that cannot serve a call
now (SQLite: another writer holds the database) raises `Busy` before writing anything,
and the verb runs on the pooled path instead.

The parameters are the statements' named parameters (`keyturn.storage.sql.statements`),
and rows come back in the column order of `keyturn.storage.sql.rows`, so the records are
made in one place, by the repositories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["Busy", "HotPath"]


class Busy(Exception):  # noqa: N818 -- a signal to fall back, not an error
    """The hot path cannot run this call now: run the verb on the pooled path instead."""


class HotPath(Protocol):
    """The fast versions of the nine hot verbs, for one database engine."""

    async def find_key_by_hash(self, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """`statements.FIND_KEY_BY_HASH` (``hash``, ``now``): the key's row, or None."""
        ...

    async def find_client(self, params: Mapping[str, Any]) -> Sequence[Sequence[Any]]:
        """`statements.FIND_CLIENT` (``client``): every row (none for an unknown key)."""
        ...

    async def mark_key_used(self, params: Mapping[str, Any]) -> None:
        """`statements.MARK_KEY_USED` (``key``, ``at``)."""
        ...

    async def add_refresh_token(self, token: Mapping[str, Any], audit: Mapping[str, Any]) -> bool:
        """Store a token (``new_*``) and its audit row (``audit_*``) unless its key is dead."""
        ...

    async def find_refresh_token(self, params: Mapping[str, Any]) -> Sequence[Any] | None:
        """`statements.FIND_REFRESH_TOKEN_WITH_KEY` (``hash``): the joined row, or None."""
        ...

    async def rotate_refresh_token(
        self, used: Mapping[str, Any], successor: Mapping[str, Any], audit: Mapping[str, Any]
    ) -> bool:
        """Mark a live token used (``token``, ``now``, ``new_id``), store its successor
        and the audit row; False, and nothing written, when the token was not live."""
        ...

    async def record_issuance(self, audit: Mapping[str, Any]) -> bool:
        """`statements.RECORD_ISSUANCE` (``audit_*``): False, and nothing written, when the
        key ``audit_target_id`` is revoked or expired at ``audit_at``."""
        ...

    async def record_audit(self, audit: Mapping[str, Any]) -> None:
        """`statements.INSERT_AUDIT_EVENT` (``audit_*``), committed before it returns."""
        ...

    async def claim_replay(self, params: Mapping[str, Any]) -> bool:
        """`statements.CLAIM_REPLAY` (``id``, ``expires_at``, ``now``), committed before it
        returns: True when the id was new (or its entry expired by ``now``), else False."""
        ...

    async def close(self) -> None:
        """Release what the hot path holds (before the engine is disposed of)."""
        ...
