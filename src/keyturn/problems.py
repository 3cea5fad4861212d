"""Start-up and environment problems as one line a person can act on.

``keyturn serve``, ``keyturn db ...`` and every CLI command that opens Keyturn's state
build their error lines here, so one cause reads the same everywhere: a database URL
without its driver or of an unsupported kind, a database that was never migrated, a
database refusing the connection (its own reason shown, the URL's password masked), a
data directory that cannot be created or written.

`check_database_url` and `check_data_directory` look before anything is opened;
`describe` turns what went wrong while opening into ``(message, exit code)``: 2 when
the settings or the environment must change, 1 when the operation failed.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from keyturn.errors import KeyturnError, StorageUnavailableError

__all__ = [
    "SetupError",
    "check_data_directory",
    "check_database_url",
    "describe",
    "shown_url",
]

_URL_FORMS: Final = "postgresql://USER:PASSWORD@HOST:PORT/NAME or sqlite:///PATH"
_MIGRATE_ADVICE: Final = (
    "run `keyturn db upgrade` (or set KEYTURN_MIGRATE_ON_START=true to migrate at start-up)"
)
# SQLSTATE classes worth showing as the database's own reason: invalid authorization
# (28: wrong password, no such user) and invalid catalog name (3D: no such database).
_REASON_SQLSTATE_CLASSES: Final = ("28", "3D")
_UNDEFINED_TABLE: Final = "42P01"


class SetupError(KeyturnError):
    """The settings or the machine need changing before Keyturn can start (exit code 2)."""


def shown_url(url: str) -> str:
    """``url`` without its password, fit to print; never the raw text of a bad URL."""
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415 -- keeps `keyturn --help` fast

    from keyturn.storage.engine import normalize_url  # noqa: PLC0415

    try:
        return normalize_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):  # unparsable: it may hold a password
        return "the configured database"


def check_database_url(url: str) -> None:
    """Refuse a URL Keyturn cannot use, before an engine is made from it.

    Raises:
        SetupError: unparsable, not PostgreSQL or SQLite, or its driver is missing.
    """
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    from keyturn.storage.engine import normalize_url  # noqa: PLC0415

    try:
        parsed = normalize_url(url)
    except (ArgumentError, ValueError) as exc:
        raise SetupError(
            f"the database URL is not a URL Keyturn can read; expected {_URL_FORMS}"
        ) from exc
    backend = parsed.get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise SetupError(
            f"unsupported database {backend!r} ({shown_url(url)}): Keyturn runs on "
            f"PostgreSQL or SQLite, {_URL_FORMS}"
        )
    driver = parsed.get_driver_name()
    if importlib.util.find_spec(driver) is None:
        extra = "postgres" if backend == "postgresql" else "sqlite"
        raise SetupError(
            f"no driver for {shown_url(url)} ({driver} is not installed): "
            f"pip install 'keyturn[{extra}]'"
        )


def check_data_directory(directory: Path, *, create: bool) -> bool:
    """Make sure ``directory`` exists (if ``create``) and Keyturn can write in it.

    Returns whether it exists afterwards. Without ``create``, a missing directory is
    only checked to be creatable (its nearest existing parent is a writable directory).
    SQLite writes its journal next to the database and generated secrets are created
    there, so a read-only directory cannot work even when the files in it are readable.

    Raises:
        SetupError: it cannot be created, is not a directory, or is not writable.
    """
    if not directory.exists():
        if not create:
            _check_creatable(directory)
            return False
        try:
            directory.mkdir(mode=0o700, parents=True)
            directory.chmod(0o700)  # mkdir's mode is filtered by the umask
        except FileExistsError:  # created meanwhile by another instance
            pass
        except OSError as exc:
            raise SetupError(
                f"cannot create the data directory {directory.absolute()}: "
                f"{exc.strerror} (set KEYTURN_DATA_DIR to a directory Keyturn may write)"
            ) from exc
    if not directory.is_dir():
        raise SetupError(
            f"the data directory {directory.absolute()} is not a directory "
            "(set KEYTURN_DATA_DIR to a directory Keyturn may write)"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SetupError(
            f"cannot write to the data directory {directory.absolute()}: permission denied "
            "(give the user Keyturn runs as write access, or set KEYTURN_DATA_DIR)"
        )
    return True


def _check_creatable(directory: Path) -> None:
    parent = directory.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise SetupError(
            f"cannot create the data directory {directory.absolute()}: "
            f"{os.strerror(errno.ENOTDIR)} (set KEYTURN_DATA_DIR to a directory Keyturn may write)"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise SetupError(
            f"cannot create the data directory {directory.absolute()}: permission denied "
            f"in {parent} (set KEYTURN_DATA_DIR to a directory Keyturn may write)"
        )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _database_reason(exc: BaseException) -> str | None:
    """The database's or the network's own words for what went wrong, if worth showing."""
    for cause in _chain(exc):
        sqlstate = getattr(cause, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate[:2] in _REASON_SQLSTATE_CLASSES:
            return str(cause).strip() or None
        if isinstance(cause, sqlite3.OperationalError):
            return str(cause)
        if isinstance(cause, OSError) and not isinstance(cause, TimeoutError):
            if isinstance(cause.errno, int) and cause.errno > 0:
                return os.strerror(cause.errno).lower()  # "connection refused"
            return (cause.strerror or str(cause)).lower()  # "name or service not known"
        if isinstance(cause, TimeoutError):
            return "no answer in time"
    return None


def _never_migrated(exc: BaseException) -> bool:
    for cause in _chain(exc):
        if getattr(cause, "sqlstate", None) == _UNDEFINED_TABLE:
            return True
        if isinstance(cause, sqlite3.OperationalError) and "no such table" in str(cause):
            return True
    return False


def describe(  # noqa: PLR0911 -- one return per kind of problem
    exc: BaseException, *, url: str, starting: bool = False
) -> tuple[str, int] | None:
    """The one line (without ``error: ``) and exit code for ``exc``; None if unforeseen.

    ``url`` is the database in use (shown with its password masked). ``starting``
    words the database's lines for ``keyturn serve`` ("cannot start: ...").
    """
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError  # noqa: PLC0415

    from keyturn.runtime.secrets import ServerSecretsError  # noqa: PLC0415
    from keyturn.storage.schema import SchemaMissingError  # noqa: PLC0415

    prefix = "cannot start: " if starting else ""
    if isinstance(exc, SetupError):
        return exc.message, 2
    if isinstance(exc, ServerSecretsError):
        return f"invalid settings: {exc.message}", 2
    if isinstance(exc, SchemaMissingError) or _never_migrated(exc):
        return f"{prefix}the database {shown_url(url)} has no Keyturn tables: {_MIGRATE_ADVICE}", 1
    if isinstance(exc, ImportError):
        return (
            f"{prefix}no driver for {shown_url(url)} ({exc.msg}): pip install 'keyturn[postgres]'",
            2,
        )
    if isinstance(exc, ArgumentError):
        return f"{prefix}the database URL is not a URL Keyturn can read; expected {_URL_FORMS}", 2
    if isinstance(exc, StorageUnavailableError):
        # "cannot <what it was doing>: <why>": the why, the URL, the database's reason.
        head, _, why = exc.message.partition(": ")
        line = why if head.startswith("cannot ") and why else exc.message
        reason = _database_reason(exc)
        detail = f": {reason}" if reason else "; check that it is running and reachable"
        return f"{prefix}{line} ({shown_url(url)}){detail}", 1
    if isinstance(exc, KeyturnError):  # its message already says what is wrong
        return exc.message, 1
    if isinstance(exc, OSError):  # a file or directory named in the settings
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{prefix}{where}{exc.strerror or exc}", 2
    if isinstance(exc, ValueError):  # a setting the checks above did not foresee
        return f"invalid settings: {exc}", 2
    if isinstance(exc, SQLAlchemyError):
        # Bound parameters are hidden by the engine; statements are not worth showing.
        return (
            f"{prefix}the database {shown_url(url)} refused the operation "
            f"({type(exc).__name__}); is its schema current? {_MIGRATE_ADVICE}",
            1,
        )
    return None
