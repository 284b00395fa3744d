"""The outbox: webhook deliveries and their attempts.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("approval_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_attempt_at_us", sa.BigInteger(), nullable=False),
        sa.Column("lease_until_us", sa.BigInteger()),
        sa.Column("last_error", sa.Text()),
        sa.Column("last_status", sa.Integer()),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at_us", sa.BigInteger()),
    )
    op.create_index("ix_outbox_due", "outbox", ["status", "next_attempt_at_us"])
    op.create_index("ix_outbox_approval", "outbox", ["approval_id"])
    op.create_table(
        "outbox_attempts",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("outbox_id", sa.String(40), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("status_code", sa.Integer()),
        sa.Column("error", sa.Text()),
        sa.Column("duration_ms", sa.Float(), nullable=False),
    )
    op.create_index("ix_outbox_attempts_outbox", "outbox_attempts", ["outbox_id"])


def downgrade() -> None:
    op.drop_index("ix_outbox_attempts_outbox", "outbox_attempts")
    op.drop_table("outbox_attempts")
    op.drop_index("ix_outbox_approval", "outbox")
    op.drop_index("ix_outbox_due", "outbox")
    op.drop_table("outbox")
