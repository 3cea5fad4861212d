"""The environment around the settings: JWThenticator's names and other tools' variables.

JWThenticator's variable names keep working when set (``PORT``, ``URL_PREFIX``,
``DISABLE_EXTERNAL_API``, ``DISABLE_INTERNAL_API``, ``JWT_LEASE_TIME``, ``JWT_AUDIENCE``,
``KEY_EXPIRY``, ``REFRESH_TOKEN_EXPIRY``, ``RSA_PRIVATE_KEY``, ``RSA_PRIVATE_KEY_PATH``,
``DB_USER``, ``DB_PASS``, ``DB_HOST``, ``DB_NAME``, ``DB_PORT``): each maps onto its ``KEYTURN_*``
setting (`legacy_overrides`), and the ``KEYTURN_*`` name wins when both are set.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

__all__ = [
    "CLIENT_VARIABLES",
    "LEGACY_DATABASE",
    "LEGACY_ENVIRONMENT",
    "LEGACY_VARIABLES",
    "NOT_SETTINGS",
    "default_sqlite_url",
    "legacy_overrides",
]

#: The zero-setup database's file name in the data directory.
_SQLITE_FILENAME: Final = "keyturn.db"


def default_sqlite_url(data_dir: Path) -> str:
    """The URL of the zero-setup database: ``keyturn.db`` in ``data_dir``."""
    return f"sqlite+aiosqlite:///{data_dir.absolute() / _SQLITE_FILENAME}"


#: JWThenticator's environment variables and the Keyturn setting each one feeds.
LEGACY_ENVIRONMENT: Mapping[str, str] = {
    "PORT": "public_port",
    "URL_PREFIX": "url_prefix",
    "DISABLE_EXTERNAL_API": "disable_public_api",
    "DISABLE_INTERNAL_API": "disable_admin_api",
    "JWT_LEASE_TIME": "access_token_lifetime",
    "JWT_AUDIENCE": "audience",
    "KEY_EXPIRY": "legacy_key_lifetime",
    "REFRESH_TOKEN_EXPIRY": "legacy_refresh_token_lifetime",
    "RSA_PRIVATE_KEY": "signing_key_pem",
    "RSA_PRIVATE_KEY_PATH": "signing_key_file",
}
#: JWThenticator's database variables: together they make ``database_url``.
LEGACY_DATABASE = ("DB_USER", "DB_PASS", "DB_HOST", "DB_NAME", "DB_PORT")
#: Every JWThenticator variable Keyturn reads.
LEGACY_VARIABLES: frozenset[str] = frozenset(LEGACY_ENVIRONMENT) | frozenset(LEGACY_DATABASE)
#: KEYTURN_* variables read by other tools, not settings: the test suite and CI, and the
#: client side (the examples, scripts using `keyturn.client`), so a client and a server
#: can share one shell.
CLIENT_VARIABLES: frozenset[str] = frozenset(
    {"KEYTURN_URL", "KEYTURN_API_KEY", "KEYTURN_JWKS_URL", "KEYTURN_REFRESH_TOKEN_FILE"}
)
#: KEYTURN_* variables that are known not to be settings: never an error, never a warning.
NOT_SETTINGS: frozenset[str] = (
    frozenset({"KEYTURN_REQUIRE_POSTGRESQL", "KEYTURN_TEST_POSTGRES_URL"}) | CLIENT_VARIABLES
)


def legacy_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Translate the JWThenticator variables present in ``environ`` into setting values.

    ``JWT_AUDIENCE`` is a comma-separated list there; Keyturn issues and checks one
    audience, the first. The ``DB_*`` variables build a PostgreSQL URL.
    """
    values: dict[str, Any] = {}
    for variable, setting in LEGACY_ENVIRONMENT.items():
        if variable in environ:
            values[setting] = environ[variable]
    if "audience" in values:
        values["audience"] = values["audience"].split(",")[0].strip()
    if any(name in environ for name in LEGACY_DATABASE):
        user = quote(environ.get("DB_USER", "postgres"), safe="")
        password = environ.get("DB_PASS", "")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        host = environ.get("DB_HOST", "localhost")
        if environ.get("DB_PORT"):
            host = f"{host}:{environ['DB_PORT']}"
        name = quote(environ.get("DB_NAME", "jwthenticator"), safe="")
        values["database_url"] = f"postgresql://{auth}@{host}/{name}"
    return values
