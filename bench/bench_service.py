"""Authenticate and refresh through `KeyturnService`, on SQLite and PostgreSQL.

Usage: python bench/bench_service.py [--seconds 5] [--concurrency 16] [--backend both]
                                     [--rounds 1] [--serial 0] [--profile DIR]
                                     [--database-timeout 5]

Each operation runs for a fixed time with N concurrent callers in one event loop (one
process, as one server worker would). PostgreSQL gets a throwaway database, dropped at
the end; SQLite a file in a temporary directory. Prints ops/s and p50/p99 latency.

* ``--rounds R`` repeats every measurement R times, interleaved, and reports the median
  (and the spread of ops/s): the machine is shared and single runs drift.
* ``--serial N`` also times N calls one after another and reports µs per call, wall clock
  and CPU (this process only: the database server's CPU is not counted).
* ``--database-timeout S`` bounds each statement as the server does
  (``KEYTURN_DATABASE_TIMEOUT``, default 5); 0 runs without a bound, for an A/B.
* ``--profile DIR`` runs cProfile over the concurrent measurements and writes one
  ``<backend>-<operation>.prof`` per operation to DIR (read them with ``pstats``); it
  slows everything down, so its ops/s are not comparable.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import re
import secrets
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from keyturn.core.keywrap import KeyEncryptionKey, KeyWrapper
from keyturn.core.secrets import Pepper
from keyturn.service import KeyturnService
from keyturn.storage.sql import SQLStorage

ADMIN_DSN = os.environ.get(
    "KEYTURN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)

Operation = Callable[[int], Awaitable[None]]


@dataclass
class Row:
    """Every round's figures for one backend and operation."""

    ops_per_s: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    serial_wall_us: list[float] = field(default_factory=list)
    serial_cpu_us: list[float] = field(default_factory=list)


async def _measure(op: Operation, seconds: float, concurrency: int, row: Row) -> None:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker(index: int) -> None:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            await op(index)
            latencies.append(time.perf_counter() - start)

    began = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.perf_counter() - began
    latencies.sort()
    row.ops_per_s.append(len(latencies) / elapsed)
    row.p50_ms.append(statistics.median(latencies) * 1000)
    row.p99_ms.append(latencies[int(len(latencies) * 0.99) - 1] * 1000)


async def _measure_serial(op: Operation, calls: int, row: Row) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        await op(0)
    row.serial_wall_us.append((time.perf_counter() - wall) / calls * 1e6)
    row.serial_cpu_us.append((time.process_time() - cpu) / calls * 1e6)


async def _bench_backend(backend: str, url: str, args: argparse.Namespace) -> dict[str, Row]:
    concurrency = args.concurrency
    bound = args.database_timeout or None  # 0: no statement bound, as before issue 18
    storage = await SQLStorage.open(
        url, migrate=True, pool_size=concurrency, max_overflow=0, statement_timeout=bound
    )
    service = KeyturnService(
        storage, pepper=Pepper.generate(), key_wrapper=KeyWrapper([KeyEncryptionKey.generate()])
    )
    try:
        await service.start()
        key = (await service.create_key(scopes=["read"])).secret
        legacy = [await service.authenticate(key, rotating=False) for _ in range(concurrency)]
        chains = [await service.authenticate(key) for _ in range(concurrency)]
        rotating: list[str] = [pair.refresh_token or "" for pair in chains]

        async def authenticate(_: int) -> None:
            await service.authenticate(key)

        async def refresh_legacy(index: int) -> None:
            await service.refresh(legacy[index].refresh_token or "")

        async def refresh_rotating(index: int) -> None:
            pair = await service.refresh(rotating[index])
            rotating[index] = pair.refresh_token or ""

        issued = (await service.authenticate(key)).access.token

        async def validate(_: int) -> None:
            service.validate(issued)

        operations: dict[str, Operation] = {
            "authenticate": authenticate,
            "refresh (rotating)": refresh_rotating,
            "refresh (legacy)": refresh_legacy,
            "validate (cached)": validate,
        }
        rows = {name: Row() for name in operations}
        for _ in range(args.rounds):
            for name, op in operations.items():
                profiler = cProfile.Profile() if args.profile else None
                if profiler is not None:
                    profiler.enable()
                await _measure(op, args.seconds, concurrency, rows[name])
                if profiler is not None:
                    profiler.disable()
                    slug = re.sub(r"\W+", "-", f"{backend}-{name}").strip("-").lower()
                    profiler.dump_stats(Path(args.profile) / f"{slug}.prof")
                if args.serial:
                    await _measure_serial(op, args.serial, rows[name])
        return rows
    finally:
        await storage.close()


def _spread(values: list[float]) -> str:
    if len(values) < 2:
        return ""
    return f" ({min(values):,.0f}-{max(values):,.0f})"


def _print(results: list[tuple[str, dict[str, Row]]], args: argparse.Namespace) -> None:
    median = statistics.median
    rounds = f", median of {args.rounds} rounds" if args.rounds > 1 else ""
    print(f"concurrency {args.concurrency}, {args.seconds:g} s per operation{rounds}, one process")
    header = "| backend | operation | ops/s | p50 ms | p99 ms |"
    rule = "|---|---|---:|---:|---:|"
    if args.serial:
        header += " serial µs/op (wall) | serial µs/op (CPU) |"
        rule += "---:|---:|"
    print(f"{header}\n{rule}")
    for backend, rows in results:
        for name, row in rows.items():
            line = (
                f"| {backend} | {name} | {median(row.ops_per_s):,.0f}{_spread(row.ops_per_s)} | "
                f"{median(row.p50_ms):.2f} | {median(row.p99_ms):.2f} |"
            )
            if args.serial:
                line += f" {median(row.serial_wall_us):,.1f} | {median(row.serial_cpu_us):,.1f} |"
            print(line)


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=1, help="report the median of R rounds")
    parser.add_argument("--serial", type=int, default=0, metavar="N", help="also time N calls")
    parser.add_argument("--profile", metavar="DIR", help="write cProfile stats to DIR")
    parser.add_argument(
        "--database-timeout",
        type=float,
        default=5.0,
        metavar="S",
        help="the statement bound, as KEYTURN_DATABASE_TIMEOUT (0: none)",
    )
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)

    results: list[tuple[str, dict[str, Row]]] = []
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            results.append(("SQLite", await _bench_backend("sqlite", url, args)))
    if args.backend in ("postgresql", "both"):
        name = f"keyturn_bench_{secrets.token_hex(4)}"
        admin = await asyncpg.connect(ADMIN_DSN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            url = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
            results.append(("PostgreSQL", await _bench_backend("postgresql", url, args)))
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()
    _print(results, args)


if __name__ == "__main__":
    asyncio.run(main())
