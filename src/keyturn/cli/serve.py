"""``keyturn serve``: run the server with the effective settings."""

from __future__ import annotations

from typing import Annotated

import typer

from keyturn.cli._output import _fail
from keyturn.cli._runtime import _check_directory, _check_url, _fail_with, _settings, _uses_data_dir

__all__ = ["serve"]


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
