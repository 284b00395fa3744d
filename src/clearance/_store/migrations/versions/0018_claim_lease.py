"""When the process running an approved call was last seen: its claim's lease.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("claim_seen_at_us", sa.BigInteger()))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("claim_seen_at_us")
