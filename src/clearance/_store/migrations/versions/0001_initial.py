"""Events, approvals and policy revisions.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("at_us", sa.BigInteger(), nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("environment", sa.String(40), nullable=False),
        sa.Column("session", sa.String(200)),
        sa.Column("tool", sa.String(200)),
        sa.Column("call_id", sa.String(40)),
        sa.Column("decision", sa.String(40)),
        sa.Column("cost_nusd", sa.BigInteger()),
        sa.Column("tokens", sa.BigInteger()),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(64), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    # Partial indexes for the kinds facts look up; an outcome record touches none of them.
    for name, columns, where in (
        ("ix_events_calls", ["agent", "tool", "at_us"], "kind = 'tool_call.decided'"),
        ("ix_events_llm", ["agent", "at_us"], "kind = 'llm.call'"),
        ("ix_events_activations", ["agent", "seq"], "kind = 'policy.activated'"),
    ):
        op.create_index(name, "events", columns, sqlite_where=sa.text(where), postgresql_where=sa.text(where))
    op.create_index("ix_events_session", "events", ["session"])
    op.create_index("ix_events_call_id", "events", ["call_id"])
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("call_id", sa.String(40), nullable=False, unique=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("environment", sa.String(40), nullable=False),
        sa.Column("session", sa.String(200)),
        sa.Column("args_json", sa.Text(), nullable=False),
        sa.Column("args_hash", sa.String(64), nullable=False),
        sa.Column("shown_args_json", sa.Text(), nullable=False),
        sa.Column("rule_ids", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("policy_revision", sa.String(40), nullable=False),
        sa.Column("approvers", sa.Text(), nullable=False),
        sa.Column("on_timeout", sa.String(20), nullable=False),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=False),
        sa.Column("decided_by", sa.String(200)),
        sa.Column("decided_at_us", sa.BigInteger()),
        sa.Column("note", sa.Text()),
        sa.Column("waiter", sa.String(100)),
    )
    op.create_index("ix_approvals_status_expires", "approvals", ["status", "expires_at_us"])
    op.create_table(
        "policy_revisions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("content_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(200)),
        sa.Column("parent", sa.String(40)),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("policy_revisions")
    op.drop_index("ix_approvals_status_expires", "approvals")
    op.drop_table("approvals")
    for name in ("ix_events_call_id", "ix_events_session", "ix_events_activations", "ix_events_llm", "ix_events_calls"):
        op.drop_index(name, "events")
    op.drop_table("events")
