"""The event ids of archived records: ingest still knows them once their records have left `events`.

Also an index of the `checkpoint.key_introduced` records (a handful in any store).

A remote agent re-sends a record whose acknowledgement it lost; if the original was archived
meanwhile, ingest must count it a duplicate, not append it again. `clearance audit archive`
fills the table in the transaction that removes the records. Records archived before this
revision are added by the next `clearance audit archive` run, from their segments (the
migration cannot read the segment files).

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "archived_ids",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_archived_ids_seq", "archived_ids", ["seq"])  # which segments' ids it holds
    # The few key introductions, found without reading every record: a checkpoint's key is
    # introduced again once its introduction was archived (`_seals.sign`)
    where = sa.text("kind = 'checkpoint.key_introduced'")
    op.create_index("ix_events_keys", "events", ["seq"], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_events_keys", table_name="events")
    op.drop_table("archived_ids")
