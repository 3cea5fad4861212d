"""End-to-end fixtures: ``keyturn serve`` subprocesses over each database backend."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.serve_fixtures import keyturn_server
from tests.storage_fixtures import (
    BACKENDS,
    create_postgresql_database,
    drop_postgresql_database,
    run_in_own_loop,
)

__all__ = ["backend_env", "keyturn_server"]


@pytest.fixture(params=BACKENDS)
def backend_env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Server settings for each backend: the embedded SQLite default, or a throwaway
    PostgreSQL database (created empty, migrated by the server at start, dropped after).
    """
    if request.param == "sqlite":
        yield {}
        return
    admin = request.getfixturevalue("postgresql_admin_url")
    database = run_in_own_loop(lambda: create_postgresql_database(admin))
    try:
        yield {
            "KEYTURN_DATABASE_URL": database.render_as_string(hide_password=False),
            "KEYTURN_MIGRATE_ON_START": "true",
        }
    finally:
        run_in_own_loop(lambda: drop_postgresql_database(admin, database))
