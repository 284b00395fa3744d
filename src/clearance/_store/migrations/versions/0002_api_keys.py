"""API keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scopes", sa.String(100), nullable=False),
        sa.Column("agent", sa.String(200)),
        sa.Column("environment", sa.String(40), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(200)),
        sa.Column("revoked_at_us", sa.BigInteger()),
        sa.Column("last_used_at_us", sa.BigInteger()),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
