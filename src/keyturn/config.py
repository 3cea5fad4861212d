"""Keyturn's settings: one typed class, read from ``KEYTURN_*`` environment variables.

JWThenticator's variable names keep working when set (``PORT``, ``URL_PREFIX``,
``DISABLE_EXTERNAL_API``, ``DISABLE_INTERNAL_API``, ``JWT_LEASE_TIME``, ``JWT_AUDIENCE``,
``KEY_EXPIRY``, ``REFRESH_TOKEN_EXPIRY``, ``RSA_PRIVATE_KEY``, ``RSA_PRIVATE_KEY_PATH``,
``DB_USER``, ``DB_PASS``, ``DB_HOST``, ``DB_NAME``, ``DB_PORT``): each maps onto its ``KEYTURN_*``
setting, and the ``KEYTURN_*`` name wins when both are set. Keyturn's own defaults are
the safer ones (a 15-minute access token, not JWThenticator's 25 hours).

Built once at the edge (the CLI or ``create_app``) and passed inward; nothing reads the
environment at import time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import quote

from pydantic import (
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from keyturn.core.signing import SUPPORTED_ALGORITHMS
from keyturn.core.throttle import LoginLimits
from keyturn.service.config import MAX_ACCESS_TOKEN_LIFETIME, ServiceConfig
from keyturn.storage.schema import DEFAULT_SCHEMA, check_schema_name

__all__ = [
    "CLIENT_VARIABLES",
    "LEGACY_ENVIRONMENT",
    "LEGACY_VARIABLES",
    "NOT_SETTINGS",
    "Settings",
    "SettingsError",
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
_LEGACY_DATABASE = ("DB_USER", "DB_PASS", "DB_HOST", "DB_NAME", "DB_PORT")
#: Every JWThenticator variable Keyturn reads.
LEGACY_VARIABLES: frozenset[str] = frozenset(LEGACY_ENVIRONMENT) | frozenset(_LEGACY_DATABASE)
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
_DURATIONS = (
    "access_token_lifetime",
    "refresh_token_lifetime",
    "legacy_refresh_token_lifetime",
    "legacy_key_lifetime",
    "key_rotation_grace",
    "refresh_reuse_grace",
    "signing_key_publish_delay",
)


#: Units a duration may carry in the environment: ``900`` and ``900s`` are the same.
_DURATION_UNITS: Mapping[str, int] = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"\s*(-?\d+)\s*([smhd]?)\s*", re.IGNORECASE)
#: A misspelling is at most this many edits away from a setting's name.
_MAX_EDITS = 2
# pydantic's error types, reworded for people (the rest keep pydantic's message).
_REWORDED: Mapping[str, str] = {
    "int_parsing": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_parsing": "must be a number",
    "bool_parsing": "must be true or false (also 1/0, yes/no, on/off)",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "greater_than": "must be more than {gt}",
    "less_than": "must be less than {lt}",
    "string_too_short": "may not be empty",
    "literal_error": "must be one of {expected}",
    "path_type": "must be a path",
}


class SettingsError(ValueError):
    """The environment (or the options) do not make valid settings.

    ``problems`` has one entry per variable at fault, naming the variable (never its
    value); ``message`` joins them into the one line the CLI prints.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self.message = "; ".join(problems)
        super().__init__(self.message)


def _edits(a: str, b: str) -> int:
    """Edit distance (insert, delete, substitute, swap two neighbours) between a and b."""
    previous_row: list[int] | None = None
    row = list(range(len(b) + 1))
    for i, char in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, other in enumerate(b, 1):
            current[j] = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (char != other))
            if (
                previous_row is not None
                and i > 1
                and j > 1
                and char == b[j - 2]
                and a[i - 2] == other
            ):
                current[j] = min(current[j], previous_row[j - 2] + 1)
        previous_row, row = row, current
    return row[-1]


