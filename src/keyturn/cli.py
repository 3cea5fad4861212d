"""The ``keyturn`` command line (typer).

Commands print for people by default and for scripts with ``--json``. Secrets are shown
only where the command exists to create one, and only once.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keyturn.__about__ import __version__
from keyturn.core.secrets import SecretKind, generate_secret
from keyturn.core.signing import DEFAULT_ALGORITHM, SUPPORTED_ALGORITHMS, SigningKey
from keyturn.core.tokens import peek_unverified_claims
from keyturn.errors import KeyturnError
from keyturn.storage.engine import default_sqlite_url, normalize_url
from keyturn.storage.migrate import current_revision, head_revision, upgrade

__all__ = ["app", "main"]

app = typer.Typer(
    name="keyturn",
    help="Keyturn: turn API keys into short-lived, signed JWTs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
token_app = typer.Typer(help="Look at access tokens.", no_args_is_help=True)
signing_keys_app = typer.Typer(help="Create and inspect signing keys.", no_args_is_help=True)
keys_app = typer.Typer(help="Create API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Create and upgrade the database schema.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(signing_keys_app, name="signing-keys")
app.add_typer(keys_app, name="keys")
app.add_typer(db_app, name="db")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        envvar="KEYTURN_DATABASE_URL",
        show_envvar=True,
        help="SQLite or PostgreSQL URL [default: keyturn.db in the data directory].",
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
DEFAULT_DATA_DIR = Path(".keyturn")


def _emit(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(data, indent=2, sort_keys=True))
        return
    width = max(len(name) for name in data)
    for name, value in data.items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        typer.echo(f"{name:<{width}}  {shown}")


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
            callback=_version_callback,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Keyturn: turn API keys into short-lived, signed JWTs."""


@token_app.command("inspect")
def token_inspect(
    token: Annotated[str, typer.Argument(help="The JWT to decode; '-' reads standard input.")],
    as_json: JsonOption = False,
) -> None:
    """Decode a JWT's header and claims WITHOUT verifying it (for diagnostics only)."""
    text = sys.stdin.read().strip() if token == "-" else token.strip()  # noqa: S105
    try:
        header, claims = peek_unverified_claims(text)
    except KeyturnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    _emit({"verified": False, "header": header, "claims": claims}, as_json)


@signing_keys_app.command("generate")
def signing_keys_generate(
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="Write the private key PEM here (created with mode 0600; never overwritten).",
        ),
    ],
    alg: Annotated[str, typer.Option(help=f"One of {', '.join(SUPPORTED_ALGORITHMS)}.")] = (
        DEFAULT_ALGORITHM
    ),
    as_json: JsonOption = False,
) -> None:
    """Generate a signing key, write its private PEM, and print its kid and public JWK."""
    try:
        key = SigningKey.generate(alg)
    except KeyturnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    try:
        # O_EXCL: never clobber an existing key; 0600 whatever the umask (T-KEY-01).
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except OSError as exc:
        typer.echo(f"error: cannot create {out}: {exc.strerror}", err=True)
        raise typer.Exit(2) from exc
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(key.private_pem())
        handle.flush()
        os.fsync(handle.fileno())
    _emit(
        {
            "kid": key.kid,
            "alg": key.alg,
            "path": str(out),
            "public_jwk": dict(key.verification_key.to_jwk()),
        },
        as_json,
    )


@keys_app.command("generate")
def keys_generate(as_json: JsonOption = False) -> None:
    """Print a new random API key in Keyturn's format (offline; nothing is stored)."""
    secret = generate_secret(SecretKind.API_KEY)
    _emit({"id": secret.id, "key": secret.value}, as_json)


def _database_url(database_url: str | None, data_dir: Path) -> str:
    return database_url or default_sqlite_url(data_dir)


def _shown_url(url: str) -> str:
    """The URL without its password, fit to print."""
    return normalize_url(url).render_as_string(hide_password=True)


@db_app.command("upgrade")
def db_upgrade(
    database_url: DatabaseUrlOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    revision: Annotated[str, typer.Option(help="The revision to upgrade to.")] = "head",
    as_json: JsonOption = False,
) -> None:
    """Create the database schema, or upgrade it to this version of Keyturn."""
    url = _database_url(database_url, data_dir)
    try:
        asyncio.run(upgrade(url, revision))
        current = asyncio.run(current_revision(url))
    except KeyturnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    _emit({"database": _shown_url(url), "revision": current, "head": head_revision()}, as_json)


@db_app.command("current")
def db_current(
    database_url: DatabaseUrlOption = None,
    data_dir: DataDirOption = DEFAULT_DATA_DIR,
    as_json: JsonOption = False,
) -> None:
    """Print the schema revision of the database (none for an empty one) and the newest."""
    url = _database_url(database_url, data_dir)
    try:
        current = asyncio.run(current_revision(url))
    except KeyturnError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    _emit({"database": _shown_url(url), "revision": current, "head": head_revision()}, as_json)


def main() -> None:
    """Entry point of the ``keyturn`` console script."""
    app()
