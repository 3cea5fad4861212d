"""The ``keyturn`` command line (typer).

Commands print for people by default and for scripts with ``--json``. Secrets are shown
only where the command exists to create one, and only once; key hashes, the pepper and
the KEK never. Errors are one ``error: ...`` line on standard error, never a traceback:
exit code 1 when the operation failed (unknown id, database down), 2 when the settings
or the command line are invalid.

The server, storage and settings are imported inside the commands that need them, so
``keyturn --help`` stays fast.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from keyturn.__about__ import __version__
from keyturn.cli.config import config_app
from keyturn.cli.db import db_app
from keyturn.cli.keys import keys_app
from keyturn.cli.secrets import secrets_app
from keyturn.cli.serve import serve
from keyturn.cli.signing_keys import signing_keys_app
from keyturn.cli.token import token_app
from keyturn.cli.users import users_app
from keyturn.healthcheck import healthcheck
from keyturn.importers.cli import import_app

__all__ = ["app", "main"]

_TYPE_NAMES = {"str": "TEXT", "int": "INTEGER", "float": "FLOAT", "bool": "BOOLEAN"}


def _conventional_type(self: Any, ctx: Any) -> str | None:
    """The type column of ``--help``: click's TEXT, INTEGER, PATH; nothing for flags.

    Typer prints Python type hints there (``<bool>``, ``<list[str]>``); this replaces
    its method for every option and argument of this process's commands.
    """
    if self.metavar is not None:
        return str(self.metavar) or None
    if getattr(self, "is_flag", False) or getattr(self, "count", False):
        return None
    label = str(self.display_type(ctx)).strip("<>").removesuffix(" range")
    if label.startswith("list[") and label.endswith("]"):
        label = label[5:-1]  # repeatable: the help text says so
    if "|" in label:  # choices
        return label
    return _TYPE_NAMES.get(label, label.upper())


typer.core.TyperOption.display_type_rich = _conventional_type  # type: ignore[method-assign]
typer.core.TyperArgument.display_type_rich = _conventional_type  # type: ignore[method-assign]

app = typer.Typer(
    name="keyturn",
    help="Keyturn: turn API keys into short-lived, signed JWTs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(token_app, name="token")
app.add_typer(signing_keys_app, name="signing-keys")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(db_app, name="db")
app.add_typer(secrets_app, name="secrets")
app.add_typer(config_app, name="config")
app.add_typer(import_app, name="import")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"keyturn {__version__}")
        raise typer.Exit


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            "-V",
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Keyturn: turn API keys into short-lived, signed JWTs."""


app.command("serve")(serve)
app.command("healthcheck")(healthcheck)  # keyturn/healthcheck.py: the image's HEALTHCHECK


def main() -> None:
    """Entry point of the ``keyturn`` console script."""
    app()
