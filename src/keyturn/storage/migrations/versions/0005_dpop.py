"""DPoP (RFC 9449): keys that require it, refresh-token families bound to a DPoP key.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(
            sa.Column("dpop_required", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("dpop_jkt", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("dpop_jkt")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("dpop_required")
