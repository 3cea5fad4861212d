"""``keyturn import jwthenticator``: the command line of `keyturn.importers.jwthenticator`.

Registered by `keyturn.cli` as the ``import`` group; everything heavy is imported inside
the command, so ``keyturn --help`` stays fast. Errors are one ``error: ...`` line: exit 1
when the import cannot go ahead (nothing is written then), 2 for invalid settings.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from keyturn.config import Settings
    from keyturn.core.signing import SigningKey
    from keyturn.importers.jwthenticator import ImportPlan, SourceData
    from keyturn.storage.sql import SQLStorage

__all__ = ["import_app"]

import_app = typer.Typer(
    help="Import keys, refresh tokens and the signing key of another key server.",
    no_args_is_help=True,
)


@import_app.command("jwthenticator")
def import_jwthenticator(
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="JWThenticator's database URL (postgresql://...); default: its DB_USER, "
            "DB_PASS, DB_HOST, DB_NAME and DB_PORT variables. Only read, never written.",
        ),
    ] = None,
    check_jwt: Annotated[
        str | None,
        typer.Option(
            "--check-jwt",
            help="A JWT JWThenticator issued (expired or not): refuse a signing key "
            "(RSA_PRIVATE_KEY[_PATH]) that did not sign it.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would be imported; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    progress: Annotated[
        bool | None,
        typer.Option(
            "--progress/--no-progress", help="Show a progress bar (default: on a terminal)."
        ),
    ] = None,
) -> None:
    """Import a JWThenticator 1.6.3 database: keys, unexpired refresh tokens, signing key.

    Idempotent: run it again to copy what changed since (a delta sync for the cut-over).
    """
    from keyturn.cli._output import _fail  # noqa: PLC0415 -- fast --help
    from keyturn.cli._runtime import _settings, _shown_url  # noqa: PLC0415
    from keyturn.config import legacy_overrides  # noqa: PLC0415

    settings = _settings()
    url = source or legacy_overrides(os.environ).get("database_url")
    if not url:
        _fail("give --from URL or JWThenticator's DB_* variables (DB_HOST, DB_NAME, ...)", 2)
    show_bar = (sys.stderr.isatty() and not as_json) if progress is None else progress
    result = _run_or_fail(settings, url, check_jwt=check_jwt, dry_run=dry_run, show_bar=show_bar)
    result["source"] = _shown_url(url)
    _print(result, as_json)


def _run_or_fail(
    settings: Settings, url: str, *, check_jwt: str | None, dry_run: bool, show_bar: bool
) -> dict[str, Any]:
    """`_run`'s result, or exit with one error line: 1 when refused, 2 for bad settings."""
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415 -- keeps --help fast

    from keyturn.cli._output import _fail  # noqa: PLC0415 -- fast --help
    from keyturn.cli._runtime import _shown_url  # noqa: PLC0415
    from keyturn.errors import KeyturnError, StorageUnavailableError  # noqa: PLC0415
    from keyturn.importers.jwthenticator import ImportRefusedError  # noqa: PLC0415
    from keyturn.runtime.secrets import ServerSecretsError  # noqa: PLC0415

    try:
        return asyncio.run(
            _run(settings, url, check_jwt=check_jwt, dry_run=dry_run, show_bar=show_bar)
        )
    except ImportRefusedError as exc:
        _fail(exc.message)
    except ServerSecretsError as exc:
        _fail(f"invalid settings: {exc.message}", 2)
    except StorageUnavailableError as exc:
        where = _shown_url(url) if "JWThenticator" in exc.message else "Keyturn's database"
        _fail(f"{exc.message} ({where})")
    except KeyturnError as exc:
        _fail(exc.message)
    except (ValueError, ImportError, ArgumentError) as exc:  # a bad URL, a missing driver
        _fail(f"invalid settings: {exc}", 2)


