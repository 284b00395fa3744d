"""Slack: the message of each approval, and which Slack user each person is.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("slack_channel", sa.String(40)))
        batch.add_column(sa.Column("slack_ts", sa.String(40)))
        batch.add_column(sa.Column("slack_shown", sa.String(40)))
        batch.add_column(sa.Column("slack_claimed_at_us", sa.BigInteger()))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("slack_user_id", sa.String(40)))
        batch.create_unique_constraint("uq_users_slack_user_id", ["slack_user_id"])


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_slack_user_id", type_="unique")
        batch.drop_column("slack_user_id")
    with op.batch_alter_table("approvals") as batch:
        for name in ("slack_claimed_at_us", "slack_shown", "slack_ts", "slack_channel"):
            batch.drop_column(name)
