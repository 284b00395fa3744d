"""Whether each archived segment's record ids are all in `archived_ids`.

0021 judged that by counting: a segment was listed when `archived_ids` held as many ids in its
range as it has records. A store that, before 0021, appended a re-sent record again after its
original was archived holds one id twice in the chain; the list holds it once, with the later
copy's position, so the earlier segment's count never matched and every `clearance audit
archive` read that segment again and said its ids were unknown. A flag set when the ids are
listed says it once and for all. Existing rows are marked listed where any of their ids is
listed: a segment's ids are listed all at once, so one means all.

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("archives") as batch:
        batch.add_column(sa.Column("ids_listed", sa.Integer(), nullable=False, server_default=sa.text("0")))
    # A segment's ids are listed all at once (the archive that removed its records, or the run
    # that read it back), so one id in its range means all are, wherever the others' positions
    op.execute(
        "UPDATE archives SET ids_listed = 1 WHERE EXISTS (SELECT 1 FROM archived_ids i"
        " WHERE i.seq >= archives.first_seq AND i.seq <= archives.last_seq)"
    )


def downgrade() -> None:
    with op.batch_alter_table("archives") as batch:
        batch.drop_column("ids_listed")
