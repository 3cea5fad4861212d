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

import asyncio
import base64
import getpass
import json
import os
import secrets
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

from keyturn.__about__ import __version__
from keyturn.core.assertions import load_client_public_key
from keyturn.core.records import ClientPublicKeyRecord
from keyturn.core.secrets import SecretKind, generate_secret
from keyturn.core.signing import (
    DEFAULT_ALGORITHM,
    SUPPORTED_ALGORITHMS,
    SigningKey,
    VerificationKey,
)
from keyturn.core.tokens import peek_unverified_claims
from keyturn.errors import KeyturnError, SigningKeyError
from keyturn.healthcheck import healthcheck
from keyturn.importers.cli import import_app
from keyturn.schemas import KeyOut, Label, RoleName, ScopeName, UserOut, fits

if TYPE_CHECKING:
    from keyturn.config import Settings
    from keyturn.core.records import ApiKeyRecord, SigningKeyRecord, UserRecord
    from keyturn.server.state import KeyturnState
    from keyturn.service import CreatedKey, KeyPage, KeyturnService, UserPage

__all__ = ["app", "main"]

_T = TypeVar("_T")

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
token_app = typer.Typer(help="Look at access tokens.", no_args_is_help=True)
signing_keys_app = typer.Typer(help="Generate, list and rotate signing keys.", no_args_is_help=True)
keys_app = typer.Typer(help="Create, list, show, rotate and revoke API keys.", no_args_is_help=True)
users_app = typer.Typer(
    help="Add, list, disable and enable people who log in with a password.", no_args_is_help=True
)
db_app = typer.Typer(help="Create and upgrade the database schema.", no_args_is_help=True)
secrets_app = typer.Typer(
    help="Make the server's own secrets (KEYTURN_KEK, KEYTURN_PEPPER).", no_args_is_help=True
)
config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(signing_keys_app, name="signing-keys")
app.add_typer(keys_app, name="keys")
app.add_typer(users_app, name="users")
app.add_typer(db_app, name="db")
app.add_typer(secrets_app, name="secrets")
app.add_typer(config_app, name="config")
app.add_typer(import_app, name="import")

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


# -- offline commands --------------------------------------------------------------------


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
    if not as_json:
        now = datetime.now(UTC)
        for name in ("iat", "nbf", "exp"):
            if isinstance(claims.get(name), int | float) and not isinstance(claims[name], bool):
                typer.echo(f"{name:<8}  {_when(claims[name], now, expiry=name == 'exp')}")


def _when(epoch: float, now: datetime, *, expiry: bool) -> str:
    """``2026-12-07 21:52:00Z (in 14 min)``; an expiry says "expires in" / "expired ... ago"."""
    try:
        moment = datetime.fromtimestamp(epoch, UTC)
    except (OverflowError, OSError, ValueError):
        return f"{epoch} (not a time)"
    seconds = (moment - now).total_seconds()
    span = _span(abs(seconds))
    if expiry:
        relative = f"expires in {span}" if seconds > 0 else f"expired {span} ago"
    else:
        relative = f"in {span}" if seconds > 0 else f"{span} ago"
    return f"{moment.strftime('%Y-%m-%d %H:%M:%SZ')} ({relative})"


def _span(seconds: float) -> str:
    """A rough length of time for people: seconds, minutes, hours or days."""
    for unit, size, up_to in (("s", 1, 120), ("min", 60, 7200), ("h", 3600, 172800)):
        if seconds < up_to:
            return f"{int(seconds // size)} {unit}"
    return f"{int(seconds // 86400)} days"


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


