"""PostgreSQL CPU per hot storage call, before and after the tables grow (issue 19).

Usage: python bench/bench_plans.py [--calls 2000] [--grow 50000] [--plans custom|auto]

Opens one `SQLStorage` on a throwaway database (dropped at the end), runs each hot verb
of the PostgreSQL fast path ``--calls`` times on near-empty tables -- long enough for
PostgreSQL to settle on a cached plan per prepared statement --, then grows
``api_keys`` and ``refresh_tokens`` by ``--grow`` rows each (``load_rows.py``: one
``INSERT ... SELECT generate_series`` per table; autovacuum does not get to analyze in
between) and runs them again on the same connections. For each verb it prints the CPU
the database's server processes spent per call (from ``/proc``: run it on the database's
machine).

``--plans auto`` switches the fix off (the fast path sets ``plan_cache_mode = auto``
instead of ``force_custom_plan``): the figures before the fix.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg
import load_rows  # type: ignore[import-not-found]  # bench/load_rows.py, beside this file

from keyturn.core.records import ApiKeyRecord, AuditEvent, RefreshTokenRecord
from keyturn.storage.migrate import upgrade
from keyturn.storage.sql import SQLStorage
from keyturn.storage.sql import hot_postgres as _pgfast

ADMIN_DSN = os.environ.get(
    "KEYTURN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
NOW = datetime.now(UTC)
BATCH = 32
_SERIAL = iter(range(10**9))  # new rows' ids, distinct across measurements


def _cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _token(token_id: str) -> RefreshTokenRecord:
    return RefreshTokenRecord(
        id=token_id,
        family_id=token_id,
        token_hash=token_id.encode().ljust(32, b"."),
        subject="key:k1",
        scope=(),
        created_at=NOW,
        expires_at=NOW + timedelta(days=1),
        key_id="k1",
        identifier="svc",
    )


def _audit() -> AuditEvent:
    return AuditEvent(at=NOW, action="refresh.issued", target_id=None)


def _verbs(storage: SQLStorage) -> dict[str, Callable[[int], Awaitable[object]]]:
    keys, tokens = storage.keys, storage.refresh_tokens
    key_hash = b"k1".ljust(32, b".")
    serial = _SERIAL

    async def token_batch(_: int) -> None:
        await asyncio.gather(
            *(tokens.find_with_key(f"t{i}".encode().ljust(32, b".")) for i in range(BATCH))
        )

    async def key_batch(_: int) -> None:
        await asyncio.gather(*(keys.find_by_hash(key_hash, now=NOW) for _ in range(BATCH)))

    async def add_batch(_: int) -> None:
        await asyncio.gather(
            *(tokens.add(_token(f"n{next(serial)}"), audit=_audit()) for _ in range(BATCH))
        )

    async def rotate(_: int) -> None:
        old = f"r{next(serial)}"
        await tokens.add(_token(old), audit=_audit())
        await tokens.rotate(old, _token(f"{old}-next"), now=NOW, audit=_audit())

    return {
        f"key by hash (x{BATCH}, batched)": key_batch,
        "key by hash (alone)": lambda _: keys.find_by_hash(key_hash, now=NOW),
        f"token with key (x{BATCH}, batched)": token_batch,
        "token with key (alone)": lambda _: tokens.find_with_key(b"t1".ljust(32, b".")),
        f"token stored (x{BATCH}, batched)": add_batch,
        "token stored + rotated (alone)": rotate,
    }


async def _measure(storage: SQLStorage, pids: list[int], calls: int) -> dict[str, float]:
    per_call = {}
    for name, verb in _verbs(storage).items():
        before = _cpu_seconds(pids)
        for n in range(calls):
            await verb(n)
        spent = _cpu_seconds(pids) - before
        per_call[name] = 1e6 * spent / calls / (BATCH if "batched" in name else 1)
    return per_call


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--grow", type=int, default=50_000)
    parser.add_argument("--plans", choices=("custom", "auto"), default="custom")
    args = parser.parse_args()
    if args.plans == "auto":
        _pgfast.CUSTOM_PLANS = "SET plan_cache_mode = auto"
    name = f"keyturn_bench_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(ADMIN_DSN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    try:
        await upgrade(dsn.replace("postgresql://", "postgresql+asyncpg://"))
        storage = await SQLStorage.open(dsn.replace("postgresql://", "postgresql+asyncpg://"))
        try:
            await storage.keys.add(
                ApiKeyRecord(id="k1", key_hash=b"k1".ljust(32, b"."), created_at=NOW),
                audit=_audit(),
            )
            await storage.refresh_tokens.add(_token("t1"), audit=_audit())
            await _measure(storage, [], 10)  # lease the fast path's connections
            pids = [
                row[0]
                for row in await admin.fetch(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1", name
                )
            ]
            small = await _measure(storage, pids, args.calls)
            await load_rows.load(storage.engine, args.grow, tag="grown-")
            grown = await _measure(storage, pids, args.calls)
        finally:
            await storage.close()
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    print(f"plans: {args.plans}; PostgreSQL CPU per call (µs), {args.calls} calls per verb")
    print(f"{'verb':40} {'near-empty':>11} {f'+{args.grow:,} rows':>13}")
    for verb, spent in small.items():
        print(f"{verb:40} {spent:11.1f} {grown[verb]:13.1f}")


if __name__ == "__main__":
    asyncio.run(main())
