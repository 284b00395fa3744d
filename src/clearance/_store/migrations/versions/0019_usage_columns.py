"""An LLM call's model and token counts as columns, filled for the records already written.

Usage and spend by model read them from an index instead of every record's JSON body. The
columns are copies of body fields like the others, derived by `usage_columns` (which `verify`
checks them with), so the hash chain, which covers the body only, is untouched.

The backfill runs in the migration's transaction, in batches of chain positions: the upgrade
is all or nothing (no half-filled log whose old records `verify` would flag), and servers
migrate before they serve, so holding the table meanwhile only delays their start. Measured on
PostgreSQL with 10,000,000 events (1,500,000 LLM calls): see docs/performance.md.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

from clearance._store._events import USAGE_COUNTS, usage_columns
from clearance._store._schema import USAGE_INDEX

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

WINDOW = 50_000  # chain positions read per batch
_COLUMNS = ("model", *USAGE_COUNTS)
# LLM calls, and any other record that might hold a usage field (none is written so, but a
# column must agree with whatever the body says): the rest are skipped without decoding.
_CANDIDATES = "(kind = 'llm.call' OR body LIKE '%\"model\"%' OR body LIKE '%tokens\"%')"


def upgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.add_column(sa.Column("model", sa.String(200)))
        for name in USAGE_COUNTS:
            batch.add_column(sa.Column(name, sa.BigInteger()))
    backfill(op.get_bind())
    where = sa.text("kind = 'llm.call'")
    op.create_index("ix_events_usage", "events", list(USAGE_INDEX), sqlite_where=where, postgresql_where=where)


def backfill(conn: sa.Connection, *, window: int = WINDOW) -> int:
    """Fill the usage columns of every record from its body; returns how many records hold usage."""
    top = conn.execute(sa.text("SELECT MAX(seq) FROM events")).scalar() or 0
    read = sa.text(f"SELECT seq, hash, body FROM events WHERE seq > :after AND seq <= :upto AND {_CANDIDATES}")
    write = sa.text(f"UPDATE events SET {', '.join(f'{c} = :{c}' for c in _COLUMNS)} WHERE seq = :seq")
    filled = 0
    for after in range(0, int(top), window):
        found = [_columns(r[0], r[1], r[2]) for r in conn.execute(read, {"after": after, "upto": after + window})]
        rows = [cols for cols in found if cols is not None]
        if rows:
            conn.execute(write, rows)
            filled += len(rows)
    return filled


def _columns(seq: int, hash_: str, body: str) -> dict[str, Any] | None:
    """The record's usage columns as `verify` derives them (None when it holds no usage)."""
    try:
        data = json.loads(body)
    except RecursionError:  # verify checks such a record as readers show it
        from clearance._store._shown import stored_event

        data = stored_event(seq, hash_, body).body
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    cols = usage_columns(data)
    return {**cols, "seq": seq} if any(v is not None for v in cols.values()) else None


def downgrade() -> None:
    op.drop_index("ix_events_usage", table_name="events")
    with op.batch_alter_table("events") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
