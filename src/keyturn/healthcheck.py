"""``keyturn healthcheck``: is the Keyturn server on this machine answering?

The container image's ``HEALTHCHECK`` runs it. It resolves the settings exactly as
``keyturn serve`` does (``KEYTURN_*``, and JWThenticator's ``PORT`` and ``URL_PREFIX``),
so the probe follows whatever port and prefix the server really uses, and asks the
public listener for ``GET <url_prefix>/healthz`` (``--ready``: ``/readyz``, which also
checks the database). Proxies from the environment are ignored: the probe is local.

Exit status 0 when the answer is 200 and 1 otherwise (Docker reads 0 as healthy and 1
as unhealthy; 2 is reserved there, so an invalid setting exits 1 too). One line on
standard output when healthy, one ``error: ...`` line on standard error when not.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from keyturn.config import Settings

__all__ = ["healthcheck", "probe_url"]

#: The healthy and unhealthy exit statuses of a Docker ``HEALTHCHECK`` command.
HEALTHY, UNHEALTHY = 0, 1
_ANY_ADDRESS = {"", "0.0.0.0", "::", "[::]"}  # noqa: S104 -- compared, never bound


def probe_url(settings: Settings, *, ready: bool = False) -> str:
    """The URL on this machine that answers for the public listener's health."""
    host = settings.public_host.strip()
    if host in _ANY_ADDRESS:
        host = "[::1]" if ":" in host else "127.0.0.1"
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal
    route = "readyz" if ready else "healthz"
    return f"http://{host}:{settings.public_port}{settings.url_prefix}/{route}"


def _ask(url: str, timeout: float) -> str | None:
    """None when ``url`` answers 200, else why not (one line)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status: int = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        exc.close()
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
        return f"no answer ({reason}); is `keyturn serve` running with these settings?"
    except (TimeoutError, OSError) as exc:
        return f"no answer within {timeout:g} s ({type(exc).__name__})"
    if status != 200:
        return f"answered {status}, not 200"
    return None


def healthcheck(
    ready: Annotated[
        bool,
        typer.Option(
            "--ready",
            help="Ask /readyz (the database answers too) instead of /healthz (the "
            "process answers).",
        ),
    ] = False,
    timeout: Annotated[
        float, typer.Option(min=0.1, max=60, help="Seconds to wait for the answer.")
    ] = 4.0,
) -> None:
    """Ask this machine's server GET /healthz, where its settings put it; exit 0 or 1.

    Follows KEYTURN_PUBLIC_PORT / PORT and KEYTURN_URL_PREFIX / URL_PREFIX, as `keyturn
    serve` does. The container image's HEALTHCHECK.
    """
    from keyturn.cli._runtime import _settings  # noqa: PLC0415 -- one wording of settings errors

    try:
        settings = _settings()
    except typer.Exit as exc:  # the error line is printed; exit 2 is reserved by Docker
        raise typer.Exit(UNHEALTHY) from exc
    url = probe_url(settings, ready=ready)
    problem = _ask(url, timeout)
    if problem is not None:
        typer.echo(f"error: {url}: {problem}", err=True)
        raise typer.Exit(UNHEALTHY)
    typer.echo(f"ok: {url} answered 200")