async def _run(
    settings: Settings, url: str, *, check_jwt: str | None, dry_run: bool, show_bar: bool
) -> dict[str, Any]:
    from keyturn.importers.jwthenticator import (  # noqa: PLC0415
        legacy_window,
        plan_import,
        read_existing,
        read_source,
    )
    from keyturn.storage.sql import SQLStorage  # noqa: PLC0415

    # Everything is read and checked before Keyturn's database is touched.
    data = await read_source(url)
    signing = _signing_key(settings, check_jwt)
    fresh = await _check_revision(settings, dry_run=dry_run)
    now = datetime.now(UTC)
    window = legacy_window(settings.access_token_lifetime, settings.leeway)
    if fresh:  # a dry run before `keyturn db upgrade`: everything is new; create nothing
        plan = plan_import(data, existing_keys={}, existing_tokens=set(), now=now)
        return _describe(plan, signing, now + window, dry_run=True)
    storage = await SQLStorage.open(
        settings.resolved_database_url,
        schema=settings.database_schema,
        pool_size=2,
        max_overflow=0,
    )
    try:
        existing_keys, existing_tokens = await read_existing(storage.engine, data)
        plan = plan_import(
            data, existing_keys=existing_keys, existing_tokens=existing_tokens, now=now
        )
        result = _describe(plan, signing, now + window, dry_run=dry_run)
        if not dry_run:
            await _apply(
                storage, settings, data, plan, signing, now=now, until=now + window, bar=show_bar
            )
        return result
    finally:
        await storage.close()


async def _check_revision(settings: Settings, *, dry_run: bool) -> bool:
    """Migrate Keyturn's database if configured to; True for a dry run before any schema.

    Raises:
        ImportRefusedError: the database is not at the head revision.
    """
    from keyturn.importers.jwthenticator import ImportRefusedError  # noqa: PLC0415
    from keyturn.storage.migrate import current_revision, head_revision, upgrade  # noqa: PLC0415

    target = settings.resolved_database_url
    schema = settings.database_schema
    if not dry_run and settings.should_migrate_on_start:
        await upgrade(target, schema=schema)
    revision = await current_revision(target, schema=schema)
    fresh = revision is None and dry_run
    if revision != head_revision() and not fresh:
        raise ImportRefusedError(
            f"Keyturn's database is at schema revision {revision or 'none'}, not "
            f"{head_revision()}: run `keyturn db upgrade` first"
        )
    return fresh


async def _apply(
    storage: SQLStorage,
    settings: Settings,
    data: SourceData,
    plan: ImportPlan,
    signing: tuple[SigningKey, str] | None,
    *,
    now: datetime,
    until: datetime,
    bar: bool,
) -> None:
    """Write ``plan`` and the signing key (publishing its JWThenticator kid until ``until``)."""
    from keyturn.importers.jwthenticator import apply_plan, publish_legacy_kid  # noqa: PLC0415
    from keyturn.runtime.secrets import load_server_secrets  # noqa: PLC0415
    from keyturn.service import KeyturnService  # noqa: PLC0415

    secrets = load_server_secrets(
        settings.data_dir,
        kek=_secret(settings.kek),
        kek_file=settings.kek_file,
        pepper=_secret(settings.pepper),
        pepper_file=settings.pepper_file,
    )
    service = KeyturnService(
        storage,
        pepper=secrets.pepper,
        key_wrapper=secrets.key_wrapper,
        config=settings.service_config(),
    )
    await service.check_pepper()  # the hashes written must be the server's
    total = len(plan.new_keys) + len(plan.renewed_keys) + len(plan.new_tokens)
    with _bar(bar, total) as advance:
        await apply_plan(
            storage.engine,
            plan,
            identifiers={key.id: key.identifier for key in data.keys},
            pepper=secrets.pepper,
            now=now,
            actor=_actor(),
            progress=advance,
        )
    if signing is not None:
        key, legacy_kid = signing
        await service.import_signing_key(key, actor=_actor())
        await publish_legacy_kid(
            storage.engine,
            key,
            legacy_kid,
            key_wrapper=secrets.key_wrapper,
            now=now,
            until=until,
        )


