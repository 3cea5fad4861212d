"""What the database time bounds (issue 18) cost per statement: asyncpg with and without.

Usage: python bench/bench_timeouts.py [--calls 2000] [--rounds 9] [--uvloop]

Two asyncpg connections to the local PostgreSQL, one opened as Keyturn's server opens
them (``command_timeout``, the server-side ``statement_timeout`` and
``idle_in_transaction_session_timeout``, TCP keepalives) and one bare. Each round runs
``--calls`` prepared one-row statements one after another on each, interleaved, and
records the CPU microseconds (this process) and wall microseconds per statement. Prints
the medians and the median of the per-round ratios (bounded / bare). This is the cost a
hot route pays: every hot statement is one such round trip, and the bound is asyncpg's
own timer on it (no extra round trip, task or await). ``--uvloop`` runs on uvloop, as
``keyturn serve`` does when it is installed (``uvicorn[standard]``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

import asyncpg

from keyturn.storage.engine import KEEPALIVE_COUNT, KEEPALIVE_IDLE, KEEPALIVE_INTERVAL

DSN = os.environ.get("KEYTURN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BOUND = 5.0  # KEYTURN_DATABASE_TIMEOUT's default


async def _run(connection: asyncpg.Connection, calls: int) -> tuple[float, float]:
    statement = await connection.prepare("SELECT $1::int, now()")
    cpu, wall = time.process_time(), time.perf_counter()
    for n in range(calls):
        await statement.fetchrow(n)
    return (
        (time.process_time() - cpu) / calls * 1e6,
        (time.perf_counter() - wall) / calls * 1e6,
    )


async def main(args: argparse.Namespace) -> None:
    bounded = await asyncpg.connect(
        DSN,
        command_timeout=BOUND + 0.5,
        server_settings={
            "statement_timeout": str(int(BOUND * 1000)),
            "idle_in_transaction_session_timeout": str(int(BOUND * 1000)),
            "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
            "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
            "tcp_keepalives_count": str(KEEPALIVE_COUNT),
        },
    )
    bare = await asyncpg.connect(DSN)
    figures: dict[str, list[tuple[float, float]]] = {"bounded": [], "bare": []}
    try:
        for round_ in range(args.rounds):
            order = [("bounded", bounded), ("bare", bare)]
            for name, connection in order if round_ % 2 else reversed(order):
                figures[name].append(await _run(connection, args.calls))
    finally:
        await bounded.close()
        await bare.close()

    print("| connection | CPU µs/statement | wall µs/statement |")
    print("|---|---:|---:|")
    for name, rows in figures.items():
        cpu = statistics.median(row[0] for row in rows)
        wall = statistics.median(row[1] for row in rows)
        print(f"| {name} | {cpu:.1f} | {wall:.1f} |")
    cpu_ratio = statistics.median(
        b[0] / n[0] for b, n in zip(figures["bounded"], figures["bare"], strict=True)
    )
    wall_ratio = statistics.median(
        b[1] / n[1] for b, n in zip(figures["bounded"], figures["bare"], strict=True)
    )
    print(f"\nbounded / bare, median of rounds: CPU {cpu_ratio:.3f}x, wall {wall_ratio:.3f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop, as the server")
    arguments = parser.parse_args()
    if arguments.uvloop:
        import uvloop

        uvloop.run(main(arguments))
    else:
        asyncio.run(main(arguments))
