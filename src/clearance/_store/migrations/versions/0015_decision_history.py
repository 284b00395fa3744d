"""The decisions history: approvals by when they were decided, and the grant given with an approval.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_approvals_decided", "approvals", ["decided_at_us", "id"])
    op.create_index("ix_grants_approval", "grants", ["approval_id"])


def downgrade() -> None:
    op.drop_index("ix_grants_approval", table_name="grants")
    op.drop_index("ix_approvals_decided", table_name="approvals")