@secrets_app.command("generate")
def secrets_generate(as_json: JsonOption = False) -> None:
    """Print a new KEK and pepper (base64url, offline; nothing is stored).

    Give every instance sharing a database the same two values. The output is shell
    syntax: `keyturn secrets generate > keyturn.env` makes an environment file.
    """
    from keyturn.core.keywrap import KEK_BYTES  # noqa: PLC0415
    from keyturn.core.secrets import MIN_PEPPER_BYTES  # noqa: PLC0415

    kek, pepper = (
        base64.urlsafe_b64encode(secrets.token_bytes(size)).rstrip(b"=").decode("ascii")
        for size in (KEK_BYTES, MIN_PEPPER_BYTES)
    )
    if as_json:
        _emit({"kek": kek, "pepper": pepper}, as_json=True)
        return
    typer.echo(f"KEYTURN_KEK={kek}")
    typer.echo(f"KEYTURN_PEPPER={pepper}")


# -- database schema ---------------------------------------------------------------------


def _database_url(database_url: str | None, data_dir: Path) -> str:
    """The option (or ``KEYTURN_DATABASE_URL``), else JWThenticator's ``DB_*``, else SQLite."""
    from keyturn.config import legacy_overrides  # noqa: PLC0415 -- keeps `--help` fast
    from keyturn.storage.engine import default_sqlite_url  # noqa: PLC0415

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


# -- settings and the state the online commands share -------------------------------------


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
    operation: Callable[[KeyturnState], Awaitable[_T]],
    *,
    create: bool,
) -> _T:
    from keyturn.server.state import KeyturnState  # noqa: PLC0415

    state = await KeyturnState.open(settings, background=False, create_secrets=create)
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
    from keyturn.server_secrets import KEK_FILE_NAME, PEPPER_FILE_NAME  # noqa: PLC0415

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


def _run(operation: Callable[[KeyturnState], Awaitable[_T]], *, create: bool = False) -> _T:
    """Open Keyturn's state from the environment, run ``operation`` on it, close it.

    The same storage, secrets and policy the server uses, without its background tasks.
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


# -- API keys ----------------------------------------------------------------------------


def _scripted(model: KeyOut | UserOut) -> dict[str, Any]:
    """The admin API's view of a record, its instants in ISO 8601 as the CLI prints them."""
    return {
        name: _iso(value) if isinstance(value, datetime) else value
        for name, value in model.model_dump().items()
    }


def _key_json(record: ApiKeyRecord) -> dict[str, Any]:
    """A key as scripts see it: the admin API's `KeyOut`, and whether its hash is legacy."""
    data: dict[str, Any] = {}
    for name, value in _scripted(KeyOut.of(record)).items():
        data[name] = value
        if name == "legacy":
            # True until the key is first used after `keyturn import jwthenticator`.
            data["legacy_hash"] = record.legacy_hash
    return data


def _default_policy() -> bool:
    """Whether the default claims policy is in use (KEYTURN_POLICY_FILE is unset)."""
    return not os.environ.get("KEYTURN_POLICY_FILE")


def _scopes_text(scopes: tuple[str, ...] | None) -> str:
    # None: what the claims policy allows -- under the default policy, no scope at all.
    if scopes is None:
        return "(none)" if _default_policy() else "(roles)"
    return " ".join(scopes) or "(none)"


def _print_key(record: ApiKeyRecord, as_json: bool) -> None:
    data = _key_json(record)
    if as_json:
        _emit(data, as_json=True)
        return
    data["roles"] = ", ".join(record.roles) or "-"
    data["scopes"] = _scopes_text(record.scopes)
    _emit({name: "-" if value is None else value for name, value in data.items()}, False)


def _print_created(
    created: CreatedKey,
    as_json: bool,
    public_keys: list[ClientPublicKeyRecord] | None = None,
) -> None:
    if created.secret is None:  # a private_key_jwt client: nothing secret to show
        record = _key_json(created.record)
        keys = [_public_key_json(k) for k in public_keys or ()]
        if as_json:
            _emit({"key": None, "record": record, "public_keys": keys}, as_json=True)
            return
        _print_key(created.record, as_json=False)
        _print_public_keys(public_keys or [])
        return
    if as_json:
        _emit({"key": created.secret, "record": _key_json(created.record)}, as_json=True)
    else:
        typer.echo(f"key  {created.secret}")
        typer.echo("")
        _print_key(created.record, as_json=False)
    typer.echo(_ONCE_WARNING, err=True)