def closest_setting(name: str) -> str | None:
    """The setting an unknown ``KEYTURN_<NAME>`` most likely meant, or None.

    A setting is close when its name is at most two edits away (``audiences`` for
    ``audience``), or when it ends with the whole name (``port`` for ``public_port``;
    the first such setting, in declaration order). ``name`` is lower case, no prefix.
    """
    fields = list(Settings.model_fields)
    near = [(_edits(name, field), index, field) for index, field in enumerate(fields)]
    best = min(near)
    if best[0] <= _MAX_EDITS and best[0] < len(name):
        return best[2]
    return next((field for field in fields if field.endswith(f"_{name}")), None)


def unknown_variables(environ: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The ``KEYTURN_*`` variables in ``environ`` that are not settings, split in two.

    The rule: a name close to a setting (`closest_setting`) is a misspelling and refused
    (returned with the variable it meant); any other is someone else's variable -- a
    client's, a tool's -- and only reported. `NOT_SETTINGS` are neither.
    """
    refused: dict[str, str] = {}
    ignored: list[str] = []
    for variable in sorted(environ):
        if not variable.startswith("KEYTURN_") or variable in NOT_SETTINGS:
            continue
        name = variable.removeprefix("KEYTURN_").lower()
        if name in Settings.model_fields:
            continue
        meant = closest_setting(name)
        if meant is None:
            ignored.append(variable)
        else:
            refused[variable] = f"KEYTURN_{meant.upper()}"
    return refused, ignored


def _problem(error: Any, variables: Mapping[str, str]) -> str:
    """One pydantic error as ``VARIABLE: what is wrong`` (no pydantic wording or URL)."""
    location = error.get("loc") or ()
    field = str(location[0]) if location else ""
    kind = error.get("type", "")
    context = error.get("ctx") or {}
    if kind == "value_error":
        reason = str(context.get("error", error.get("msg", "")))
    elif kind in _REWORDED:
        reason = _REWORDED[kind].format(**context)
    else:
        reason = str(error.get("msg", "is invalid")).replace("Input should", "must")
    if not field:  # a model-level rule; its message starts with the field it is about
        head, _, rest = reason.partition(": ")
        if head in Settings.model_fields and rest:
            return f"invalid setting {variables.get(head, f'KEYTURN_{head.upper()}')}: {rest}"
        return f"invalid setting: {reason}"
    return f"invalid setting {variables.get(field, f'KEYTURN_{field.upper()}')}: {reason}"


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
    if any(name in environ for name in _LEGACY_DATABASE):
        user = quote(environ.get("DB_USER", "postgres"), safe="")
        password = environ.get("DB_PASS", "")
        auth = f"{user}:{quote(password, safe='')}" if password else user
        host = environ.get("DB_HOST", "localhost")
        if environ.get("DB_PORT"):
            host = f"{host}:{environ['DB_PORT']}"
        name = quote(environ.get("DB_NAME", "jwthenticator"), safe="")
        values["database_url"] = f"postgresql://{auth}@{host}/{name}"
    return values


class Settings(BaseSettings):
    """Every knob Keyturn has; each field is ``KEYTURN_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(
        env_prefix="KEYTURN_", extra="forbid", validate_default=True, hide_input_in_errors=True
    )

    # -- where state lives ---------------------------------------------------------------
    data_dir: Path = Field(
        Path(".keyturn"),
        description="Directory for the default SQLite database and generated secrets.",
    )
    database_url: SecretStr | None = Field(
        None,
        description="SQLAlchemy URL (postgresql://... or sqlite:///...); default: SQLite "
        "file keyturn.db in data_dir.",
    )
    database_schema: str = Field(
        DEFAULT_SCHEMA,
        description="PostgreSQL schema holding Keyturn's tables (created by `keyturn db "
        "upgrade`), so Keyturn can share a database with other applications; a database "
        "made before this setting keeps its tables in public.",
    )
    migrate_on_start: bool | None = Field(
        None,
        description="Apply migrations at start-up; default: yes for the embedded SQLite "
        "database, no for a configured URL (run `keyturn db upgrade`).",
    )
    database_pool_size: int = Field(
        32,
        ge=1,
        le=200,
        description="Database connections per server process (kept open; no overflow). "
        "workers x pool size must stay below PostgreSQL's max_connections.",
    )
    database_timeout: float = Field(
        5.0,
        gt=0,
        le=300,
        description="Seconds one database statement or commit, or opening a connection, "
        "may take; then the request answers 503 + Retry-After and a connection that timed "
        "out is discarded.",
    )
    database_pool_timeout: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Seconds a request waits for a free database connection (SQLite: for "
        "this process's writers) before answering 503 + Retry-After instead of queueing.",
    )
    poll_interval: float = Field(
        2.0,
        ge=0.05,
        le=60,
        description="Seconds between re-reads of revocations and signing keys: how long a "
        "revocation made on another instance may take to be honoured here.",
    )

    # -- secrets ---------------------------------------------------------------------------
    kek: SecretStr | None = Field(
        None, description="Key-encryption key(s), base64url, comma-separated; first seals."
    )
    kek_file: Path | None = Field(None, description="File holding the KEK(s), one per line.")
    pepper: SecretStr | None = Field(None, description="Pepper for key hashes, base64url.")
    pepper_file: Path | None = Field(None, description="File holding the pepper.")
    signing_key_pem: SecretStr | None = Field(
        None, description="Import this PEM private key as the active signing key (migration)."
    )
    signing_key_file: Path | None = Field(None, description="Import the PEM key in this file.")

    # -- tokens ----------------------------------------------------------------------------
    issuer: str = Field("http://localhost:8080", min_length=1, description="Token `iss`.")
    audience: str = Field("keyturn", min_length=1, description="Token `aud`.")
    signing_algorithm: Literal["ES256", "RS256", "EdDSA"] = Field(
        "ES256", description=f"Algorithm of generated signing keys: {SUPPORTED_ALGORITHMS}."
    )
    access_token_lifetime: timedelta = Field(timedelta(minutes=15), description="Seconds.")
    refresh_token_lifetime: timedelta = Field(timedelta(days=30), description="Seconds.")
    legacy_refresh_token_lifetime: timedelta = Field(timedelta(days=60), description="Seconds.")
    legacy_key_lifetime: timedelta = Field(timedelta(days=120), description="Seconds.")
    key_rotation_grace: timedelta = Field(timedelta(hours=24), description="Seconds.")
    refresh_reuse_grace: timedelta = Field(timedelta(seconds=10), description="Seconds.")
    client_credentials_refresh_tokens: bool = Field(
        False, description="Issue rotating refresh tokens to client_credentials on /v1/token."
    )
    signing_key_publish_delay: timedelta = Field(timedelta(minutes=10), description="Seconds.")
    leeway: int = Field(30, ge=0, le=300, description="Clock skew tolerated, seconds.")
    policy_file: Path | None = Field(None, description="TOML claims policy (docs/policy.md).")

    # -- listeners -------------------------------------------------------------------------
    public_host: str = Field("0.0.0.0", description="Public listener address.")  # noqa: S104
    public_port: int = Field(8080, ge=0, le=65535)
    admin_host: str = Field("127.0.0.1", description="Admin listener address.")
    admin_port: int = Field(8081, ge=0, le=65535)
    admin_token: SecretStr | None = Field(
        None, description="Bearer token the admin listener requires off loopback."
    )
    legacy_admin_on_public: bool = Field(
        False, description="Also serve /register_key and /is_key_registered publicly."
    )
    url_prefix: str = Field("", description="Prefix for every route, e.g. /auth.")
    disable_public_api: bool = False
    disable_admin_api: bool = False
    redis_url: SecretStr | None = Field(None, description="Redis for shared rate limits.")
    replay_store: Literal["database", "redis"] = Field(
        "database",
        description="Where used client-assertion jtis are kept: database or redis (REDIS_URL).",
    )
    rate_limit_enabled: bool = Field(True, description="Rate-limit the token endpoints.")
    rate_limit_per_address: int = Field(
        1200, ge=1, description="Token requests per minute from one client address."
    )
    rate_limit_per_key: int = Field(
        300, ge=1, description="Token requests per minute for one API key."
    )
    login_rate_limit_window: int = Field(
        300, ge=1, le=86400, description="Seconds in one login-throttling window."
    )
    login_rate_limit_per_address: int = Field(
        30, ge=1, description="Login attempts per window from one client address."
    )
    login_rate_limit_per_account_address: int = Field(
        10, ge=1, description="Login attempts per window for one email from one address."
    )
    login_rate_limit_per_account: int = Field(
        50, ge=1, description="Login attempts per window for one email from all addresses."
    )
    password_hash_concurrency: int | None = Field(
        None,
        ge=1,
        le=64,
        description="argon2 hashes computed at once, in worker threads; default: half "
        "the CPUs, at least 1.",
    )
    forwarded_allow_ips: str = Field(
        "127.0.0.1",
        description="Proxies whose X-Forwarded-For the public listener trusts "
        "(comma-separated; the admin listener never trusts it).",
    )
    workers: int = Field(1, ge=1, le=64, description="Server processes.")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["auto", "json", "console"] = Field(
        "auto",
        description="Log lines as JSON objects or console text; auto: console on a "
        "terminal, json otherwise.",
    )
    shutdown_timeout: int = Field(
        30,
        ge=1,
        le=3600,
        description="Seconds in-flight requests get to finish after SIGTERM before they "
        "are cancelled.",
    )
    # Listener bounds (keyturn.server.listeners; docs/operations.md "Connection limits").
    shutdown_write_timeout: float = Field(
        10.0,
        ge=0,
        le=600,
        description="Seconds more a write whose body was read gets after shutdown_timeout, so "
        "a refresh token rotation is never committed without its answer being sent.",
    )
    keepalive_timeout: float = Field(
        5.0, gt=0, le=3600, description="Seconds an idle kept-alive connection stays open."
    )
    header_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds a client gets to send a request's headers (from the connection "
        "or the request's first byte); then 408 and close.",
    )
    body_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds a client gets to send a request's body after its headers.",
    )
    max_header_bytes: int = Field(
        32768,
        ge=1024,
        le=1048576,
        description="Bytes a request line and headers may take; more is refused with 431.",
    )
    max_connections: int | None = Field(
        None,
        ge=1,
        le=1000000,
        description="Connections the public listener holds at once per process; more are "
        "answered 503. Default: the file-descriptor limit less room for the admin "
        "listener, the database pool and the process.",
    )
    admin_max_connections: int = Field(
        64, ge=1, le=100000, description="Connections the admin listener holds at once."
    )

    # Where each setting's value came from (`source`): filled by `from_environment`.
    _sources: dict[str, str] = PrivateAttr(default_factory=dict)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **values: Any) -> Settings:
        """Build settings from ``KEYTURN_*`` plus JWThenticator's names (``KEYTURN_*`` wins).

        ``values`` (command-line options) win over both. An unknown ``KEYTURN_*`` variable
        close to a setting's name is refused as a misspelling; any other is left alone
        (`unknown_variables`).

        Raises:
            SettingsError: a variable is misspelt or a value is malformed; each problem
                names the variable, never its value.
        """
        env = os.environ if environ is None else environ
        refused, _ignored = unknown_variables(env)
        if refused:
            raise SettingsError(
                [
                    f"unknown setting {variable} (did you mean {meant}?)"
                    for variable, meant in refused.items()
                ]
            )
        legacy = {
            name: value
            for name, value in legacy_overrides(env).items()
            if f"KEYTURN_{name.upper()}" not in env
        }
        own = {
            name.removeprefix("KEYTURN_").lower(): value
            for name, value in env.items()
            if name.startswith("KEYTURN_")
            and name.removeprefix("KEYTURN_").lower() in cls.model_fields
        }
        sources = dict.fromkeys(cls.model_fields, "default")
        by_setting = {setting: variable for variable, setting in LEGACY_ENVIRONMENT.items()}
        for name in legacy:
            sources[name] = by_setting.get(name, "+".join(v for v in _LEGACY_DATABASE if v in env))
        sources.update({name: f"KEYTURN_{name.upper()}" for name in own})
        sources.update(dict.fromkeys(values, "command line"))
        try:
            settings = cls(**{**legacy, **own, **values})
        except ValidationError as exc:
            variables = {
                name: source if source not in ("default", "command line") else ""
                for name, source in sources.items()
            }
            names = {
                name: variable or f"KEYTURN_{name.upper()}" for name, variable in variables.items()
            }
            for name in values:
                names[name] = f"{name} (command line)"
            raise SettingsError(
                list(dict.fromkeys(_problem(error, names) for error in exc.errors()))
            ) from None
        settings._sources = sources
        return settings

    def source(self, name: str) -> str:
        """Where setting ``name`` came from: ``default``, ``command line``, or a variable."""
        return self._sources.get(name, "default")

    @field_validator(*_DURATIONS, mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        # Durations are whole seconds in the environment ("900"), as in JWThenticator,
        # or carry a unit: 900s, 15m, 24h, 30d.
        if not isinstance(value, str):
            return value
        match = _DURATION.fullmatch(value)
        if match is None:
            raise ValueError(
                "not a duration: use whole seconds (900) or a number with a unit s, m, h or d (15m)"
            )
        return timedelta(seconds=int(match[1]) * _DURATION_UNITS[match[2].lower()])

    @field_validator(
        "access_token_lifetime",
        "refresh_token_lifetime",
        "legacy_refresh_token_lifetime",
        "legacy_key_lifetime",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive number of seconds")
        if value > timedelta(days=3650):
            raise ValueError("must be at most ten years")
        return value

    @field_validator("key_rotation_grace", "refresh_reuse_grace", "signing_key_publish_delay")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError("may not be negative")
        return value

    @field_validator("database_schema")
    @classmethod
    def _schema(cls, value: str) -> str:
        return check_schema_name(value)

    @field_validator("url_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.access_token_lifetime > MAX_ACCESS_TOKEN_LIFETIME:
            # Room for JWThenticator's 25 h JWT_LEASE_TIME, and no more.
            raise ValueError("access_token_lifetime: at most two days (172800 seconds)")
        if self.signing_key_pem is not None and self.signing_key_file is not None:
            raise ValueError(
                "signing_key_pem: set KEYTURN_SIGNING_KEY_PEM (RSA_PRIVATE_KEY) or "
                "KEYTURN_SIGNING_KEY_FILE (RSA_PRIVATE_KEY_PATH), not both"
            )
        if self.replay_store == "redis" and self.redis_url is None:
            raise ValueError("replay_store=redis needs redis_url (KEYTURN_REDIS_URL)")
        return self

    @property
    def resolved_database_url(self) -> str:
        """The database URL to use: the configured one, or the embedded SQLite file."""
        if self.database_url is not None:
            return self.database_url.get_secret_value()
        return default_sqlite_url(self.data_dir)

    @property
    def embedded_database(self) -> bool:
        """True when running on the zero-setup SQLite default."""
        return self.database_url is None

    @property
    def should_migrate_on_start(self) -> bool:
        """Whether start-up applies migrations (default: only for the embedded database)."""
        if self.migrate_on_start is None:
            return self.embedded_database
        return self.migrate_on_start

    def service_config(self) -> ServiceConfig:
        """The part of the settings the token service needs."""
        return ServiceConfig(
            issuer=self.issuer,
            audience=self.audience,
            access_token_lifetime=self.access_token_lifetime,
            refresh_token_lifetime=self.refresh_token_lifetime,
            legacy_refresh_token_lifetime=self.legacy_refresh_token_lifetime,
            legacy_key_lifetime=self.legacy_key_lifetime,
            key_rotation_grace=self.key_rotation_grace,
            refresh_reuse_grace=self.refresh_reuse_grace,
            signing_algorithm=self.signing_algorithm,
            signing_key_publish_delay=self.signing_key_publish_delay,
            leeway=self.leeway,
        )

    def login_limits(self) -> LoginLimits:
        """The login throttling limits (`keyturn.core.throttle`)."""
        return LoginLimits(
            window=self.login_rate_limit_window,
            per_address=self.login_rate_limit_per_address,
            per_account_address=self.login_rate_limit_per_account_address,
            per_account=self.login_rate_limit_per_account,
        )

    def masked(self) -> dict[str, Any]:
        """Every setting as JSON-able values, secrets shown as ``'**********'``."""
        shown: dict[str, Any] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                shown[name] = "**********"
            elif isinstance(value, timedelta):
                shown[name] = int(value.total_seconds())
            elif isinstance(value, Path):
                shown[name] = str(value)
            else:
                shown[name] = value
        return shown
