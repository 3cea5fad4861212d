"""Load API keys and refresh tokens in bulk, rows shaped as the service writes them.

Usage: python bench/load_rows.py DATABASE_URL --rows 1000000 [--tag bulk-]

For the size runs of issue 19 (10^3 against 10^6 stored keys and refresh tokens): going
through the service would take hours at 10^6, so the rows are written by the database
itself in one ``INSERT ... SELECT generate_series`` per table and batch. Each row has the
shape a service write gives it: a 32-byte hash (HMAC-SHA-256 in the service, SHA-256 of
a distinct string here: as random for every index), the same JSON defaults, a live
expiry, one refresh token per key referencing it, and one audit row per key and per
token, as `KeyturnService` records them. Works on SQLite and PostgreSQL URLs
(``sqlite+aiosqlite:///...`` or ``postgresql+asyncpg://...``) of a migrated database.
"""

from __future__ import annotations

import argparse
import asyncio

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

#: Rows per statement (SQLite has no generate_series: a recursive CTE counts instead).
CHUNK = 100_000

_PG_SERIES = "generate_series(:first, :last) AS s(g)"
_LITE_SERIES = (
    "(WITH RECURSIVE s(g) AS (SELECT :first UNION ALL SELECT g + 1 FROM s WHERE g < :last)"
    " SELECT g FROM s) AS s"
)


def _statements(postgresql: bool) -> tuple[str, ...]:
    series = _PG_SERIES if postgresql else _LITE_SERIES
    if postgresql:
        key_digest = "sha256(convert_to(:tag || 'key-' || g, 'UTF8'))"
        token_digest = "sha256(convert_to(:tag || 'token-' || g, 'UTF8'))"  # noqa: S105
        now, later = "now()", "now() + interval '30 days'"
        false, true = "false", "true"
    else:  # no sha256 in SQLite: 32 bytes from randomblob, as random for an index
        key_digest = token_digest = "randomblob(32)"  # noqa: S105
        now = "strftime('%Y-%m-%d %H:%M:%S.000000', 'now')"
        later = "strftime('%Y-%m-%d %H:%M:%S.000000', 'now', '+30 days')"
        false, true = "0", "1"
    return (
        f"""INSERT INTO api_keys (id, key_hash, identifier, name, roles, extra_claims,
            metadata, legacy, created_at)
        SELECT :tag || 'key-' || g, {key_digest}, 'svc-' || g, 'bulk', '[]', '{{}}', '{{}}',
            {false}, {now}
        FROM {series}""",  # noqa: S608 -- fixed fragments, values bound
        f"""INSERT INTO refresh_tokens (id, family_id, token_hash, subject, scope, rotating,
            key_id, identifier, created_at, expires_at)
        SELECT :tag || 'token-' || g, :tag || 'family-' || g, {token_digest},
            'key:' || :tag || 'key-' || g, '[]', {true}, :tag || 'key-' || g, 'svc-' || g,
            {now}, {later}
        FROM {series}""",  # noqa: S608
        f"""INSERT INTO audit_events (at, action, outcome, actor, target_type, target_id,
            detail)
        SELECT {now}, 'key.created', 'success', 'bench', 'api_key', :tag || 'key-' || g,
            '{{}}'
        FROM {series}""",  # noqa: S608
        f"""INSERT INTO audit_events (at, action, outcome, actor, target_type, target_id,
            detail)
        SELECT {now}, 'refresh.issued', 'success', 'bench', 'refresh_token',
            :tag || 'token-' || g, '{{}}'
        FROM {series}""",  # noqa: S608
    )


async def load(engine: AsyncEngine, rows: int, *, tag: str = "bulk-") -> None:
    """Add ``rows`` keys, ``rows`` refresh tokens and their audit rows, ids ``tag...``."""
    statements = _statements(engine.dialect.name == "postgresql")
    for first in range(1, rows + 1, CHUNK):
        last = min(rows, first + CHUNK - 1)
        async with engine.begin() as conn:
            for statement in statements:
                typed = sa.text(statement).bindparams(
                    sa.bindparam("tag", type_=sa.String()),
                    sa.bindparam("first", type_=sa.Integer()),
                    sa.bindparam("last", type_=sa.Integer()),
                )
                await conn.execute(typed, {"tag": tag, "first": first, "last": last})


async def _main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--tag", default="bulk-")
    args = parser.parse_args()
    engine = create_async_engine(args.url)
    try:
        await load(engine, args.rows, tag=args.tag)
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(_main())