def _check_each(option: str, values: Iterable[str], kind: Any, rule: str) -> None:
    """Refuse what the admin API would refuse (`keyturn.schemas`), before anything is opened."""
    for value in values:
        if not fits(kind, value):
            raise typer.BadParameter(f"{value!r}: {rule}", param_hint=option)


def _parse_instant(value: str) -> datetime:
    """An ISO 8601 date-time; without an offset it is taken as UTC."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(
            "not an ISO 8601 date-time (e.g. 2030-01-31T12:00:00Z)", param_hint="--expires-at"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed


@keys_app.command("create")
def keys_create(
    *,
    name: Annotated[str | None, typer.Option(help="A label for people.")] = None,
    identifier: Annotated[
        str | None, typer.Option(help="The caller's identifier (JWThenticator's UUID).")
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="A role from the policy; repeatable.")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            help="A scope the key may ask for; repeatable. Without one, the key gets no "
            "scope under the default policy (with KEYTURN_POLICY_FILE: what its roles allow).",
        ),
    ] = None,
    expires_at: Annotated[
        str | None,
        typer.Option(help="When the key stops working, ISO 8601 (UTC if no offset)."),
    ] = None,
    public_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            help="A device's PUBLIC key (PEM or JWK file; ES256, EdDSA, RS256): the key then "
            "authenticates with private_key_jwt and gets no secret. Repeatable.",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Create an API key and print it: the only time it is shown."""
    public_keys = _read_public_keys(public_key or ())
    _check_each("--role", role or (), RoleName, "letters, digits and _.:- (at most 64)")
    _check_each("--scope", scope or (), ScopeName, "RFC 6749 scope characters, no spaces (1-128)")
    _check_each("--name", [name or ""], Label, "at most 200 characters")
    _check_each("--identifier", [identifier or ""], Label, "at most 200 characters")
    expiry = None if expires_at is None else _parse_instant(expires_at)

    async def create(state: KeyturnState) -> CreatedKey:
        return await state.service.create_key(
            name=name,
            identifier=identifier,
            roles=role or (),
            scopes=scope or None,
            expires_at=expiry,
            public_keys=public_keys,
            actor=_actor(),
        )

    created = _run(create, create=True)
    _print_created(created, as_json, _client_keys(created, public_keys))
    if not scope and _default_policy():
        typer.echo(
            "warning: no --scope given: under the default policy this key's tokens carry no "
            "scope; create a key with --scope S (repeatable) for the scopes it needs",
            err=True,
        )


