"""Users: people who log in with an email and a password.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as of this revision (never import the live tables).
_TIME = sa.DateTime(timezone=True)
_JSON = sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_key", sa.String(320), nullable=False),
        sa.Column("password_hash", sa.String(512), nullable=False),
        sa.Column("roles", _JSON, nullable=False),
        sa.Column("scopes", _JSON),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("disabled_at", _TIME),
        sa.Column("disabled_reason", sa.String(255)),
        sa.Column("tokens_revoked_at", _TIME),
        sa.Column("password_changed_at", _TIME),
        sa.Column("last_login_at", _TIME),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("last_failed_login_at", _TIME),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
    )
    op.create_index("uq_users_email_key", "users", ["email_key"], unique=True)
    # Disabling a user or changing their password revokes their refresh tokens.
    op.create_index("ix_refresh_tokens_user_id", "refresh_tokens", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_refresh_tokens_user_id", table_name="refresh_tokens")
    op.drop_table("users")
