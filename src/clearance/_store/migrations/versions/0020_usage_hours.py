"""LLM usage summed per hour, agent and model: what usage and spend summaries read (`_rollup`).

The table is filled from the LLM calls' usage columns (0019) by one INSERT … SELECT … GROUP BY,
in the migration's transaction; from then on each append and each archive keeps it equal to the
records' sums in its own transaction.

The session index becomes a covering one: the sessions list sums a session's records from it.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from clearance._store._rollup import BACKFILL, SUMMED
from clearance._store._schema import SESSION_INDEX

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    halves = [sa.Column(f"{name}_{half}", sa.BigInteger(), nullable=False) for name in SUMMED for half in ("hi", "lo")]
    op.create_table(
        "usage_hours",
        sa.Column("hour_us", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("agent", sa.String(200), primary_key=True),
        sa.Column("unnamed", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("calls", sa.BigInteger(), nullable=False),
        sa.Column("unpriced", sa.BigInteger(), nullable=False),
        *halves,
    )
    op.execute(BACKFILL)
    # The sessions list sums each session's records from this index alone (see docs/performance.md)
    op.drop_index("ix_events_session", table_name="events")
    op.create_index("ix_events_session", "events", list(SESSION_INDEX))


def downgrade() -> None:
    op.drop_index("ix_events_session", table_name="events")
    op.create_index("ix_events_session", "events", ["session"])
    op.drop_table("usage_hours")