@keys_app.command("list")
def keys_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Keys per page.")] = 50,
    after: Annotated[
        str | None, typer.Option(help="Start after this id (the previous page's next_after).")
    ] = None,
    identifier: Annotated[str | None, typer.Option(help="Only keys of this identifier.")] = None,
    include_revoked: Annotated[
        bool, typer.Option("--include-revoked/--no-include-revoked", help="Show revoked keys.")
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """List API keys, ordered by id, one page at a time."""

    async def page(state: KeyturnState) -> KeyPage:
        return await state.service.list_keys(
            limit=limit, after=after, identifier=identifier, include_revoked=include_revoked
        )

    result = _run(page)
    if as_json:
        keys = [_key_json(record) for record in result.keys]
        _emit({"keys": keys, "next_after": result.next_after}, as_json=True)
        return
    if not result.keys:
        typer.echo("no keys")
        return
    headers = (
        "id",
        "name",
        "identifier",
        "roles",
        "scopes",
        "created",
        "expires",
        "last used",
        "revoked",
        "hash",
    )
    rows = [
        (
            r.id,
            r.name or "-",
            r.identifier or "-",
            ",".join(r.roles) or "-",
            _scopes_text(r.scopes),
            _short(r.created_at),
            _short(r.expires_at),
            _short(r.last_used_at),
            _short(r.revoked_at),
            # An imported JWThenticator SHA-512, re-hashed with the pepper on first use.
            "sha512" if r.legacy_hash else "hmac",
        )
        for r in result.keys
    ]
    _table(headers, rows)
    if result.next_after is not None:
        typer.echo(f"more: keyturn keys list --after {result.next_after}")


@keys_app.command("show")
def keys_show(key_id: KeyIdArgument, as_json: JsonOption = False) -> None:
    """Show one API key (never its secret)."""

    async def get(state: KeyturnState) -> ApiKeyRecord:
        return await state.service.get_key(key_id)

    _print_key(_run(get), as_json)


@keys_app.command("revoke")
def keys_revoke(
    key_id: KeyIdArgument,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Revoke an API key; its refresh tokens die with it. Revoking twice changes nothing."""

    async def revoke(state: KeyturnState) -> ApiKeyRecord:
        return await state.service.revoke_key(key_id, reason=reason, actor=_actor())

    _print_key(_run(revoke), as_json)


@keys_app.command("rotate")
def keys_rotate(
    key_id: KeyIdArgument,
    grace: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=30 * 86400,
            help="Seconds the old secret keeps working (default: KEYTURN_KEY_ROTATION_GRACE).",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Give an API key a new secret (same id) and print it: the only time it is shown."""
    grace_period = None if grace is None else timedelta(seconds=grace)

    async def rotate(state: KeyturnState) -> CreatedKey:
        return await state.service.rotate_key(key_id, grace=grace_period, actor=_actor())

    _print_created(_run(rotate), as_json)


# -- keyless clients (private_key_jwt) ---------------------------------------------------


def _read_public_keys(paths: Iterable[Path]) -> list[VerificationKey]:
    """Public keys from PEM or JWK files; a private key or a weak one is refused."""
    keys = []
    for path in paths:
        try:
            keys.append(load_client_public_key(path.read_bytes()))
        except OSError as exc:
            raise typer.BadParameter(f"{path}: {exc.strerror}", param_hint="--public-key") from exc
        except SigningKeyError as exc:
            raise typer.BadParameter(f"{path}: {exc.message}", param_hint="--public-key") from exc
    return keys


def _client_keys(
    created: CreatedKey, keys: list[VerificationKey]
) -> list[ClientPublicKeyRecord] | None:
    if not keys:
        return None
    return [
        ClientPublicKeyRecord(
            key_id=created.record.id,
            kid=key.kid,
            alg=key.alg,
            jwk=dict(key.to_jwk()),
            created_at=created.record.created_at,
        )
        for key in keys
    ]


def _public_key_json(record: ClientPublicKeyRecord) -> dict[str, Any]:
    return {
        "kid": record.kid,
        "alg": record.alg,
        "jwk": dict(record.jwk),
        "created_at": _iso(record.created_at),
    }


def _print_public_keys(records: list[ClientPublicKeyRecord]) -> None:
    if not records:
        typer.echo("no public keys")
        return
    typer.echo("")
    for record in records:
        typer.echo(f"public key  {record.kid}  {record.alg}  {_iso(record.created_at)}")


def _emit_public_keys(records: list[ClientPublicKeyRecord], as_json: bool) -> None:
    if as_json:
        _emit({"keys": [_public_key_json(k) for k in records]}, as_json=True)
    else:
        _print_public_keys(records)


@keys_app.command("public-keys")
def keys_public_keys(key_id: KeyIdArgument, as_json: JsonOption = False) -> None:
    """List the public keys an API key authenticates with (private_key_jwt)."""

    async def read(state: KeyturnState) -> list[ClientPublicKeyRecord]:
        return await state.service.list_public_keys(key_id)

    _emit_public_keys(_run(read), as_json)


@keys_app.command("add-public-key")
def keys_add_public_key(
    key_id: KeyIdArgument,
    files: Annotated[list[Path], typer.Argument(help="PEM or JWK files of PUBLIC keys.")],
    as_json: JsonOption = False,
) -> None:
    """Let an API key also authenticate with these public keys (e.g. to rotate a device key)."""
    keys = _read_public_keys(files)

    async def add(state: KeyturnState) -> list[ClientPublicKeyRecord]:
        return await state.service.add_public_keys(key_id, keys, actor=_actor())

    _emit_public_keys(_run(add), as_json)


@keys_app.command("remove-public-key")
def keys_remove_public_key(
    key_id: KeyIdArgument,
    kid: Annotated[str, typer.Argument(help="The public key's kid (its RFC 7638 thumbprint).")],
    as_json: JsonOption = False,
) -> None:
    """Stop an API key authenticating with one of its public keys."""

    async def remove(state: KeyturnState) -> list[ClientPublicKeyRecord]:
        await state.service.remove_public_key(key_id, kid, actor=_actor())
        return await state.service.list_public_keys(key_id)

    _emit_public_keys(_run(remove), as_json)


# -- users -------------------------------------------------------------------------------


def _print_user(record: UserRecord, as_json: bool) -> None:
    data = _scripted(UserOut.of(record))
    if not as_json:
        data["roles"] = ", ".join(record.roles) or "-"
        data["scopes"] = _scopes_text(record.scopes)
        data = {name: "-" if value is None else value for name, value in data.items()}
    _emit(data, as_json)


def _read_password(from_stdin: bool) -> str:
    """The new password: typed twice without echo, or the first line of standard input.

    Never a command-line argument, which other users can read in the process list.
    """
    if from_stdin:
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        if not password:
            _fail("no password on standard input", 2)
        return password
    if not _has_terminal():
        _fail("no terminal to type the password on: pipe it in with --password-stdin", 2)
    typed: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return typed


def _has_terminal() -> bool:
    """Whether a password can be typed without echo (standard input is a terminal)."""
    return sys.stdin.isatty()


async def _resolve_user(service: KeyturnService, user: str) -> UserRecord:
    return await (service.find_user(user) if "@" in user else service.get_user(user))


@users_app.command("add")
def users_add(
    email: Annotated[str, typer.Argument(help="The email address the person logs in with.")],
    *,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="A role from the policy; repeatable.")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="A scope the user's tokens may carry; repeatable."),
    ] = None,
    password_stdin: PasswordStdinOption = False,
    as_json: JsonOption = False,
) -> None:
    """Add a user; the password is prompted for (or read with --password-stdin)."""
    _check_each("--role", role or (), RoleName, "letters, digits and _.:- (at most 64)")
    _check_each("--scope", scope or (), ScopeName, "RFC 6749 scope characters, no spaces (1-128)")
    password = _read_password(password_stdin)

    async def add(state: KeyturnState) -> UserRecord:
        return await state.service.create_user(
            email, password, roles=role or (), scopes=scope or None, actor=_actor()
        )

    _print_user(_run(add, create=True), as_json)


