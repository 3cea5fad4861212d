"""What every command shares: options, error lines, tables and JSON output."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from keyturn.schemas import KeyOut, UserOut, fits

__all__: list[str] = []

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="KEYTURN_DATABASE_URL",
        show_envvar=True,
        help="SQLite or PostgreSQL URL (default: JWThenticator's DB_* variables if set, "
        "else keyturn.db in the data directory).",
    ),
]
DataDirOption = Annotated[
    Path,
    typer.Option(
        "--data-dir",
        envvar="KEYTURN_DATA_DIR",
        show_envvar=True,
        help="Where the default SQLite database lives (created with mode 0700).",
    ),
]
SchemaOption = Annotated[
    str,
    typer.Option(
        "--schema",
        envvar="KEYTURN_DATABASE_SCHEMA",
        show_envvar=True,
        help="PostgreSQL schema of Keyturn's tables (ignored for SQLite).",
    ),
]
KeyIdArgument = Annotated[str, typer.Argument(help="The key's id (as `keys list` shows it).")]
UserArgument = Annotated[
    str, typer.Argument(help="The user's id (as `users list` shows it) or email address.")
]
PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of standard input (for scripts) "
        "instead of prompting for it.",
    ),
]
DEFAULT_DATA_DIR = Path(".keyturn")
_ONCE_WARNING = "warning: this is the only time the key is shown; store it now."


class _CommandError(Exception):
    """A command failed in a way the user can act on: a message and an exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def _fail(message: str, exit_code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(exit_code)


def _emit(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    width = max(len(name) for name in data)
    for name, value in data.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        typer.echo(f"{name:<{width}}  {shown}")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [
        max([len(header)] + [len(row[i]) for row in rows]) for i, header in enumerate(headers)
    ]
    for line in (headers, *rows):
        typer.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _short(value: datetime | None) -> str:
    return "-" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ")


def _default_policy() -> bool:
    """Whether the default claims policy is in use (KEYTURN_POLICY_FILE is unset)."""
    return not os.environ.get("KEYTURN_POLICY_FILE")


def _scopes_text(scopes: tuple[str, ...] | None) -> str:
    # None: what the claims policy allows -- under the default policy, no scope at all.
    if scopes is None:
        return "(none)" if _default_policy() else "(roles)"
    return " ".join(scopes) or "(none)"


def _check_each(option: str, values: Iterable[str], kind: Any, rule: str) -> None:
    """Refuse what the admin API would refuse (`keyturn.schemas`), before anything is opened."""
    for value in values:
        if not fits(kind, value):
            raise typer.BadParameter(f"{value!r}: {rule}", param_hint=option)


def _scripted(model: KeyOut | UserOut) -> dict[str, Any]:
    """The admin API's view of a record, its instants in ISO 8601 as the CLI prints them."""
    return {
        name: _iso(value) if isinstance(value, datetime) else value
        for name, value in model.model_dump().items()
    }
