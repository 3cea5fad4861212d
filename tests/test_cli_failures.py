"""Every command's configuration and environment failures: one line, the same everywhere.

The newcomer trial's findings 2, 5, 6 and 11: a database URL Keyturn cannot use, a data
directory it cannot write, a database that refuses the connection, and a command run
away from the server's data. Each test asserts the whole first line of stderr, the exit
code, and that no traceback is printed. ``serve`` fails here before it binds a port, so
it runs in process like the other commands.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import URL
from typer.testing import CliRunner, Result

from keyturn.cli import app

runner = CliRunner()

#: The commands that open the database, as a person would type them.
OPENING = [
    pytest.param(("serve", "--port", "0", "--admin-port", "0"), id="serve"),
    pytest.param(("db", "upgrade"), id="db-upgrade"),
    pytest.param(("db", "current"), id="db-current"),
    pytest.param(("keys", "list"), id="keys-list"),
    pytest.param(("keys", "create"), id="keys-create"),
]
ZERO_SECRETS = {
    "KEYTURN_KEK": base64.urlsafe_b64encode(bytes(32)).decode(),
    "KEYTURN_PEPPER": base64.urlsafe_b64encode(bytes(32)).decode(),
}


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    result = runner.invoke(app, list(args), env=env)
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(
        result.exception, SystemExit
    ), result.exception
    return result


def first_line(result: Result) -> str:
    return result.stderr.splitlines()[0]


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test runs in an empty directory: the default data directory is not there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("command", OPENING)
def test_an_unsupported_database_is_named_with_the_kinds_that_work(
    command: tuple[str, ...],
) -> None:
    result = invoke(*command, env={"KEYTURN_DATABASE_URL": "mysql://kt:s3cret@db/kt"})

    assert result.exit_code == 2
    assert first_line(result) == (
        "error: unsupported database 'mysql' (mysql://kt:***@db/kt): Keyturn runs on "
        "PostgreSQL or SQLite, postgresql://USER:PASSWORD@HOST:PORT/NAME or sqlite:///PATH"
    )
    assert "s3cret" not in result.output


@pytest.mark.parametrize("command", OPENING)
def test_an_unparsable_url_is_refused_without_echoing_it(command: tuple[str, ...]) -> None:
    result = invoke(*command, env={"KEYTURN_DATABASE_URL": "postgresql://kt:s3cret@db:port/kt"})

    assert result.exit_code == 2
    assert first_line(result) == (
        "error: the database URL is not a URL Keyturn can read; expected "
        "postgresql://USER:PASSWORD@HOST:PORT/NAME or sqlite:///PATH"
    )
    assert "s3cret" not in result.output


@pytest.mark.parametrize("command", OPENING)
def test_postgresql_without_its_driver_says_which_extra_to_install(
    command: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A venv made by `pip install -e .` has no asyncpg (the `postgres` extra)."""
    real_find_spec = importlib.util.find_spec

    def without_asyncpg(name: str, *args: Any) -> Any:
        return None if name == "asyncpg" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", without_asyncpg)

    result = invoke(*command, env={"KEYTURN_DATABASE_URL": "postgresql://kt:s3cret@db/kt"})

    assert result.exit_code == 2
    assert first_line(result) == (
        "error: no driver for postgresql+asyncpg://kt:***@db/kt (asyncpg is not installed): "
        "pip install 'keyturn[postgres]'"
    )


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("serve", "--port", "0", "--admin-port", "0"), id="serve"),
        pytest.param(("db", "upgrade"), id="db-upgrade"),
        pytest.param(("keys", "create"), id="keys-create"),
        pytest.param(("signing-keys", "rotate"), id="signing-keys-rotate"),
    ],
)
def test_a_data_directory_under_a_file_is_a_path_problem_not_an_unavailable_database(
    command: tuple[str, ...], elsewhere: Path
) -> None:
    (elsewhere / "README.md").write_text("not a directory\n")
    data_dir = elsewhere / "README.md" / "kt"

    result = invoke(*command, env={"KEYTURN_DATA_DIR": str(data_dir)})

    assert result.exit_code == 2
    assert first_line(result) == (
        f"error: cannot create the data directory {data_dir}: Not a directory "
        "(set KEYTURN_DATA_DIR to a directory Keyturn may write)"
    )