@users_app.command("list")
def users_list(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Users per page.")] = 50,
    after: Annotated[
        str | None, typer.Option(help="Start after this id (the previous page's next_after).")
    ] = None,
    include_disabled: Annotated[
        bool,
        typer.Option("--include-disabled/--no-include-disabled", help="Show disabled users."),
    ] = True,
    as_json: JsonOption = False,
) -> None:
    """List users, ordered by id, one page at a time."""

    async def page(state: KeyturnState) -> UserPage:
        return await state.service.list_users(
            limit=limit, after=after, include_disabled=include_disabled
        )

    result = _run(page)
    if as_json:
        users = [_scripted(UserOut.of(record)) for record in result.users]
        _emit({"users": users, "next_after": result.next_after}, as_json=True)
        return
    if not result.users:
        typer.echo("no users")
        return
    headers = ("id", "email", "roles", "scopes", "created", "last login", "failed", "disabled")
    rows = [
        (
            r.id,
            r.email,
            ",".join(r.roles) or "-",
            _scopes_text(r.scopes),
            _short(r.created_at),
            _short(r.last_login_at),
            str(r.failed_logins),
            _short(r.disabled_at),
        )
        for r in result.users
    ]
    _table(headers, rows)
    if result.next_after is not None:
        typer.echo(f"more: keyturn users list --after {result.next_after}")


