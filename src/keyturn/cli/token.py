"""``keyturn token``: look at an access token (offline)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Annotated

import typer

from keyturn.cli._output import JsonOption, _emit
from keyturn.core.tokens import peek_unverified_claims
from keyturn.errors import KeyturnError

__all__ = ["token_app"]

token_app = typer.Typer(help="Look at access tokens.", no_args_is_help=True)


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
