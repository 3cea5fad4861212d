"""Keyturn's settings: one typed class, read from ``KEYTURN_*`` environment variables.

JWThenticator's variable names keep working when set (``PORT``, ``URL_PREFIX``,
``DISABLE_EXTERNAL_API``, ``DISABLE_INTERNAL_API``, ``JWT_LEASE_TIME``, ``JWT_AUDIENCE``,
``KEY_EXPIRY``, ``REFRESH_TOKEN_EXPIRY``, ``RSA_PRIVATE_KEY``, ``RSA_PRIVATE_KEY_PATH``,
``DB_USER``, ``DB_PASS``, ``DB_HOST``, ``DB_NAME``): each maps onto its ``KEYTURN_*``
setting, and the ``KEYTURN_*`` name wins when both are set. Keyturn's own defaults are
the safer ones (a 15-minute access token, not JWThenticator's 25 hours).

Built once at the edge (the CLI or ``create_app``) and passed inward; nothing reads the
environment at import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from keyturn.core.signing import SUPPORTED_ALGORITHMS
from keyturn.core.throttle import LoginLimits
from keyturn.service import MAX_ACCESS_TOKEN_LIFETIME, ServiceConfig
from keyturn.storage.engine import default_sqlite_url

__all__ = [
    "CLIENT_VARIABLES",
    "LEGACY_ENVIRONMENT",
    "LEGACY_VARIABLES",
    "Settings",
    "legacy_overrides",
]

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
_LEGACY_DATABASE = ("DB_USER", "DB_PASS", "DB_HOST", "DB_NAME")
#: Every JWThenticator variable Keyturn reads.
LEGACY_VARIABLES: frozenset[str] = frozenset(LEGACY_ENVIRONMENT) | frozenset(_LEGACY_DATABASE)
#: KEYTURN_* variables read by other tools, not settings: the test suite and CI, and the
#: client side (the examples, scripts using `keyturn.client`), so a client and a server
#: can share one shell.
CLIENT_VARIABLES: frozenset[str] = frozenset(
    {"KEYTURN_URL", "KEYTURN_API_KEY", "KEYTURN_JWKS_URL", "KEYTURN_REFRESH_TOKEN_FILE"}
)
_NOT_SETTINGS = (
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

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None, **values: Any) -> Settings:
        """Build settings from ``KEYTURN_*`` plus JWThenticator's names (``KEYTURN_*`` wins).

        Raises:
            pydantic.ValidationError: a value is malformed; the message names the field.
        """
        env = os.environ if environ is None else environ
        legacy = {
            name: value
            for name, value in legacy_overrides(env).items()
            if f"KEYTURN_{name.upper()}" not in env
        }
        # KEYTURN_* names are passed explicitly, so a misspelt one is an error, not ignored.
        own = {
            name.removeprefix("KEYTURN_").lower(): value
            for name, value in env.items()
            if name.startswith("KEYTURN_") and name not in _NOT_SETTINGS
        }
        return cls(**{**legacy, **own, **values})

    @field_validator(*_DURATIONS, mode="before")
    @classmethod
    def _seconds(cls, value: Any) -> Any:
        # Durations are whole seconds in the environment ("900"), as in JWThenticator.
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        return value

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
            raise ValueError("set signing_key_pem or signing_key_file, not both")
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
