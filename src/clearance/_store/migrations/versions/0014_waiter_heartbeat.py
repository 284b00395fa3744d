"""When a wait-mode approval's waiting process was last seen, and whether a worker can run its call.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("waiter_seen_at_us", sa.BigInteger()))
        batch.add_column(sa.Column("resumable", sa.Integer(), server_default=sa.text("0"), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("resumable")
        batch.drop_column("waiter_seen_at_us")
