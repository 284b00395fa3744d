"""Who delivers an event sink on SQLite (a process's lease on it, and until when), so one process does.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sink_positions") as batch:
        batch.add_column(sa.Column("holder", sa.String(200)))
        batch.add_column(sa.Column("lease_until_us", sa.BigInteger()))


def downgrade() -> None:
    with op.batch_alter_table("sink_positions") as batch:
        batch.drop_column("lease_until_us")
        batch.drop_column("holder")
