"""The span a call needing approval was asked in (a W3C traceparent), so a resume elsewhere links to it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("trace_context", sa.String(55)))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("trace_context")