def test_a_read_only_data_directory_is_a_permission_problem(elsewhere: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere: a read-only directory cannot be made")
    data_dir = elsewhere / "data"
    data_dir.mkdir(mode=0o500)

    result = invoke("keys", "create", env={"KEYTURN_DATA_DIR": str(data_dir)})

    assert result.exit_code == 2
    assert first_line(result) == (
        f"error: cannot write to the data directory {data_dir}: permission denied (give the "
        "user Keyturn runs as write access, or set KEYTURN_DATA_DIR)"
    )


# -- finding 5: one data directory, never a silent second one -------------------------------


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("keys", "list"), id="keys-list"),
        pytest.param(("keys", "show", "0000000000000000"), id="keys-show"),
        pytest.param(("keys", "revoke", "0000000000000000"), id="keys-revoke"),
        pytest.param(("users", "list"), id="users-list"),
        pytest.param(("signing-keys", "list"), id="signing-keys-list"),
    ],
)
def test_away_from_the_servers_data_nothing_is_created_and_the_way_is_shown(
    command: tuple[str, ...], elsewhere: Path
) -> None:
    result = invoke(*command)

    assert result.exit_code == 2
    assert result.stdout == ""
    assert first_line(result) == (
        f"error: no Keyturn database at {elsewhere}/.keyturn/keyturn.db; run the command "
        "where the server runs, or point it at the server's data with KEYTURN_DATA_DIR or "
        "KEYTURN_DATABASE_URL"
    )
    assert list(elsewhere.iterdir()) == []


def test_read_only_commands_never_create_secrets_next_to_a_configured_database(
    elsewhere: Path,
) -> None:
    url = f"sqlite:///{elsewhere}/shared.db"
    assert invoke("db", "upgrade", "--database-url", url).exit_code == 0

    result = invoke("keys", "list", env={"KEYTURN_DATABASE_URL": url})

    assert result.exit_code == 2
    assert first_line(result) == (
        f"error: no Keyturn data in {elsewhere}/.keyturn (no kek or pepper file); run the "
        "command where the server runs, or point it at the server's data with "
        "KEYTURN_DATA_DIR or KEYTURN_DATABASE_URL"
    )
    assert not (elsewhere / ".keyturn").exists()


def test_db_current_and_config_show_create_nothing(elsewhere: Path) -> None:
    assert invoke("db", "current").exit_code == 0
    assert invoke("config", "show").exit_code == 0

    assert list(elsewhere.iterdir()) == []


def test_a_first_creation_is_announced(elsewhere: Path) -> None:
    result = invoke("keys", "create", "--scope", "read", "--json")

    assert result.exit_code == 0, result.output
    assert first_line(result) == (
        "note: no Keyturn data was found, so a new database and secrets were created "
        f"(sqlite+aiosqlite:///{elsewhere}/.keyturn/keyturn.db, {elsewhere}/.keyturn); a server "
        "must use the same KEYTURN_DATA_DIR / KEYTURN_DATABASE_URL to see them"
    )
    key_id = json.loads(result.stdout)["record"]["id"]
    # The data now exists: the same command says nothing more, and reading works.
    again = invoke("keys", "create", "--scope", "read")
    assert again.exit_code == 0
    assert not again.stderr.startswith("note:")
    assert invoke("keys", "show", key_id).exit_code == 0


# -- finding 11: the database's own reason, the URL masked ---------------------------------


@pytest.mark.postgresql
@pytest.mark.parametrize("command", OPENING)
def test_a_user_the_database_does_not_know_is_named(
    command: tuple[str, ...], postgresql_admin_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    # serve would point the root logger at this runner's stderr, closed after the test.
    monkeypatch.setattr("keyturn.server.runner.configure_logging", lambda *_, **__: None)
    url = postgresql_admin_url.set(username="keyturn_no_such_user", password="s3cret")
    text = url.render_as_string(hide_password=False)

    result = invoke(*command, env={"KEYTURN_DATABASE_URL": text, **ZERO_SECRETS})

    assert result.exit_code == 1
    shown = url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=True)
    prefix = "error: cannot start: " if command[0] == "serve" else "error: "
    assert first_line(result) == (
        f'{prefix}the database refused the connection ({shown}): role "keyturn_no_such_user" '
        "does not exist"
    )
    assert "s3cret" not in result.output


@pytest.mark.postgresql
def test_a_database_that_does_not_exist_is_named(postgresql_admin_url: URL) -> None:
    url = postgresql_admin_url.set(database="keyturn_no_such_database")

    result = invoke(
        "keys",
        "list",
        env={"KEYTURN_DATABASE_URL": url.render_as_string(hide_password=False), **ZERO_SECRETS},
    )

    assert result.exit_code == 1
    shown = url.set(drivername="postgresql+asyncpg").render_as_string(hide_password=True)
    assert first_line(result) == (
        f"error: the database refused the connection ({shown}): database "
        '"keyturn_no_such_database" does not exist'
    )
