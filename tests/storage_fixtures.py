"""Storage fixtures: a migrated, empty database per test, on SQLite and on PostgreSQL.

Registered for the whole suite from ``tests/conftest.py`` (``pytest_plugins``), so the
service tests reuse ``storage``. PostgreSQL comes from ``KEYTURN_TEST_POSTGRES_URL``
(default ``postgresql://postgres@127.0.0.1:5432/postgres``): the session creates its own
``keyturn_test_<hex>`` database there, migrates it once, empties it before every test and
drops it at the end. When the server cannot be reached, PostgreSQL cases skip with the
reason (and fail under ``KEYTURN_REQUIRE_POSTGRESQL=1``, see ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from keyturn.storage.engine import create_engine, default_sqlite_url
from keyturn.storage.migrate import upgrade
from keyturn.storage.schema import DEFAULT_SCHEMA
from keyturn.storage.sql import SQLStorage
from keyturn.storage.tables import metadata

POSTGRES_URL_ENV = "KEYTURN_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
# Read once at start-up: the suite's autouse ``clean_environ`` removes KEYTURN_* per test.
POSTGRES_URL = os.environ.get(POSTGRES_URL_ENV, DEFAULT_POSTGRES_URL)
BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
]

T = TypeVar("T")


def run_in_own_loop(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to completion on a private loop in a helper thread.

    Session fixtures use it so they never touch the event loop of the running test.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


def _admin_url() -> URL:
    return make_url(POSTGRES_URL).set(drivername="postgresql")


def _dsn(url: URL) -> str:
    return url.render_as_string(hide_password=False)


async def _admin_execute(admin: URL, *statements: str) -> None:
    conn = await asyncpg.connect(_dsn(admin), timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def create_postgresql_database(admin: URL) -> URL:
    """Create an empty ``keyturn_test_<hex>`` database; return its URL."""
    name = f"keyturn_test_{secrets.token_hex(6)}"
    await _admin_execute(admin, f'CREATE DATABASE "{name}"')
    return admin.set(database=name)


async def drop_postgresql_database(admin: URL, database: URL) -> None:
    """Drop a database made by `create_postgresql_database`, closing its sessions."""
    await _admin_execute(admin, f'DROP DATABASE IF EXISTS "{database.database}" WITH (FORCE)')


@pytest.fixture(scope="session")
def postgresql_admin_url() -> URL:
    """The maintenance database URL of the test server; skips when it is unreachable."""
    admin = _admin_url()
    try:
        run_in_own_loop(lambda: _admin_execute(admin, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        pytest.skip(f"PostgreSQL not reachable at {admin.host}:{admin.port or 5432}: {exc}")
    return admin


@pytest.fixture(scope="session")
def postgresql_session_url(postgresql_admin_url: URL) -> Iterator[str]:
    """A database for this test session, migrated to head, dropped at the end."""
    database = run_in_own_loop(lambda: create_postgresql_database(postgresql_admin_url))
    try:
        run_in_own_loop(lambda: upgrade(_dsn(database)))
        yield _dsn(database)
    finally:
        run_in_own_loop(lambda: drop_postgresql_database(postgresql_admin_url, database))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once per session, copied for every test."""
    data_dir = tmp_path_factory.mktemp("sqlite-template")
    run_in_own_loop(lambda: upgrade(default_sqlite_url(data_dir)))
    return data_dir / "keyturn.db"


async def _empty_postgresql(url: str) -> None:
    tables = ", ".join(f"{DEFAULT_SCHEMA}.{table.name}" for table in metadata.sorted_tables)
    await _admin_execute(make_url(url), f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


@pytest.fixture
def sqlite_database_url(sqlite_template: Path, tmp_path: Path) -> str:
    """A migrated SQLite database with no rows (a copy of the session's template)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    shutil.copyfile(sqlite_template, data_dir / "keyturn.db")
    (data_dir / "keyturn.db").chmod(0o600)
    return default_sqlite_url(data_dir)


@pytest.fixture
def postgresql_database_url(postgresql_session_url: str) -> str:
    """The session's migrated PostgreSQL database, emptied for this test.

    Tests that use it directly must be marked ``@pytest.mark.postgresql``.
    """
    run_in_own_loop(lambda: _empty_postgresql(postgresql_session_url))
    return postgresql_session_url


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest) -> str:
    """The URL of a migrated database with no rows, on each backend in turn."""
    url: str = request.getfixturevalue(f"{request.param}_database_url")
    return url


@pytest.fixture(params=BACKENDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a database with no tables at all (not migrated), on each backend."""
    if request.param == "sqlite":
        yield default_sqlite_url(tmp_path / "empty")
        return
    admin: URL = request.getfixturevalue("postgresql_admin_url")
    database = run_in_own_loop(lambda: create_postgresql_database(admin))
    try:
        yield _dsn(database)
    finally:
        run_in_own_loop(lambda: drop_postgresql_database(admin, database))


@pytest.fixture
async def storage(database_url: str) -> AsyncIterator[SQLStorage]:
    """A ready `SQLStorage` over an empty, migrated database; closed afterwards."""
    store = SQLStorage(create_engine(database_url))
    try:
        yield store
    finally:
        await store.close()
