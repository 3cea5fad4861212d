"""Server settings: facts about the deployment, such as the pepper's fingerprint.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copies of the column types as of this revision (never import the live tables).
_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    # Left empty: the first server to start after the upgrade records its pepper's
    # fingerprint, so an existing deployment adopts the pepper it runs with.
    op.create_table(
        "server_settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("created_at", _TIME, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_server_settings"),
    )


def downgrade() -> None:
    op.drop_table("server_settings")