@users_app.command("disable")
def users_disable(
    user: UserArgument,
    reason: Annotated[str, typer.Option(help="Why, for the audit trail.")] = "",
    as_json: JsonOption = False,
) -> None:
    """Disable a user: no more logins or refreshes, and their tokens are revoked."""

    async def disable(state: KeyturnState) -> UserRecord:
        found = await _resolve_user(state.service, user)
        return await state.service.disable_user(found.id, reason=reason, actor=_actor())

    _print_user(_run(disable), as_json)


@users_app.command("enable")
def users_enable(user: UserArgument, as_json: JsonOption = False) -> None:
    """Let a disabled user log in again."""

    async def enable(state: KeyturnState) -> UserRecord:
        found = await _resolve_user(state.service, user)
        return await state.service.enable_user(found.id, actor=_actor())

    _print_user(_run(enable), as_json)


@users_app.command("set-password")
def users_set_password(
    user: UserArgument, password_stdin: PasswordStdinOption = False, as_json: JsonOption = False
) -> None:
    """Set a user's password (prompted, or --password-stdin); their sessions end."""
    password = _read_password(password_stdin)

    async def set_password(state: KeyturnState) -> UserRecord:
        found = await _resolve_user(state.service, user)
        return await state.service.set_user_password(found.id, password, actor=_actor())

    _print_user(_run(set_password), as_json)


# -- signing keys ------------------------------------------------------------------------


def _signing_key_json(record: SigningKeyRecord) -> dict[str, Any]:
    """A signing key's public facts (never its sealed private key)."""
    return {
        "kid": record.kid,
        "alg": record.alg,
        "state": str(record.state),
        "created_at": _iso(record.created_at),
        "activated_at": _iso(record.activated_at),
        "retired_at": _iso(record.retired_at),
        "publish_until": _iso(record.publish_until),
    }


@signing_keys_app.command("list")
def signing_keys_list(as_json: JsonOption = False) -> None:
    """List the stored signing keys, oldest first: pending, active and retired."""

    async def records(state: KeyturnState) -> list[SigningKeyRecord]:
        return await state.storage.signing_keys.list()

    found = _run(records)
    if as_json:
        _emit({"signing_keys": [_signing_key_json(r) for r in found]}, as_json=True)
        return
    headers = ("kid", "alg", "state", "created", "activated", "retired", "publish until")
    rows = [
        (
            r.kid,
            r.alg,
            str(r.state),
            _short(r.created_at),
            _short(r.activated_at),
            _short(r.retired_at),
            _short(r.publish_until),
        )
        for r in found
    ]
    _table(headers, rows)


