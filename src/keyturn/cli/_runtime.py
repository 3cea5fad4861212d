"""Settings, the database URL and the `Runtime` the online commands open."""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from keyturn.cli._output import _fail
from keyturn.errors import KeyturnError

if TYPE_CHECKING:
    from keyturn.config import Settings
    from keyturn.runtime import Runtime

__all__: list[str] = []

_T = TypeVar("_T")


def _database_url(database_url: str | None, data_dir: Path) -> str:
    """The option (or ``KEYTURN_DATABASE_URL``), else JWThenticator's ``DB_*``, else SQLite."""
    from keyturn.config import default_sqlite_url, legacy_overrides  # noqa: PLC0415

    if database_url:
        return database_url
    legacy: str | None = legacy_overrides(os.environ).get("database_url")
    return legacy or default_sqlite_url(data_dir)


def _shown_url(url: str) -> str:
    """The URL without its password, fit to print."""
    from keyturn.problems import shown_url  # noqa: PLC0415 -- keeps `--help` fast

    return shown_url(url)


def _sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for PostgreSQL, memory or URI forms."""
    from keyturn.storage.engine import normalize_url  # noqa: PLC0415

    parsed = normalize_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return None if parsed.query else Path(parsed.database)


def _fail_with(exc: Exception, url: str, *, starting: bool = False) -> NoReturn:
    """Print the one line `keyturn.problems.describe` has for ``exc`` and exit; or re-raise."""
    from keyturn.problems import describe  # noqa: PLC0415

    described = describe(exc, url=url, starting=starting)
    if described is None:
        raise exc
    _fail(*described)


def _check_url(url: str, *, create: bool) -> None:
    """Refuse a URL that cannot work; make a SQLite file's directory when ``create``."""
    from keyturn.problems import check_data_directory, check_database_url  # noqa: PLC0415

    try:
        check_database_url(url)
        path = _sqlite_path(url)
        if path is not None:
            check_data_directory(path.parent, create=create)
    except KeyturnError as exc:
        _fail_with(exc, url)


def _settings(**overrides: Any) -> Settings:
    """`Settings.from_environment`, or exit 2 naming the invalid settings.

    Unknown ``KEYTURN_*`` variables that are not close to a setting's name are someone
    else's (a client's, a tool's): each gets a warning line, and the command goes on.
    """
    from keyturn.config import Settings, SettingsError, unknown_variables  # noqa: PLC0415

    try:
        settings = Settings.from_environment(
            **{k: v for k, v in overrides.items() if v is not None}
        )
    except SettingsError as exc:
        # The message names variables, never their (secret) values.
        _fail(exc.message, 2)
    for variable in unknown_variables(os.environ)[1]:
        typer.echo(f"warning: {variable} is not a Keyturn setting; ignored", err=True)
    return settings


def _actor() -> str:
    """Who the audit trail names for a change made here."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in some containers
        return "cli"


async def _with_state(
    settings: Settings,
    operation: Callable[[Runtime], Awaitable[_T]],
    *,
    create: bool,
) -> _T:
    from keyturn.runtime import Runtime  # noqa: PLC0415

    state = await Runtime.open(settings, create_secrets=create)
    try:
        return await operation(state)
    finally:
        await state.close()


def _uses_data_dir(settings: Settings) -> bool:
    """Whether the database or a generated secret lives in ``settings.data_dir``."""
    secrets_here = (settings.kek is None and settings.kek_file is None) or (
        settings.pepper is None and settings.pepper_file is None
    )
    return settings.embedded_database or secrets_here


def _check_data(settings: Settings, *, create: bool) -> bool:
    """Check the database URL and the data directory before anything is opened.

    Without ``create``, a missing database or data directory is refused, saying where
    Keyturn looked and how to point it elsewhere; nothing is created. Returns whether
    Keyturn's data was found.
    """
    from keyturn.runtime.secrets import KEK_FILE_NAME, PEPPER_FILE_NAME  # noqa: PLC0415

    url = settings.resolved_database_url
    _check_url(url, create=create)
    directory = settings.data_dir
    sqlite = _sqlite_path(url)
    missing = None
    if sqlite is not None and not sqlite.exists():
        missing = f"no Keyturn database at {sqlite.absolute()}"
    generated = [
        name
        for name, value, path in (
            (KEK_FILE_NAME, settings.kek, settings.kek_file),
            (PEPPER_FILE_NAME, settings.pepper, settings.pepper_file),
        )
        if value is None and path is None and not (directory / name).exists()
    ]
    if missing is None and generated:
        missing = f"no Keyturn data in {directory.absolute()} (no {' or '.join(generated)} file)"
    if missing is not None and not create:
        _fail(
            f"{missing}; run the command where the server runs, or point it at the "
            "server's data with KEYTURN_DATA_DIR or KEYTURN_DATABASE_URL",
            2,
        )
    if _uses_data_dir(settings):
        _check_directory(settings, create=create)
    return missing is None


def _check_directory(settings: Settings, *, create: bool = False) -> None:
    from keyturn.problems import check_data_directory  # noqa: PLC0415

    try:
        check_data_directory(settings.data_dir, create=create)
    except KeyturnError as exc:
        _fail_with(exc, settings.resolved_database_url)


def _run(operation: Callable[[Runtime], Awaitable[_T]], *, create: bool = False) -> _T:
    """Open Keyturn's `Runtime` from the environment, run ``operation`` on it, close it.

    The same storage, secrets and policy the server uses, without its rate limiter,
    metrics and background tasks.
    Only ``create`` commands (`keys create`, `users add`, `signing-keys rotate`) may
    create a database, a data directory or secrets, and they say so on stderr.
    """
    settings = _settings()
    found = _check_data(settings, create=create)
    url = settings.resolved_database_url
    try:
        result = asyncio.run(_with_state(settings, operation, create=create))
    except Exception as exc:
        _fail_with(exc, url)
    if not found:
        typer.echo(
            f"note: no Keyturn data was found, so a new database and secrets were created "
            f"({_shown_url(url)}, {settings.data_dir.absolute()}); a server must use the same "
            "KEYTURN_DATA_DIR / KEYTURN_DATABASE_URL to see them",
            err=True,
        )
    return result