def _describe(
    plan: ImportPlan, signing: tuple[SigningKey, str] | None, until: datetime, *, dry_run: bool
) -> dict[str, Any]:
    result: dict[str, Any] = {"dry_run": dry_run, **plan.summary(), "signing_key": None}
    if signing is not None:
        key, legacy_kid = signing
        result["signing_key"] = {
            "kid": key.kid,
            "alg": key.alg,
            "jwthenticator_kid": legacy_kid,
            "published_until": until.isoformat(),
        }
    return result


def _signing_key(settings: Settings, check_jwt: str | None) -> tuple[SigningKey, str] | None:
    """JWThenticator's RSA key from RSA_PRIVATE_KEY[_PATH], checked; None if not given."""
    from keyturn.importers.jwthenticator import (  # noqa: PLC0415
        ImportRefusedError,
        check_signing_key,
    )

    pem: bytes | str | None = None
    if settings.signing_key_pem is not None:
        pem = settings.signing_key_pem.get_secret_value()
    elif settings.signing_key_file is not None:
        pem = _read(settings.signing_key_file, "signing key file")
    if pem is None:
        if check_jwt is not None:
            raise ImportRefusedError("--check-jwt needs the signing key (RSA_PRIVATE_KEY_PATH)")
        typer.echo(
            "warning: no RSA_PRIVATE_KEY[_PATH]: JWTs JWThenticator issued will not validate "
            "after the move (its clients refresh or re-authenticate)",
            err=True,
        )
        return None
    public: bytes | str | None = os.environ.get("RSA_PUBLIC_KEY") or None
    if public is None and os.environ.get("RSA_PUBLIC_KEY_PATH"):
        public = _read(Path(os.environ["RSA_PUBLIC_KEY_PATH"]), "RSA_PUBLIC_KEY_PATH file")
    return check_signing_key(pem, check_jwt=check_jwt, public_pem=public)


def _read(path: Path, what: str) -> bytes:
    from keyturn.importers.jwthenticator import ImportRefusedError  # noqa: PLC0415

    try:
        return path.read_bytes()
    except OSError as exc:
        raise ImportRefusedError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _secret(value: object) -> str | None:
    get = getattr(value, "get_secret_value", None)
    return get() if callable(get) else None


def _actor() -> str:
    from keyturn.cli._runtime import _actor as cli_actor  # noqa: PLC0415

    return cli_actor()


@contextmanager
def _bar(show: bool, total: int) -> Iterator[Callable[[int], None]]:
    if not show or total == 0:
        yield lambda done: None
        return
    with typer.progressbar(length=total, label="importing", file=sys.stderr) as bar:
        yield bar.update


def _print(result: dict[str, Any], as_json: bool) -> None:
    import json  # noqa: PLC0415

    if as_json:
        typer.echo(json.dumps(result, indent=2, sort_keys=True))
        return
    typer.echo(f"source          {result['source']}")
    typer.echo(f"keys            {_counts(result['keys'])}")
    typer.echo(f"refresh tokens  {_counts(result['refresh_tokens'])}")
    signing = result["signing_key"]
    if signing is None:
        typer.echo("signing key     none given")
    else:
        typer.echo(
            f"signing key     {signing['alg']} kid {signing['kid']}; JWThenticator's kid "
            f"{signing['jwthenticator_kid']} published until {signing['published_until']}"
        )
    if result["dry_run"]:
        typer.echo("dry run: nothing was written")


def _counts(counts: dict[str, Any]) -> str:
    parts = [f"{counts['new']} new"]
    if "renewed" in counts:
        parts.append(f"{counts['renewed']} renewed")
    parts.append(f"{counts['unchanged']} unchanged")
    skipped = counts["skipped"]
    if skipped:
        parts.append("skipped: " + ", ".join(f"{n} ({why})" for why, n in sorted(skipped.items())))
    return ", ".join(parts)
