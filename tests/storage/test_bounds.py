"""Issue 18, defect 2: every database wait has a bound, and the bounds reach the drivers.

The black-hole proxy test (``test_blackhole.py``) shows PostgreSQL's bounds at work; these
check each bound where it is set, and SQLite's writer queue.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import sqlalchemy as sa

from keyturn.errors import StorageUnavailableError
from keyturn.storage.engine import KEEPALIVE_IDLE, create_engine
from keyturn.storage.sql import SQLStorage

from .factories import event


async def test_sqlite_writers_queue_no_longer_than_the_pool_timeout(
    sqlite_database_url: str,
) -> None:
    """A writer behind this process's writer queue fails with a 503 instead of waiting."""
    storage = SQLStorage(create_engine(sqlite_database_url, pool_timeout=0.2))
    lock = storage.audit._pooled._write_lock
    assert lock is not None
    try:
        await lock.acquire()  # a writer holds the database for longer than the bound
        started = time.monotonic()
        try:
            with pytest.raises(StorageUnavailableError):
                await asyncio.wait_for(storage.audit.record(event("queued")), timeout=10)
        finally:
            lock.release()
        assert time.monotonic() - started < 5  # the bound, not the 10 s guard, ended it

        await storage.audit.record(event("after"))  # the queue is free again
    finally:
        await storage.close()


async def test_sqlite_busy_timeout_is_the_statement_timeout(sqlite_database_url: str) -> None:
    storage = SQLStorage(create_engine(sqlite_database_url, statement_timeout=1.5))
    try:
        async with storage.engine.connect() as conn:
            busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
    finally:
        await storage.close()

    assert busy == 1500


@pytest.mark.postgresql
async def test_postgresql_connections_carry_every_bound(postgresql_database_url: str) -> None:
    storage = SQLStorage(create_engine(postgresql_database_url, statement_timeout=2))
    try:
        async with storage.engine.connect() as conn:
            settings = dict(
                (
                    await conn.execute(
                        sa.text(
                            "SELECT name, setting FROM pg_settings WHERE name IN "
                            "('statement_timeout', 'idle_in_transaction_session_timeout',"
                            " 'tcp_keepalives_idle')"
                        )
                    )
                ).all()
            )
            raw = await conn.get_raw_connection()
            driver = raw.driver_connection
            assert driver is not None
            command_timeout = driver._config.command_timeout
            sock = driver._transport.get_extra_info("socket")
            keepalive = sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE)
            idle = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE)
    finally:
        await storage.close()

    assert settings["statement_timeout"] == "2000"
    assert settings["idle_in_transaction_session_timeout"] == "2000"
    assert settings["tcp_keepalives_idle"] == str(KEEPALIVE_IDLE)  # the server's side
    assert command_timeout == pytest.approx(2.5)  # the client's, a little later
    assert keepalive != 0
    assert idle == KEEPALIVE_IDLE


async def test_sqlite_busy_timeout_defaults_to_five_seconds(sqlite_database_url: str) -> None:
    """Migrations and tools pass no statement timeout: SQLite keeps its 5 s busy timeout."""
    storage = SQLStorage(create_engine(sqlite_database_url))
    try:
        async with storage.engine.connect() as conn:
            busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar_one()
    finally:
        await storage.close()

    assert busy == 5000
