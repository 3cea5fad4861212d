"""Settings for the two HTTP listeners: addresses, routes, and connection bounds.

The bounds are enforced by `keyturn.server.listeners` (docs/operations.md "Connection
limits").
"""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr, field_validator

__all__ = ["ConnectionSettings", "ListenerSettings"]


class ListenerSettings(BaseModel):
    """Where the public and admin listeners bind, and which routes each serves."""

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

    @field_validator("url_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not value.startswith("/"):
            raise ValueError("must start with '/'")
        return value


class ConnectionSettings(BaseModel):
    """How long connections, requests and shutdown may take, and how many connections."""

    shutdown_timeout: int = Field(
        30,
        ge=1,
        le=3600,
        description="Seconds in-flight requests get to finish after SIGTERM before they "
        "are cancelled.",
    )
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
