"""Rejected policy drafts, and which revision is active for whom.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("policy_revisions") as batch:
        batch.add_column(sa.Column("status", sa.String(20), nullable=False, server_default="valid"))
        batch.add_column(sa.Column("problems", sa.Text()))
    op.create_table(
        "policy_assignments",
        sa.Column("scope", sa.String(260), primary_key=True),
        sa.Column("revision_id", sa.String(40), nullable=False),
        sa.Column("activated_at_us", sa.BigInteger(), nullable=False),
        sa.Column("activated_by", sa.String(200)),
    )


def downgrade() -> None:
    op.drop_table("policy_assignments")
    with op.batch_alter_table("policy_revisions") as batch:
        batch.drop_column("problems")
        batch.drop_column("status")
