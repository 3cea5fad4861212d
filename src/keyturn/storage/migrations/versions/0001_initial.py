"""Initial schema: API keys, refresh tokens, signing keys, revoked tokens, audit events.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as of this revision (never import the live tables).
_TIME = sa.DateTime(timezone=True)
_JSON = sa.JSON(none_as_null=True)
_HASH = sa.LargeBinary(64)


def upgrade() -> None:
    _api_keys()
    _refresh_tokens()
    _signing_keys()
    _revoked_tokens()
    _audit_events()


def _api_keys() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("key_hash", _HASH, nullable=False),
        sa.Column("identifier", sa.String(255)),
        sa.Column("name", sa.String(255)),
        sa.Column("roles", _JSON, nullable=False),
        sa.Column("scopes", _JSON),
        sa.Column("extra_claims", _JSON, nullable=False),
        sa.Column("metadata", _JSON, nullable=False),
        sa.Column("legacy", sa.Boolean(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME),
        sa.Column("last_used_at", _TIME),
        sa.Column("revoked_at", _TIME),
        sa.Column("revoked_reason", sa.String(255)),
        sa.Column("previous_hash", _HASH),
        sa.Column("previous_expires_at", _TIME),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )
    op.create_index("uq_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
    op.create_index("ix_api_keys_previous_hash", "api_keys", ["previous_hash"])
    op.create_index("ix_api_keys_identifier_id", "api_keys", ["identifier", "id"])


def _refresh_tokens() -> None:
    op.create_table(
        "refresh_tokens",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("family_id", sa.String(64), nullable=False),
        sa.Column("parent_id", sa.String(64)),
        sa.Column("token_hash", _HASH, nullable=False),
        sa.Column("subject", sa.String(255), nullable=False),
        sa.Column("scope", _JSON, nullable=False),
        sa.Column("rotating", sa.Boolean(), nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("user_id", sa.String(64)),
        sa.Column("identifier", sa.String(255)),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.Column("used_at", _TIME),
        sa.Column("replaced_by", sa.String(64)),
        sa.Column("revoked_at", _TIME),
        sa.PrimaryKeyConstraint("id", name="pk_refresh_tokens"),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name="fk_refresh_tokens_key_id_api_keys",
            ondelete="CASCADE",
        ),
    )
    op.create_index("uq_refresh_tokens_token_hash", "refresh_tokens", ["token_hash"], unique=True)
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_index("ix_refresh_tokens_key_id", "refresh_tokens", ["key_id"])
    op.create_index("ix_refresh_tokens_expires_at", "refresh_tokens", ["expires_at"])


def _signing_keys() -> None:
    op.create_table(
        "signing_keys",
        sa.Column("kid", sa.String(128), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_jwk", _JSON, nullable=False),
        sa.Column("sealed_private_key", sa.LargeBinary(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("activated_at", _TIME),
        sa.Column("retired_at", _TIME),
        sa.Column("publish_until", _TIME),
        sa.PrimaryKeyConstraint("kid", name="pk_signing_keys"),
        sa.CheckConstraint(
            "state IN ('pending', 'active', 'retired')", name="ck_signing_keys_state"
        ),
    )
    op.create_index(
        "uq_signing_keys_one_active",
        "signing_keys",
        ["state"],
        unique=True,
        sqlite_where=sa.text("state = 'active'"),
        postgresql_where=sa.text("state = 'active'"),
    )


def _revoked_tokens() -> None:
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(128), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_revoked_tokens"),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])


def _audit_events() -> None:
    op.create_table(
        "audit_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("at", _TIME, nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255)),
        sa.Column("target_type", sa.String(32)),
        sa.Column("target_id", sa.String(128)),
        sa.Column("request_id", sa.String(128)),
        sa.Column("detail", _JSON, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_events"),
    )
    op.create_index("ix_audit_events_action_id", "audit_events", ["action", "id"])
    op.create_index("ix_audit_events_target_id_id", "audit_events", ["target_id", "id"])


def downgrade() -> None:
    op.drop_table("audit_events")
    op.drop_table("revoked_tokens")
    op.drop_table("signing_keys")
    op.drop_table("refresh_tokens")
    op.drop_table("api_keys")
