"""The approval lifecycle: edits, requester, quorum and escalation, modes, exactly-once execution.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLUMNS = (
    ("requested_by", sa.String(200)),
    ("edited_args_json", sa.Text()),
    ("edited_args_hash", sa.String(64)),
    ("edited_shown_json", sa.Text()),
    ("votes_json", sa.Text()),
    ("escalate_to", sa.Text()),
    ("escalation_timeout_s", sa.Integer()),
    ("escalated_at_us", sa.BigInteger()),
    ("webhook_url", sa.Text()),
    ("claimed_by", sa.String(200)),
    ("claimed_at_us", sa.BigInteger()),
    ("result_json", sa.Text()),
    ("error", sa.Text()),
    ("finished_at_us", sa.BigInteger()),
)


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        for name, kind in _COLUMNS:
            batch.add_column(sa.Column(name, kind))
        batch.add_column(sa.Column("quorum", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("mode", sa.String(20), nullable=False, server_default="wait"))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        for name in ("mode", "quorum", *reversed([n for n, _ in _COLUMNS])):
            batch.drop_column(name)
