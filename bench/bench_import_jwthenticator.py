"""Time ``keyturn import jwthenticator`` on a JWThenticator database of thousands of rows.

Makes a throw-away PostgreSQL database with JWThenticator 1.6.3's two tables, filled the
way its own code does (``keys.key_hash`` = hex SHA-512 of the key; a refresh token is
SHA-512 of a uuid4, stored as is), ``keyturn db upgrade``s it (Keyturn's tables go in schema
``keyturn`` beside JWThenticator's), then runs the real command line three times as a
subprocess, wall clock included start-up: a dry run, the import, and a re-run (the delta
sync of the cut-over, nothing new). Drops the database at the end.

    .venv/bin/python bench/bench_import_jwthenticator.py              # 5,000 keys + tokens
    .venv/bin/python bench/bench_import_jwthenticator.py --keys 20000

Target: the import of 5,000 keys and 5,000 refresh tokens takes under 10 s. Needs
PostgreSQL (``KEYTURN_TEST_POSTGRES_URL``, default ``postgresql://postgres@127.0.0.1:5432/
postgres``); exits 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

ADMIN = os.environ.get("KEYTURN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TARGET_SECONDS = 10.0
TABLES = (
    "CREATE TABLE keys (id SERIAL PRIMARY KEY, created TIMESTAMP, expires_at TIMESTAMP, "
    "key_hash VARCHAR(256) UNIQUE, identifier UUID NOT NULL)",
    "CREATE TABLE refresh_tokens (id SERIAL PRIMARY KEY, created TIMESTAMP, "
    "expires_at TIMESTAMP, token VARCHAR(512), key_id INTEGER REFERENCES keys(id))",
)


async def fill(url: str, count: int) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    conn = await asyncpg.connect(url)
    try:
        for statement in TABLES:
            await conn.execute(statement)
        await conn.copy_records_to_table(
            "keys",
            records=[
                (
                    now,
                    now + timedelta(days=2),
                    hashlib.sha512(secrets.token_urlsafe(24).encode()).hexdigest(),
                    uuid.uuid4(),
                )
                for _ in range(count)
            ],
            columns=["created", "expires_at", "key_hash", "identifier"],
        )
        await conn.copy_records_to_table(
            "refresh_tokens",
            records=[
                (now, now + timedelta(days=1), hashlib.sha512(uuid.uuid4().bytes).hexdigest(), i)
                for i in range(1, count + 1)
            ],
            columns=["created", "expires_at", "token", "key_id"],
        )
    finally:
        await conn.close()


async def admin(statement: str) -> None:
    conn = await asyncpg.connect(ADMIN)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def keyturn(env: dict[str, str], *args: str) -> tuple[float, dict[str, object]]:
    started = time.perf_counter()
    result = subprocess.run(  # noqa: S603 -- this interpreter, fixed arguments
        [sys.executable, "-m", "keyturn", *args, "--json"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    elapsed = time.perf_counter() - started
    return elapsed, json.loads(result.stdout) if result.stdout.startswith("{") else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=5000, help="keys (and as many tokens)")
    options = parser.parse_args()
    name = f"keyturn_bench_import_{secrets.token_hex(4)}"
    url = ADMIN.rsplit("/", 1)[0] + f"/{name}"
    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    try:
        fill_started = time.perf_counter()
        asyncio.run(fill(url, options.keys))
        print(
            f"JWThenticator database: {options.keys:,} keys and refresh tokens "
            f"({time.perf_counter() - fill_started:.1f} s to make)"
        )
        with tempfile.TemporaryDirectory() as data_dir:
            env = {
                name: value
                for name, value in os.environ.items()
                if not name.startswith(("KEYTURN_", "DB_", "RSA_"))
            }
            env |= {"KEYTURN_DATABASE_URL": url, "KEYTURN_DATA_DIR": data_dir}
            keyturn(env, "db", "upgrade")
            source = ["import", "jwthenticator", "--from", url, "--no-progress"]
            rows = [
                ("dry run", *keyturn(env, *source, "--dry-run")),
                ("import", *keyturn(env, *source)),
                ("re-run (delta sync)", *keyturn(env, *source)),
            ]
    finally:
        asyncio.run(admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    for label, seconds, summary in rows:
        keys = summary.get("keys", {})
        tokens = summary.get("refresh_tokens", {})
        print(f"{label:<20} {seconds:6.2f} s   keys {keys}   refresh tokens {tokens}")
    imported = rows[1][1]
    verdict = "PASS" if imported < TARGET_SECONDS else "FAIL"
    print(
        f"import of {options.keys:,} keys + tokens: {imported:.2f} s "
        f"(target < {TARGET_SECONDS:.0f} s): {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
