"""The storage contract runs on every implementation: SQLite, PostgreSQL and in memory.

Here ``storage`` is also `keyturn.testing.InMemoryStorage`, so the contract tests of this
folder hold for it as for SQL. A test of something only a SQL engine has (its engine,
its tables, its fast paths) asks for ``sql_storage`` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from keyturn.storage.engine import create_engine
from keyturn.storage.sql import SQLStorage
from keyturn.testing import InMemoryStorage
from tests.storage_fixtures import BACKENDS


@pytest.fixture(params=[*BACKENDS, pytest.param("memory", id="memory")])
async def storage(request: pytest.FixtureRequest) -> AsyncIterator[SQLStorage | InMemoryStorage]:
    """An empty storage on each implementation in turn; closed afterwards."""
    if request.param == "memory":
        yield InMemoryStorage()
        return
    url: str = request.getfixturevalue(f"{request.param}_database_url")
    store = SQLStorage(create_engine(url))
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
async def sql_storage(database_url: str) -> AsyncIterator[SQLStorage]:
    """A ready `SQLStorage` over an empty, migrated database (SQLite, then PostgreSQL)."""
    store = SQLStorage(create_engine(database_url))
    try:
        yield store
    finally:
        await store.close()
