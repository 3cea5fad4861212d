"""``keyturn config``: show the effective configuration and where each value came from."""

from __future__ import annotations

import json
from typing import Any

import typer

from keyturn.cli._output import JsonOption, _emit
from keyturn.cli._runtime import _settings, _shown_url

__all__ = ["config_app"]

config_app = typer.Typer(help="Show the effective configuration.", no_args_is_help=True)


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
