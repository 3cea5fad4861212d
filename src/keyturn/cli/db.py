"""``keyturn db``: create, upgrade and inspect the database schema."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from keyturn.cli._output import (
    DEFAULT_DATA_DIR,
    DatabaseUrlOption,
    DataDirOption,
    JsonOption,
    SchemaOption,
    _emit,
)
from keyturn.cli._runtime import _check_url, _database_url, _fail_with, _shown_url

__all__ = ["db_app"]

db_app = typer.Typer(help="Create and upgrade the database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(
    database_url: DatabaseUrlOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    revision: Annotated[str, typer.Option(help="The revision to upgrade to.")] = "head",
    schema: SchemaOption = "keyturn",
    as_json: JsonOption = False,
) -> None:
    """Create the database schema, or upgrade it to this version of Keyturn."""
    from keyturn.storage.migrate import current_revision, head_revision, upgrade  # noqa: PLC0415

    url = _database_url(database_url, data_dir)
    _check_url(url, create=True)
    try:
        asyncio.run(upgrade(url, revision, schema=schema))
        current = asyncio.run(current_revision(url, schema=schema))
    except Exception as exc:
        _fail_with(exc, url)
    _emit({"database": _shown_url(url), "revision": current, "head": head_revision()}, as_json)


@db_app.command("current")
def db_current(
    database_url: DatabaseUrlOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    schema: SchemaOption = "keyturn",
    as_json: JsonOption = False,
) -> None:
    """Print the schema revision of the database (none for an empty one) and the newest."""
    from keyturn.storage.migrate import current_revision, head_revision  # noqa: PLC0415

    url = _database_url(database_url, data_dir)
    _check_url(url, create=False)
    try:
        current = asyncio.run(current_revision(url, schema=schema))
    except Exception as exc:
        _fail_with(exc, url)
    _emit({"database": _shown_url(url), "revision": current, "head": head_revision()}, as_json)
