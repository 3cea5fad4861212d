"""`keyturn.problems`: the one place start-up failures become one line."""

from __future__ import annotations

import sqlite3

import pytest

from keyturn.errors import NotFoundError, StorageUnavailableError
from keyturn.problems import describe, shown_url

URL = "postgresql://kt:s3cret@db:5432/kt"


def caused(error: Exception, cause: BaseException) -> Exception:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("exc", "line", "code"),
    [
        pytest.param(
            PermissionError(13, "Permission denied", "/srv/kt/kek"),
            "/srv/kt/kek: Permission denied",
            2,
            id="file",
        ),
        pytest.param(
            caused(
                StorageUnavailableError(
                    "cannot claim the server setting: the database is unavailable"
                ),
                sqlite3.OperationalError("no such table: server_settings"),
            ),
            "the database postgresql+asyncpg://kt:***@db:5432/kt has no Keyturn tables: run "
            "`keyturn db upgrade` (or set KEYTURN_MIGRATE_ON_START=true to migrate at start-up)",
            1,
            id="never-migrated",
        ),
        pytest.param(
            StorageUnavailableError("cannot list keys: the database is unavailable"),
            "the database is unavailable (postgresql+asyncpg://kt:***@db:5432/kt); check that it "
            "is running and reachable",
            1,
            id="no-reason-known",
        ),
        pytest.param(
            NotFoundError("no API key with id 'x'"), "no API key with id 'x'", 1, id="keyturn"
        ),
    ],
)
def test_each_kind_of_problem_is_one_line(exc: Exception, line: str, code: int) -> None:
    assert describe(exc, url=URL) == (line, code)


def test_serve_words_database_failures_as_cannot_start() -> None:
    exc = StorageUnavailableError("cannot claim the server setting: the database is unavailable")

    described = describe(exc, url=URL, starting=True)

    assert described is not None
    assert described[0].startswith("cannot start: the database is unavailable (")
    assert "claim the server setting" not in described[0]


def test_an_unforeseen_error_is_not_described() -> None:
    assert describe(RuntimeError("bug"), url=URL) is None


def test_a_url_that_cannot_be_parsed_is_never_echoed() -> None:
    assert shown_url("postgresql://kt:s3cret@db:port/kt") == "the configured database"
