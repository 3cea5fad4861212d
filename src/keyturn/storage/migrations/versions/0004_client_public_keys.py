"""Client public keys (private_key_jwt) and the replay guard for single-use ids.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as of this revision (never import the live tables).
_TIME = sa.DateTime(timezone=True)
_JSON = sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "client_public_keys",
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("kid", sa.String(128), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("jwk", _JSON, nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["api_keys.id"],
            name="fk_client_public_keys_key_id_api_keys",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("key_id", "kid", name="pk_client_public_keys"),
    )
    op.create_table(
        "replay_guard",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("expires_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_replay_guard"),
    )
    op.create_index("ix_replay_guard_expires_at", "replay_guard", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_replay_guard_expires_at", table_name="replay_guard")
    op.drop_table("replay_guard")
    op.drop_table("client_public_keys")