@signing_keys_app.command("rotate")
def signing_keys_rotate(
    immediately: Annotated[
        bool,
        typer.Option(
            "--immediately",
            help="Sign with the new key now instead of after KEYTURN_SIGNING_KEY_PUBLISH_DELAY "
            "(an emergency: verifiers meet a kid they have not fetched yet).",
        ),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Generate a new signing key: published now, signing once verifiers can know it."""

    async def rotate(state: KeyturnState) -> tuple[SigningKeyRecord, timedelta]:
        kid = await state.service.rotate_signing_key(immediately=immediately, actor=_actor())
        records = await state.storage.signing_keys.list()
        record = next(r for r in records if r.kid == kid)
        return record, state.settings.signing_key_publish_delay

    record, delay = _run(rotate, create=True)
    activates_at = None if record.activated_at else record.created_at + delay
    data = {**_signing_key_json(record), "activates_at": _iso(activates_at)}
    if as_json:
        _emit(data, as_json=True)
        return
    _emit({name: "-" if value is None else value for name, value in data.items()}, False)
    if activates_at is not None:
        typer.echo(
            f"{record.kid} is published now; a running server makes it the signing key "
            f"from {_short(activates_at)}.",
            err=True,
        )


# -- server and configuration ------------------------------------------------------------


@app.command("serve")
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Public listener address (env KEYTURN_PUBLIC_HOST, default 0.0.0.0)."),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(help="Public listener port (env KEYTURN_PUBLIC_PORT or PORT, default 8080)."),
    ] = None,
    admin_host: Annotated[
        str | None, typer.Option(help="Admin listener address (default 127.0.0.1).")
    ] = None,
    admin_port: Annotated[
        int | None, typer.Option(help="Admin listener port (default 8081).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Server processes (default 1).")] = None,
) -> None:
    """Run the server: public API on :8080, admin API on 127.0.0.1:8081.

    Every setting is a KEYTURN_* variable (docs/configuration.md); `keyturn config show`
    prints what is in effect and where each value came from.
    """
    from keyturn.server.runner import ServeError  # noqa: PLC0415
    from keyturn.server.runner import serve as run  # noqa: PLC0415

    settings = _settings(
        public_host=host,
        public_port=port,
        admin_host=admin_host,
        admin_port=admin_port,
        workers=workers,
    )
    # Nothing is created before the server starts (it may refuse to: a port, the admin
    # listener); a data directory it could not create or write is reported now.
    _check_url(settings.resolved_database_url, create=False)
    if _uses_data_dir(settings):
        _check_directory(settings)
    try:
        run(settings)
    except ServeError as exc:  # already says what to do: a port, the admin listener, a worker
        _fail(exc.message)
    except Exception as exc:
        _fail_with(exc, settings.resolved_database_url, starting=True)


@config_app.command("show")
def config_show(as_json: JsonOption = False) -> None:
    """Print every setting as Keyturn resolves it, where it came from, secrets masked.

    Sources: ``default``, a variable (``KEYTURN_PUBLIC_PORT``, or JWThenticator's
    ``PORT``), ``file: PATH`` for a secret read from a ``*_file`` setting, ``generated:
    PATH`` for one Keyturn generated in the data directory.
    """
    settings = _settings()
    values = settings.masked()
    sources = {name: settings.source(name) for name in values}
    # What is used when unset: the embedded database, migrations on start for it.
    values["database_url"] = _shown_url(settings.resolved_database_url)
    if settings.database_url is None:
        sources["database_url"] = "default: keyturn.db in data_dir"
    values["migrate_on_start"] = settings.should_migrate_on_start
    for name, configured, path_name in (
        ("kek", settings.kek, "kek_file"),
        ("pepper", settings.pepper, "pepper_file"),
    ):
        path = getattr(settings, path_name)
        if configured is not None:
            continue
        if path is not None:
            values[name], sources[name] = "**********", f"file: {path}"
            continue
        generated = settings.data_dir / name
        if generated.exists():
            values[name], sources[name] = "**********", f"generated: {generated}"
        else:
            sources[name] = f"generated on first start: {generated}"
    if as_json:
        _emit({**values, "sources": sources}, as_json=True)
        return
    width = max(len(name) for name in values)
    for name, value in values.items():
        typer.echo(f"{name:<{width}}  {_plain(value):<30}  ({sources[name]})")


def _plain(value: Any) -> str:
    return "-" if value is None else json.dumps(value) if isinstance(value, bool) else str(value)


app.command("healthcheck")(healthcheck)  # keyturn/healthcheck.py: the image's HEALTHCHECK


def main() -> None:
    """Entry point of the ``keyturn`` console script."""
    app()


if __name__ == "__main__":  # python -m keyturn.cli
    main()
