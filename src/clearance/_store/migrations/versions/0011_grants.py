"""Grants: what an approver let through beyond one call (similar calls, or more budget).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "grants",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("scope", sa.String(20), nullable=False),
        sa.Column("agent", sa.String(200), nullable=False),
        sa.Column("environment", sa.String(40), nullable=False),
        sa.Column("session", sa.String(200)),
        sa.Column("requester", sa.String(200)),
        sa.Column("tool", sa.String(200)),
        sa.Column("rule_ids", sa.Text(), nullable=False),
        sa.Column("constraints_json", sa.Text()),
        sa.Column("max_calls", sa.BigInteger()),
        sa.Column("total_arg", sa.String(128)),
        sa.Column("max_total", sa.Text()),
        sa.Column("calls_used", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("total_used", sa.Text(), nullable=False, server_default=sa.text("'0'")),
        sa.Column("extend_nusd", sa.BigInteger()),
        sa.Column("extend_tokens", sa.BigInteger()),
        sa.Column("approval_id", sa.String(40)),
        sa.Column("policy_revision", sa.String(40)),
        sa.Column("granted_by", sa.String(200), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("created_at_us", sa.BigInteger(), nullable=False),
        sa.Column("expires_at_us", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at_us", sa.BigInteger()),
        sa.Column("revoked_by", sa.String(200)),
        sa.Column("revoke_reason", sa.Text()),
        sa.Column("ended_at_us", sa.BigInteger()),
    )
    op.create_index("ix_grants_live", "grants", ["agent", "tool", "expires_at_us"])
    op.create_index("ix_grants_session", "grants", ["session"])


def downgrade() -> None:
    op.drop_index("ix_grants_session", "grants")
    op.drop_index("ix_grants_live", "grants")
    op.drop_table("grants")
