"""``keyturn db upgrade`` and ``keyturn db current``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyturn.cli import app
from keyturn.storage.migrate import head_revision

runner = CliRunner()


def _run(*args: str) -> dict[str, object]:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    parsed: dict[str, object] = json.loads(result.output)
    return parsed


def test_upgrade_then_current_by_url(empty_database_url: str) -> None:
    assert _run("db", "current", "--database-url", empty_database_url)["revision"] is None

    upgraded = _run("db", "upgrade", "--database-url", empty_database_url)
    current = _run("db", "current", "--database-url", empty_database_url)

    assert upgraded["revision"] == current["revision"] == head_revision()
    assert current["head"] == head_revision()


def test_the_url_comes_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYTURN_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")

    upgraded = _run("db", "upgrade")

    assert upgraded["database"] == f"sqlite+aiosqlite:///{tmp_path}/env.db"
    assert (tmp_path / "env.db").is_file()


def test_the_default_is_keyturn_db_in_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    assert _run("db", "current")["revision"] is None
    assert not (tmp_path / ".keyturn").exists()  # looking creates nothing
    _run("db", "upgrade")
    monkeypatch.setenv("KEYTURN_DATA_DIR", str(tmp_path / "elsewhere"))
    _run("db", "upgrade")

    assert (tmp_path / ".keyturn" / "keyturn.db").is_file()
    assert (tmp_path / "elsewhere" / "keyturn.db").is_file()


def test_an_unreachable_database_exits_1_and_hides_the_password() -> None:
    result = runner.invoke(
        app, ["db", "upgrade", "--database-url", "postgresql://u:s3cret@127.0.0.1:1/x"]
    )

    assert result.exit_code == 1
    assert "unavailable" in result.output
    assert "s3cret" not in result.output
