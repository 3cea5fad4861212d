"""``keyturn secrets``: make the server's own KEK and pepper (offline)."""

from __future__ import annotations

import base64
import secrets

import typer

from keyturn.cli._output import JsonOption, _emit

__all__ = ["secrets_app"]

secrets_app = typer.Typer(
    help="Make the server's own secrets (KEYTURN_KEK, KEYTURN_PEPPER).", no_args_is_help=True
)


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
