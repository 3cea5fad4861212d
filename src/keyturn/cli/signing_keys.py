"""``keyturn signing-keys``: generate, list and rotate signing keys."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keyturn.cli._output import JsonOption, _emit, _iso, _short, _table
from keyturn.cli._runtime import _actor, _run
from keyturn.core.signing import DEFAULT_ALGORITHM, SUPPORTED_ALGORITHMS, SigningKey
from keyturn.errors import KeyturnError

if TYPE_CHECKING:
    from keyturn.core.records import SigningKeyRecord
    from keyturn.runtime import Runtime

__all__ = ["signing_keys_app"]

signing_keys_app = typer.Typer(help="Generate, list and rotate signing keys.", no_args_is_help=True)


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

    async def records(state: Runtime) -> list[SigningKeyRecord]:
        return await state.service.list_signing_keys()

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

    async def rotate(state: Runtime) -> tuple[SigningKeyRecord, timedelta]:
        kid = await state.service.rotate_signing_key(immediately=immediately, actor=_actor())
        records = await state.service.list_signing_keys()
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
