"""The SQL schema: SQLAlchemy Core tables shared by the repositories and the migrations.

Secrets never reach these tables: API keys and refresh tokens are stored as their HMAC
(``*_hash``), private signing keys sealed with the key-encryption key. Times are stored
in UTC (``timestamptz`` on PostgreSQL, ISO text on SQLite) and read back timezone-aware.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

__all__ = [
    "NAMING_CONVENTION",
    "UTCDateTime",
    "api_keys",
    "audit_events",
    "client_public_keys",
    "metadata",
    "refresh_tokens",
    "replay_guard",
    "revoked_tokens",
    "server_settings",
    "signing_keys",
    "users",
]

# Explicit names, so migrations can refer to every constraint on every database.
NAMING_CONVENTION: Final = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata: Final = sa.MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC ``datetime``; naive values are refused rather than guessed."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime: Keyturn stores timezone-aware UTC times only")
        value = value.astimezone(UTC)
        # SQLite has no time zones: store UTC wall time, which sorts and compares as text.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):  # pragma: no cover - drivers return datetimes
            raise TypeError(f"expected a datetime from the database, got {type(value).__name__}")
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


_JSON = sa.JSON(none_as_null=True)
# SQLite only auto-increments an INTEGER PRIMARY KEY (the rowid alias).
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

api_keys: Final = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("key_hash", sa.LargeBinary(64), nullable=False),
    sa.Column("identifier", sa.String(255)),
    sa.Column("name", sa.String(255)),
    sa.Column("roles", _JSON, nullable=False),
    sa.Column("scopes", _JSON),  # NULL: the policy's scopes, unrestricted per key
    sa.Column("extra_claims", _JSON, nullable=False),
    sa.Column("metadata", _JSON, nullable=False),
    sa.Column("legacy", sa.Boolean(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime()),
    sa.Column("last_used_at", UTCDateTime()),
    sa.Column("revoked_at", UTCDateTime()),
    sa.Column("revoked_reason", sa.String(255)),
    sa.Column("previous_hash", sa.LargeBinary(64)),
    sa.Column("previous_expires_at", UTCDateTime()),
    sa.Column("dpop_required", sa.Boolean(), nullable=False, server_default=sa.false()),
    sa.Index("uq_api_keys_key_hash", "key_hash", unique=True),
    sa.Index(None, "previous_hash"),
    sa.Index(None, "identifier", "id"),
)

refresh_tokens: Final = sa.Table(
    "refresh_tokens",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("family_id", sa.String(64), nullable=False),
    sa.Column("parent_id", sa.String(64)),
    sa.Column("token_hash", sa.LargeBinary(64), nullable=False),
    sa.Column("subject", sa.String(255), nullable=False),
    sa.Column("scope", _JSON, nullable=False),
    sa.Column("rotating", sa.Boolean(), nullable=False),
    sa.Column("key_id", sa.String(64), sa.ForeignKey("api_keys.id", ondelete="CASCADE")),
    sa.Column("user_id", sa.String(64)),
    sa.Column("identifier", sa.String(255)),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Column("used_at", UTCDateTime()),
    sa.Column("replaced_by", sa.String(64)),
    sa.Column("revoked_at", UTCDateTime()),
    sa.Column("dpop_jkt", sa.String(64)),  # RFC 7638 thumbprint the family is bound to
    sa.Index("uq_refresh_tokens_token_hash", "token_hash", unique=True),
    sa.Index(None, "family_id"),
    sa.Index(None, "key_id"),
    sa.Index(None, "expires_at"),
    sa.Index(None, "user_id"),
)

users: Final = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("email", sa.String(320), nullable=False),  # as given
    sa.Column("email_key", sa.String(320), nullable=False),  # case-folded, compared
    sa.Column("password_hash", sa.String(512), nullable=False),  # argon2id PHC string
    sa.Column("roles", _JSON, nullable=False),
    sa.Column("scopes", _JSON),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("disabled_at", UTCDateTime()),
    sa.Column("disabled_reason", sa.String(255)),
    # Tokens issued up to here are refused; set on disabling, kept when enabled again.
    sa.Column("tokens_revoked_at", UTCDateTime()),
    sa.Column("password_changed_at", UTCDateTime()),
    sa.Column("last_login_at", UTCDateTime()),
    sa.Column("failed_logins", sa.Integer(), nullable=False),
    sa.Column("last_failed_login_at", UTCDateTime()),
    sa.Index("uq_users_email_key", "email_key", unique=True),
)

signing_keys: Final = sa.Table(
    "signing_keys",
    metadata,
    sa.Column("kid", sa.String(128), primary_key=True),
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("public_jwk", _JSON, nullable=False),
    sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("activated_at", UTCDateTime()),
    sa.Column("retired_at", UTCDateTime()),
    sa.Column("publish_until", UTCDateTime()),
    sa.CheckConstraint("state IN ('pending', 'active', 'retired')", name="state"),
    # At most one active key, enforced by the database (T-ROT-05).
    sa.Index(
        "uq_signing_keys_one_active",
        "state",
        unique=True,
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    ),
)

revoked_tokens: Final = sa.Table(
    "revoked_tokens",
    metadata,
    sa.Column("jti", sa.String(128), primary_key=True),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)

# Facts about the deployment, written once by the first server to start and never
# changed by Keyturn (e.g. the fingerprint of the pepper the stored hashes use).
server_settings: Final = sa.Table(
    "server_settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# The public JWKs a key (an OAuth client) signs ``private_key_jwt`` assertions with.
client_public_keys: Final = sa.Table(
    "client_public_keys",
    metadata,
    sa.Column(
        "key_id",
        sa.String(64),
        sa.ForeignKey("api_keys.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("kid", sa.String(128), primary_key=True),  # RFC 7638 thumbprint
    sa.Column("alg", sa.String(16), nullable=False),
    sa.Column("jwk", _JSON, nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
)

# Single-use ids (client assertion ``jti``s) seen, kept until the thing carrying them
# expires: the row's insert is the check, atomic across every instance.
replay_guard: Final = sa.Table(
    "replay_guard",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index(None, "expires_at"),
)

audit_events: Final = sa.Table(
    "audit_events",
    metadata,
    sa.Column("id", _BIG_ID, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("actor", sa.String(255)),
    sa.Column("target_type", sa.String(32)),
    sa.Column("target_id", sa.String(128)),
    sa.Column("request_id", sa.String(128)),
    sa.Column("detail", _JSON, nullable=False),
    sa.Index(None, "action", "id"),
    sa.Index(None, "target_id", "id"),
)
