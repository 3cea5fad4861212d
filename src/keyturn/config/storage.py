"""Settings for where state lives: the data directory and the database."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator

from keyturn.config.environment import default_sqlite_url
from keyturn.storage.schema import DEFAULT_SCHEMA, check_schema_name

__all__ = ["StorageSettings"]


class StorageSettings(BaseModel):
    """The data directory, the database and how the server uses it."""

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

    @field_validator("database_schema")
    @classmethod
    def _schema(cls, value: str) -> str:
        return check_schema_name(value)

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
