"""Approval channels: each channel's messages and each person's outside identities, in their own tables.

The Slack columns of `approvals` and `users` move out: a message's channel and timestamp become
its `ref` (JSON), the state it shows and the poster's claim come along, and each person's Slack
user id becomes an identity of the channel `slack`.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_APPROVAL_COLUMNS = ("slack_channel", "slack_ts", "slack_shown", "slack_claimed_at_us")


def upgrade() -> None:
    op.create_table(
        "channel_messages",
        sa.Column("approval_id", sa.String(40), primary_key=True),
        sa.Column("channel", sa.String(40), primary_key=True),
        sa.Column("ref", sa.Text()),
        sa.Column("shown", sa.String(40)),
        sa.Column("drawn", sa.String(40)),
        sa.Column("claimed_at_us", sa.BigInteger()),
        sa.Column("sent", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("failures", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text()),
        sa.Column("failed_at_us", sa.BigInteger()),
        sa.Column("failing", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("retry_at_us", sa.BigInteger()),
    )
    op.create_index("ix_channel_messages_stale", "channel_messages", ["channel", "shown"])
    op.create_table(
        "channel_identities",
        sa.Column("user_id", sa.String(40), primary_key=True),
        sa.Column("channel", sa.String(40), primary_key=True),
        sa.Column("external_id", sa.String(320), nullable=False),
        sa.UniqueConstraint("channel", "external_id", name="uq_channel_identities_external"),
    )
    conn = op.get_bind()
    approvals = conn.execute(
        sa.text(
            "SELECT id, slack_channel, slack_ts, slack_shown, slack_claimed_at_us FROM approvals"
            " WHERE slack_ts IS NOT NULL OR slack_claimed_at_us IS NOT NULL"
        )
    ).fetchall()
    for approval_id, channel, ts, shown, claimed in approvals:
        ref = json.dumps({"channel": channel, "ts": ts}) if ts is not None else None
        conn.execute(
            sa.text(
                "INSERT INTO channel_messages (approval_id, channel, ref, shown, drawn, claimed_at_us, sent, failures)"
                " VALUES (:id, 'slack', :ref, :shown, :shown, :claimed, :sent, 0)"
            ),
            {"id": approval_id, "ref": ref, "shown": shown, "claimed": claimed, "sent": int(ref is not None)},
        )
    for user_id, slack_user_id in conn.execute(
        sa.text("SELECT id, slack_user_id FROM users WHERE slack_user_id IS NOT NULL")
    ).fetchall():
        conn.execute(
            sa.text("INSERT INTO channel_identities (user_id, channel, external_id) VALUES (:u, 'slack', :s)"),
            {"u": user_id, "s": slack_user_id},
        )
    with op.batch_alter_table("users") as batch:
        batch.drop_constraint("uq_users_slack_user_id", type_="unique")
        batch.drop_column("slack_user_id")
    with op.batch_alter_table("approvals") as batch:
        for name in _APPROVAL_COLUMNS:
            batch.drop_column(name)


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("slack_channel", sa.String(40)))
        batch.add_column(sa.Column("slack_ts", sa.String(40)))
        batch.add_column(sa.Column("slack_shown", sa.String(40)))
        batch.add_column(sa.Column("slack_claimed_at_us", sa.BigInteger()))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("slack_user_id", sa.String(40)))
        batch.create_unique_constraint("uq_users_slack_user_id", ["slack_user_id"])
    conn = op.get_bind()
    messages = conn.execute(
        sa.text("SELECT approval_id, ref, shown, claimed_at_us FROM channel_messages WHERE channel = 'slack'")
    ).fetchall()
    for approval_id, ref, shown, claimed in messages:
        where = json.loads(str(ref)) if ref is not None else {}
        conn.execute(
            sa.text(
                "UPDATE approvals SET slack_channel = :c, slack_ts = :ts, slack_shown = :shown,"
                " slack_claimed_at_us = :claimed WHERE id = :id"
            ),
            {"c": where.get("channel"), "ts": where.get("ts"), "shown": shown, "claimed": claimed, "id": approval_id},
        )
    conn.execute(
        sa.text(
            "UPDATE users SET slack_user_id = (SELECT external_id FROM channel_identities i"
            " WHERE i.user_id = users.id AND i.channel = 'slack')"
        )
    )
    op.drop_table("channel_identities")
    op.drop_index("ix_channel_messages_stale", table_name="channel_messages")
    op.drop_table("channel_messages")
