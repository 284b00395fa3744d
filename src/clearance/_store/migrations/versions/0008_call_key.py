"""The framework's own id of a call (its tool-call id), so a replayed hook finds its approval.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("call_key", sa.String(200)))
        batch.create_unique_constraint("uq_approvals_agent_call_key", ["agent", "call_key"])


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_constraint("uq_approvals_agent_call_key", type_="unique")
        batch.drop_column("call_key")
