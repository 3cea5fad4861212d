"""``keyturn users add|list|disable|enable|set-password``, in process on SQLite."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from keyturn.cli import app
from keyturn.config import Settings
from keyturn.errors import InvalidGrantError
from keyturn.server.state import KeyturnState

runner = CliRunner()
PASSWORD = "correct horse battery staple"


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "data"
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(directory))
    return directory


def invoke(*args: str, stdin: str | None = None) -> Result:
    result = runner.invoke(app, list(args), input=stdin)
    assert "Traceback" not in result.output
    return result


def run_json(*args: str, stdin: str | None = None) -> Any:
    result = invoke(*args, "--json", stdin=stdin)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def can_log_in(email: str, password: str) -> bool:
    async def attempt() -> bool:
        state = await KeyturnState.open(Settings.from_environment(), background=False)
        try:
            await state.service.login(email, password, refresh=False)
        except InvalidGrantError:
            return False
        finally:
            await state.close()
        return True

    return asyncio.run(attempt())


@pytest.fixture
def alice(data_dir: Path) -> dict[str, Any]:
    user: dict[str, Any] = run_json(
        "users",
        "add",
        "Alice@Example.com",
        "--scope",
        "read",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    return user


def test_add_reads_the_password_from_stdin_and_never_prints_it(alice: dict[str, Any]) -> None:
    assert alice["email"] == "Alice@Example.com"
    assert alice["scopes"] == ["read"]
    assert "password_hash" not in alice
    assert can_log_in("alice@example.com", PASSWORD)


def test_add_prompts_twice_without_echo(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keyturn.cli.users._has_terminal", lambda: True)
    result = invoke("users", "add", "bob@example.com", stdin=f"{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    assert "Repeat for confirmation" in result.output
    assert can_log_in("bob@example.com", PASSWORD)


def test_add_without_a_terminal_points_at_password_stdin(data_dir: Path) -> None:
    """Finding 30: `keyturn users add EMAIL < /dev/null` (no terminal to prompt on)."""
    result = invoke("users", "add", "carol@example.com", stdin="")

    assert result.exit_code == 2
    assert result.stderr == (
        "error: no terminal to type the password on: pipe it in with --password-stdin\n"
    )
    assert not data_dir.exists()  # refused before anything was opened


def test_add_refuses_a_common_password(data_dir: Path) -> None:
    result = invoke("users", "add", "bob@example.com", "--password-stdin", stdin="password123\n")

    assert result.exit_code == 1
    assert "common passwords" in result.stderr
    assert "password123" not in result.output


def test_list_shows_users_and_refuses_a_second_account_for_an_email(
    alice: dict[str, Any],
) -> None:
    again = invoke("users", "add", "ALICE@example.com", "--password-stdin", stdin=PASSWORD)
    listed = run_json("users", "list")
    table = invoke("users", "list")

    assert again.exit_code == 1
    assert again.stderr == (
        "error: a user with this email already exists (emails ignore case)\n"
    )  # finding 19: it said "it clashes with a stored record"
    assert "Traceback" not in again.output
    assert listed == {"users": [alice], "next_after": None}
    assert alice["id"] in table.stdout
    assert "Alice@Example.com" in table.stdout


def test_disable_enable_and_set_password_by_email_or_id(alice: dict[str, Any]) -> None:
    new = "a completely new passphrase"
    disabled = run_json("users", "disable", "alice@example.com", "--reason", "left")
    assert disabled["disabled_reason"] == "left"
    assert not can_log_in("alice@example.com", PASSWORD)

    enabled = run_json("users", "enable", alice["id"])
    changed = run_json("users", "set-password", alice["id"], "--password-stdin", stdin=new)

    assert enabled["disabled_at"] is None
    assert changed["password_changed_at"] is not None
    assert can_log_in("alice@example.com", new)
    assert not can_log_in("alice@example.com", PASSWORD)


def test_unknown_users_fail_with_exit_code_1(data_dir: Path) -> None:
    run_json("users", "add", "bob@example.com", "--password-stdin", stdin=PASSWORD + "\n")

    result = invoke("users", "disable", "nobody@example.com")

    assert result.exit_code == 1
    assert result.stderr == "error: no user with this email\n"
