"""The database side of archiving: which records may leave, and their removal with the boundary row.

Records leave the `events` table only as a prefix of the chain, and only in the transaction
that writes the `archives` row saying which segment file holds them and which hash the chain
in the database continues from, and their ids to `archived_ids` (ingest's dedupe reads it).
The newest record never leaves: it is the chain's tip, which the next append links to (and, on
SQLite, what keeps positions from being reused).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ChainBroken, StoreError
from . import _rollup
from ._db import Database
from ._events import ROW_COLUMNS, chain_start, check_row

Row = tuple[Any, ...]  # one stored record, its `ROW_COLUMNS` in order
_ROW = ", ".join(ROW_COLUMNS)
_ID = ROW_COLUMNS.index("id")
_AT, _BODY = ROW_COLUMNS.index("at_us"), ROW_COLUMNS.index("body")
_PREV, _HASH = ROW_COLUMNS.index("prev_hash"), ROW_COLUMNS.index("hash")
_ARCHIVE_COLUMNS = (
    "segment, first_seq, prev_hash, last_seq, last_hash, records, sha256, first_at_us, last_at_us, archived_at_us"
)


@dataclass(frozen=True)
class Boundary:
    """A run of consecutive records of the chain: what a segment holds.

    Attributes:
        first_seq: Position of its first record.
        prev_hash: The hash its first record links to (GENESIS for the chain's first).
        last_seq: Position of its last record.
        last_hash: Hash of its last record: what the next record links to.
        records: How many records it holds.
        first_at_us: Time of its first record.
        last_at_us: Time of its last record.
    """

    first_seq: int
    prev_hash: str
    last_seq: int
    last_hash: str
    records: int
    first_at_us: int
    last_at_us: int

    @classmethod
    def of(cls, rows: Sequence[Row]) -> Boundary:
        """The boundary of consecutive rows (at least one)."""
        first, last = rows[0], rows[-1]
        return cls(first[0], first[_PREV], last[0], last[_HASH], len(rows), first[_AT], last[_AT])


@dataclass(frozen=True)
class Archived:
    """A segment recorded in the database as archived (a row of `archives`)."""

    segment: str
    boundary: Boundary
    sha256: str
    archived_at_us: int


def start(db: Database) -> tuple[int, str]:
    """Where the chain in the database starts: the last archived record's position and hash."""
    with db.read() as cur:
        return chain_start(cur)


def recorded(db: Database) -> list[Archived]:
    """Every segment the database records as archived, oldest first."""
    with db.read() as cur:
        cur.execute(f"SELECT {_ARCHIVE_COLUMNS} FROM archives ORDER BY last_seq")
        rows = cur.fetchall()
    return [Archived(r[0], Boundary(r[1], r[2], r[3], r[4], r[5], r[7], r[8]), r[6], r[9]) for r in rows]


def unlisted(db: Database) -> list[Archived]:
    """Segments recorded as archived whose records' ids are not known to be in `archived_ids` (archived before 0021)."""
    with db.read() as cur:
        cur.execute(f"SELECT {_ARCHIVE_COLUMNS} FROM archives WHERE ids_listed = 0 ORDER BY last_seq")
        rows = cur.fetchall()
    return [Archived(r[0], Boundary(r[1], r[2], r[3], r[4], r[5], r[7], r[8]), r[6], r[9]) for r in rows]


def list_ids(db: Database, segment: str, rows: Sequence[Row]) -> int:
    """Add the ids of archived `rows` (read back from their verified `segment`) that `archived_ids` lacks; how many.

    An id may be there already with another position: before 0021 a re-sent record could be
    appended again after its original was archived. Either way the segment is marked listed.
    """
    with db.write() as cur:
        have: set[str] = set()
        for start in range(0, len(rows), 500):
            chunk = {f"i{n}": r[_ID] for n, r in enumerate(rows[start : start + 500])}
            cur.execute(db.sql(f"SELECT id FROM archived_ids WHERE id IN ({', '.join(':' + k for k in chunk)})"), chunk)
            have.update(r[0] for r in cur.fetchall())
        missing = [{"id": r[_ID], "seq": r[0]} for r in rows if r[_ID] not in have]
        if missing:
            cur.executemany(
                db.sql("INSERT INTO archived_ids (id, seq) VALUES (:id, :seq) ON CONFLICT (id) DO NOTHING"), missing
            )
        cur.execute(db.sql("UPDATE archives SET ids_listed = 1 WHERE segment = :segment"), {"segment": segment})
    return len(missing)


def holds(db: Database, seq: int, hash_: str | None) -> bool:
    """Whether the database holds the record at `seq` with this hash."""
    with db.read() as cur:
        cur.execute(db.sql("SELECT hash FROM events WHERE seq = :seq"), {"seq": seq})
        row = cur.fetchone()
    return row is not None and hash_ is not None and row[0] == hash_


def slowest_sink(db: Database) -> tuple[str, int] | None:
    """The event sink that has delivered the fewest records, and its position (None: no sinks)."""
    with db.read() as cur:
        cur.execute("SELECT sink, position FROM sink_positions ORDER BY position, sink LIMIT 1")
        row = cur.fetchone()
    return (str(row[0]), int(row[1])) if row else None


def due(
    db: Database, *, before_us: int, limit: int, max_bytes: int, upto: int | None = None, batch: int = 1000
) -> list[Row]:
    """The next records to archive: from the chain's start, all older than `before_us`.

    A prefix of the chain: it stops at the first record at or after `before_us`, before the
    newest record, after position `upto` (when given), at `limit` records, or once their bodies
    hold `max_bytes` characters. Each is checked against the one before it first.

    Raises:
        ChainBroken: A record among them does not verify: nothing from it on may be archived.
    """
    sql = db.sql(
        f"SELECT {_ROW} FROM events WHERE seq > :after AND seq < (SELECT MAX(seq) FROM events) ORDER BY seq LIMIT :n"
    )
    with db.read() as cur:
        prev_seq, prev_hash = chain_start(cur)
    taken: list[Row] = []
    size = 0
    while len(taken) < limit and size < max_bytes:
        with db.read() as cur:
            cur.execute(sql, {"after": prev_seq, "n": min(batch, limit - len(taken))})
            rows = [tuple(r) for r in cur.fetchall()]
        if not rows:
            break
        for row in rows:
            if row[_AT] >= before_us or size >= max_bytes or (upto is not None and row[0] > upto):
                return taken
            problem = check_row(row, prev_seq, prev_hash)
            if problem:
                why = f"record {row[0]} does not verify ({problem}): nothing from it on is archived"
                raise ChainBroken(row[0], why)
            taken.append(row)
            size += len(row[_BODY])
            prev_seq, prev_hash = row[0], row[_HASH]
    return taken


def remove(db: Database, segment: str, rows: Sequence[Row], *, sha256: str, now_us: int) -> None:
    """Delete exactly `rows` (verified in their segment file) and record the segment and their ids, in one transaction.

    Raises:
        StoreError: The chain's start moved since `rows` were read (another archive ran), or the
            rows stored are no longer exactly `rows`: nothing is deleted.
    """
    b = Boundary.of(rows)
    with db.write() as cur:
        after, prev_hash = chain_start(cur)
        if prev_hash != b.prev_hash:
            raise StoreError(
                f"the chain now starts after record {after}, not where {segment} begins: another archive ran;"
                " nothing was deleted"
            )
        cur.execute(
            db.sql(f"SELECT {_ROW} FROM events WHERE seq >= :first AND seq <= :last ORDER BY seq"),
            {"first": b.first_seq, "last": b.last_seq},
        )
        same, at = True, 0
        while same and (batch := cur.fetchmany(1000)):  # a batch at a time: a segment's rows are many
            same = [tuple(r) for r in batch] == list(rows[at : at + len(batch)])
            at += len(batch)
        if not same or at != len(rows):
            raise StoreError(f"the records {b.first_seq} to {b.last_seq} changed since {segment} was written")
        cur.execute(db.sql("SELECT MAX(seq) FROM events"))
        if int(cur.fetchone()[0]) <= b.last_seq:
            raise StoreError("the newest record is never archived")
        _rollup.subtract(db, cur, b.first_seq, b.last_seq)  # summaries count the records in the database
        cur.execute(
            db.sql("DELETE FROM events WHERE seq >= :first AND seq <= :last"),
            {"first": b.first_seq, "last": b.last_seq},
        )
        if cur.rowcount != b.records:
            raise StoreError(f"deleting records {b.first_seq} to {b.last_seq} removed {cur.rowcount}, not {b.records}")
        cur.execute(
            db.sql(
                f"INSERT INTO archives ({_ARCHIVE_COLUMNS}, ids_listed) VALUES (:segment, :first_seq, :prev_hash,"
                " :last_seq, :last_hash, :records, :sha256, :first_at_us, :last_at_us, :archived_at_us, 1)"
            ),
            {"segment": segment, "sha256": sha256, "archived_at_us": now_us, **b.__dict__},
        )
        # A remote agent may re-send one of these records later (a lost acknowledgement):
        # ingest finds its id here and counts it a duplicate.
        cur.executemany(
            db.sql("INSERT INTO archived_ids (id, seq) VALUES (:id, :seq) ON CONFLICT (id) DO NOTHING"),
            [{"id": r[_ID], "seq": r[0]} for r in rows],
        )
