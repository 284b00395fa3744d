"""The audit log: versioned event records, the hash chain, verification and queries.

`hash_n = SHA-256(hash_{n-1} || body_n)`, where `body_n` is the canonical JSON of the event.
The indexed columns are copies of body fields; `verify` checks them against the body too.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .._canonical import ARGS_HASH_ALG, args_hash, canonical_json, legacy_args_hash
from .._text import escaped
from . import _rollup
from ._db import Database
from ._kinds import Kind

GENESIS = "0" * 64
EVENT_VERSION = 1
_COPIED = (
    "kind",
    "agent",
    "environment",
    "session",
    "tool",
    "call_id",
    "decision",
    "cost_nusd",
    "tokens",
)
# An LLM call's usage, for usage and spend by model (0019); read as `usage_columns` derives them.
USAGE_COUNTS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
_COLUMNS = (*_COPIED, "model", *USAGE_COUNTS)
_COLUMN_NAMES = frozenset(_COLUMNS)
MAX_MODEL_NAME = 200  # characters of a model name a record keeps (and its column holds)
_INT64 = 2**63 - 1
# Positional parameters, the copied columns first, for `append`: binding a tuple costs less
# than looking fourteen names up in a dict, on the path of every governed call.
_INSERT_ROW = {
    style: f"INSERT INTO events ({', '.join(_COLUMNS)}, id, at_us, body, prev_hash, hash)"
    f" VALUES ({', '.join([mark] * (len(_COLUMNS) + 5))})"
    for style, mark in (("sqlite", "?"), ("postgresql", "%s"))
}
# A batch this large goes to PostgreSQL by COPY: one statement instead of one per row (ingest
# of 500-record batches: see docs/performance.md, "Ingest").
_COPY_FROM = 16
_COPY_ROWS = f"COPY events ({', '.join(_COLUMNS)}, id, at_us, body, prev_hash, hash) FROM STDIN"
_HEAD = "SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1"
# Every column of a stored record, in the order `check_row` reads them (and archives keep them):
# its place, its body and chain links, then every column copied from the body.
ROW_COLUMNS = ("seq", "id", "at_us", "body", "prev_hash", "hash", *_COLUMNS)
_ROW = ", ".join(ROW_COLUMNS)
_START = "SELECT last_seq, last_hash FROM archives ORDER BY last_seq DESC LIMIT 1"


def new_id(prefix: str) -> str:
    """A new id with a readable prefix (`evt_…`, `call_…`, `apr_…`).

    48 bits of milliseconds then 80 random bits, so ids sort by time and index inserts land at
    the end of the b-tree.
    """
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{_random.getrandbits(80):020x}"


def iso(at_us: int) -> str:
    """ISO 8601 UTC text of a microsecond timestamp."""
    return datetime.fromtimestamp(at_us / 1e6, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    """One audit record ready to append: its canonical body and the columns copied from it."""

    id: str
    at_us: int
    body: str
    columns: Mapping[str, Any]


# Ids need uniqueness, not secrecy: a PRNG seeded from the OS (and reseeded in a forked child)
# costs 0.2 µs where os.urandom costs 5 µs on some VMs.
_random = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(32)))
_RAW = f"\x00raw:{os.urandom(16).hex()}:"  # a placeholder no argument can forge


def make_event(kind: Kind, at_us: int, fields: Mapping[str, Any], *, raw: Mapping[str, str] | None = None) -> Event:
    """Build a version-1 event. `fields` must hold agent and environment; None values are kept.

    The body is the whole record; the columns are derived from it. `raw` gives fields already
    serialised as canonical JSON (the arguments, serialised once for their hash), spliced in
    unchanged.
    """
    event_id = new_id("evt")
    body = {"v": EVENT_VERSION, "id": event_id, "kind": kind, "at_us": at_us, **fields}
    if not raw:
        return Event(event_id, at_us, canonical_json(body), columns_of(body))
    for name in raw:
        body[name] = _RAW + name
    text = canonical_json(body)
    for name, value in raw.items():
        text = text.replace(canonical_json(_RAW + name), value, 1)
    if _COLUMN_NAMES.isdisjoint(raw):  # the arguments: no column reads them
        return Event(event_id, at_us, text, columns_of(body))
    return Event(event_id, at_us, text, columns_of(json.loads(text)))


def columns_of(body: Mapping[str, Any]) -> dict[str, Any]:
    """The indexed columns of an event, derived from its body."""
    get = body.get
    cols = {name: get(name) for name in _COPIED}
    cols.update(usage_columns(body))
    return cols


def usage_columns(body: Mapping[str, Any]) -> dict[str, Any]:
    """The usage columns of an event: its model and token counts, as every store can hold them.

    The model is text (a record written before names were capped: its first `MAX_MODEL_NAME`
    characters, a NUL or lone surrogate escaped as readers show it); a count is a whole number
    from 0 to 2^63 - 1. Anything else is None, as a usage summary never counted it.
    """
    if _NO_USAGE.keys().isdisjoint(body):  # most records: no call of a model
        return dict(_NO_USAGE)
    model = body.get("model")
    cols: dict[str, Any] = {"model": escaped(model)[:MAX_MODEL_NAME] if type(model) is str else None}
    for name in USAGE_COUNTS:
        count = body.get(name)
        cols[name] = count if type(count) is int and 0 <= count <= _INT64 else None
    return cols


_NO_USAGE: dict[str, Any] = dict.fromkeys(("model", *USAGE_COUNTS))


def chain_hash(prev_hash: str, body: str) -> str:
    """The chain hash of a record after `prev_hash`."""
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _pipelined(cur: Any) -> bool:
    """Whether a PostgreSQL cursor's connection is in pipeline mode (where COPY is refused)."""
    return bool(cur.connection.pgconn.pipeline_status)


def append(db: Database, cur: Any, events: Sequence[Event]) -> None:
    """Append events to the chain inside a write transaction of `db` (cursor `cur`)."""
    prev = db.chain_tip
    if prev is None:  # the first append of this transaction
        cur.execute(_HEAD)
        row = cur.fetchone()
        prev = row[1] if row else GENESIS
    rows = []
    for e in events:
        h = hashlib.sha256((prev + e.body).encode("utf-8")).hexdigest()  # chain_hash, inline
        rows.append((*map(e.columns.get, _COLUMNS), e.id, e.at_us, e.body, prev, h))
        prev = h
    if len(rows) == 1:
        cur.execute(_INSERT_ROW[db.dialect], rows[0])
    elif len(rows) >= _COPY_FROM and db.dialect == "postgresql" and not _pipelined(cur):
        with cur.copy(_COPY_ROWS) as copy:  # rows land in the order written: the chain's order
            for row in rows:
                copy.write_row(row)
    else:
        cur.executemany(_INSERT_ROW[db.dialect], rows)
    if any(e.columns.get("kind") == "llm.call" for e in events):
        _rollup.add_newest(db, cur, len(rows))  # the hourly usage sums, in the same transaction
    db.chain_tip = prev
    db.last_appended = events[-1].id if events else db.last_appended
    db.appended = True  # the commit wakes the event sinks (`_db.on_commit`)


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of recomputing the chain.

    Attributes:
        ok: True when every record verifies.
        checked: Records checked.
        head_seq: Chain position of the last record (0 when empty).
        head_hash: Its hash: keep it elsewhere to detect truncation later.
        broken_seq: The first record that does not verify, when one does not.
        problem: What is wrong with it.
        checkpoints: Signed checkpoints found in the chain whose signature verifies.
        checkpoint_seq: The chain position the latest of them signs (None: none).
    """

    ok: bool
    checked: int
    head_seq: int
    head_hash: str
    broken_seq: int | None = None
    problem: str | None = None
    checkpoints: int = 0
    checkpoint_seq: int | None = None


RowCheck = Callable[[Sequence[Any], int, str], str | None]


def chain_start(cur: Any) -> tuple[int, str]:
    """Where the chain in the database starts: the last archived record's position and hash.

    (0, GENESIS) when nothing was archived (`clearance audit archive`).
    """
    cur.execute(_START)
    row = cur.fetchone()
    return (int(row[0]), row[1]) if row else (0, GENESIS)


def verify(db: Database, *, batch: int = 5000, also: RowCheck | None = None) -> VerifyReport:
    """Recompute the chain from its start and report the first record that does not match.

    The chain starts at GENESIS, or after the last archived record: the first record left must
    link to that record's hash (so deleting it is detected like any other). `also` is asked
    about each record that verifies, with the row (its `ROW_COLUMNS`) and the position and hash
    before it; a text it returns is that record's problem (the
    signed checkpoints' check, `_integrity`).
    """
    with db.read() as cur:
        prev_seq, prev_hash = chain_start(cur)
    checked = 0
    sql = db.sql(f"SELECT {_ROW} FROM events WHERE seq > :after ORDER BY seq LIMIT :n")
    while True:
        with db.read() as cur:
            cur.execute(sql, {"after": prev_seq, "n": batch})
            rows = cur.fetchall()
        if not rows:
            return VerifyReport(True, checked, prev_seq, prev_hash)
        for row in rows:
            seq = row[0]
            problem = check_row(row, prev_seq, prev_hash)
            if problem is None and also is not None:
                problem = also(row, prev_seq, prev_hash)
            if problem:
                return VerifyReport(False, checked, prev_seq, prev_hash, seq, problem)
            prev_seq, prev_hash = seq, row[5]
            checked += 1


def verify_span(db: Database, first_seq: int, last_seq: int, *, batch: int = 5000) -> tuple[str | None, str]:
    """Whether the records `first_seq` to `last_seq` are one intact stretch of the chain.

    Each must hash right and link to the one before it (the first to the hash it names: what
    comes before it is vouched for by whatever signs a hash after it). Returns the first
    problem (None: none) and the last record's hash.
    """
    sql = db.sql(f"SELECT {_ROW} FROM events WHERE seq >= :after AND seq <= :last ORDER BY seq LIMIT :n")
    prev: tuple[int, str] | None = None
    after = first_seq
    while True:
        with db.read() as cur:
            cur.execute(sql, {"after": after, "last": last_seq, "n": batch})
            rows = cur.fetchall()
        if prev is None and (not rows or rows[0][0] != first_seq):
            return f"record {first_seq} is not in the database", ""
        if not rows:
            break
        for row in rows:
            problem = check_row(row, *(prev or (row[0] - 1, row[4])))
            if problem:
                return f"record {row[0]}: {problem}", ""
            prev = (row[0], row[5])
        after = rows[-1][0] + 1
    if prev is None or prev[0] != last_seq:
        return f"record {last_seq} is not in the database", ""
    return None, prev[1]


@dataclass(frozen=True)
class Located:
    """One record, where it sits in the chain, and whether it verifies against its predecessor.

    Attributes:
        event: The record.
        prev_hash: The hash it links to.
        head_seq: The chain's last position now.
        problem: Why it does not verify (None when it does).
    """

    event: StoredEvent
    prev_hash: str
    head_seq: int
    problem: str | None


def locate(db: Database, seq: int) -> Located | None:
    """The record at `seq`, checked against the one before it (None: none, or archived)."""
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT {_ROW} FROM events WHERE seq = :seq"), {"seq": seq})
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(db.sql("SELECT seq, hash FROM events WHERE seq < :seq ORDER BY seq DESC LIMIT 1"), {"seq": seq})
        before = cur.fetchone()
        cur.execute(_HEAD)
        head = cur.fetchone()
        prev_seq, prev_hash = (before[0], before[1]) if before else chain_start(cur)
    problem = check_row(row, prev_seq, prev_hash)
    return Located(_decoded((row[0], row[5], row[3])), row[4], head[0], problem)


def check_row(row: Sequence[Any], prev_seq: int, prev_hash: str) -> str | None:
    """Why a stored record (its `ROW_COLUMNS`) does not follow the record (`prev_seq`, `prev_hash`), or None."""
    seq, event_id, at_us, body, stored_prev, stored_hash = row[:6]
    if stored_prev != prev_hash:
        if seq != prev_seq + 1:
            return f"records {prev_seq + 1} to {seq - 1} before it are missing (deleted?)"
        return f"does not follow record {prev_seq}: a record before it was deleted or changed"
    if chain_hash(prev_hash, body) != stored_hash:
        return "its content does not match its hash (the record was changed)"
    whole = True
    try:
        data = json.loads(body)
    except RecursionError:  # it links and hashes right; too deep to decode: check it as shown
        data, whole = _decoded((seq, stored_hash, body)).body, False
    except ValueError:
        return "its body is not valid JSON"
    if not isinstance(data, dict):
        return "its body is not a JSON object"
    cols = dict(zip(_COLUMNS, row[6:], strict=True))
    if data.get("id") != event_id or data.get("at_us") != at_us or columns_of(data) != cols:
        return "its indexed columns disagree with its recorded body (a column was changed)"
    return args_problem(data) if whole else None


def args_problem(data: Mapping[str, Any]) -> str | None:
    """Whether a decided call's `args_hash` matches the arguments it records (when it records them whole).

    Recomputed with the record's `args_hash_alg`; records written before it was recorded were
    hashed over sorted orjson text, and still verify.
    """
    if data.get("kind") != "tool_call.decided" or data.get("args_redacted") or data.get("args_truncated"):
        return None
    recorded, args = data.get("args_hash"), data.get("args")
    if not isinstance(recorded, str) or not isinstance(args, dict):
        return None
    alg = data.get("args_hash_alg")
    try:
        if alg == ARGS_HASH_ALG:
            computed = args_hash(args)
        elif alg is None:  # sorted orjson; before that, the standard library's sorted JSON
            computed = legacy_args_hash(args)
            if computed != recorded and legacy_args_hash(args, stdlib=True) == recorded:
                computed = recorded
        else:
            return f"its args_hash_alg {str(alg)[:40]!r} is not one this version knows"
    except ValueError:
        return "its arguments cannot be hashed as recorded (they are not I-JSON)"
    if computed != recorded:
        return "its args_hash does not match the arguments it records"
    return None


@dataclass(frozen=True)
class EventFilter:
    """Which events a query returns. Every field is optional."""

    agent: str | None = None
    session: str | None = None
    tool: str | None = None
    kind: str | None = None
    decision: str | None = None
    call_id: str | None = None
    since_us: int | None = None
    until_us: int | None = None


def _where(f: EventFilter) -> tuple[str, dict[str, Any]]:
    clauses, params = [], {}
    for name in ("agent", "session", "tool", "kind", "decision", "call_id"):
        value = getattr(f, name)
        if value is not None:
            clauses.append(f"{name} = :{name}")
            params[name] = value
    if f.since_us is not None:
        clauses.append("at_us >= :since_us")
        params["since_us"] = f.since_us
    if f.until_us is not None:
        clauses.append("at_us < :until_us")
        params["until_us"] = f.until_us
    return (" WHERE " + " AND ".join(clauses)) if clauses else "", params


@dataclass(frozen=True)
class StoredEvent:
    """An event as stored: its chain position, hash and decoded body."""

    seq: int
    hash: str
    body: dict[str, Any]


def query(db: Database, f: EventFilter, *, limit: int | None = None, newest_first: bool = False) -> list[StoredEvent]:
    """Events matching `f`, oldest first (or the newest `limit`, still returned oldest first)."""
    where, params = _where(f)
    order = "DESC" if newest_first else "ASC"
    sql = f"SELECT seq, hash, body FROM events{where} ORDER BY seq {order}"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    with db.read() as cur:
        cur.execute(db.sql(sql), params)
        rows = cur.fetchall()
    events = [_decoded(r) for r in rows]
    return events[::-1] if newest_first else events


ITERATE_WINDOW = 50_000


def iterate(db: Database, f: EventFilter, *, after: int = 0, batch: int = 2000) -> Iterator[StoredEvent]:
    """Every event matching `f` after chain position `after`, oldest first, read in batches.

    Each query covers a bounded range of positions: on PostgreSQL a `kind` filter alone would
    otherwise be planned on that kind's partial index and sort all its rows for every batch
    (20,000 decisions of a million events took 5.8 s). A session or call, which have indexes of
    their own and few events, is read in one range.
    """
    where, params = _where(f)
    joiner = " AND " if where else " WHERE "
    sql = db.sql(
        f"SELECT seq, hash, body FROM events{where}{joiner}seq > :after AND seq <= :upto ORDER BY seq LIMIT :n"
    )
    narrow = f.session is not None or f.call_id is not None
    top = 0
    while True:
        with db.read() as cur:
            if after >= top:  # what was there when we started, then whatever came since
                cur.execute("SELECT MAX(seq) FROM events")
                top = int(cur.fetchone()[0] or 0)
                if after >= top:
                    return
            upto = top if narrow else min(after + ITERATE_WINDOW, top)
            cur.execute(sql, {**params, "after": after, "upto": upto, "n": batch})
            rows = cur.fetchall()
        for r in rows:
            yield _decoded(r)
        after = rows[-1][0] if len(rows) == batch else upto


def find(db: Database, id_: str) -> list[StoredEvent]:
    """The event with this id, or every event of the call or approval with this id."""
    with db.read() as cur:
        cur.execute(db.sql("SELECT seq, hash, body FROM events WHERE id = :id"), {"id": id_})
        rows = cur.fetchall()
        if not rows:
            if id_.startswith("apr_"):
                cur.execute(db.sql("SELECT call_id FROM approvals WHERE id = :id"), {"id": id_})
                hit = cur.fetchone()
                id_ = hit[0] if hit else id_
            cur.execute(
                db.sql("SELECT seq, hash, body FROM events WHERE call_id = :id ORDER BY seq"),
                {"id": id_},
            )
            rows = cur.fetchall()
    return [_decoded(r) for r in rows]


def _decoded(row: Sequence[Any]) -> StoredEvent:
    """A stored record as every reader gets it: whatever it holds, marked where it differs."""
    from ._shown import stored_event  # _shown builds on this module

    return stored_event(row[0], row[1], row[2])


# An id is taken while its record is here, and after it was archived (0021)
_ID_TABLES = ("events", "archived_ids")


def _taken(ids: str) -> str:
    """The ids of `ids` (an array expression) that are taken, on PostgreSQL."""
    return " UNION ALL ".join(f"SELECT id FROM {t} WHERE id = ANY({ids})" for t in _ID_TABLES)


_TAKEN_LISTED = _taken("%(ids)s")
_TAKEN_JOINED = _taken("string_to_array(%(ids)s, ',')")


def ingest(
    db: Database,
    bodies: Sequence[dict[str, Any]],
    *,
    then: Callable[[Any, list[dict[str, Any]]], Sequence[Event]] | None = None,
) -> tuple[int, int]:
    """Append events that arrived from elsewhere, skipping ids already stored or archived (idempotent).

    Each body must already be a complete, validated event. `then` is given the cursor and the
    bodies that were new, in the same transaction, and returns more records to append (what
    they caused). Returns (appended, duplicates).
    """
    ids = [b["id"] for b in bodies]
    with db.write() as cur:
        seen: set[str] = set()
        restore = None
        if db.dialect == "postgresql":
            # By the unique index, whatever the statistics say: a table grown since its last
            # ANALYZE (a fresh store under a burst of ingest) got a sequential scan per batch,
            # 42 ms a batch at 15,000 records and growing with the table (bench/ingest.py).
            cur.execute("SELECT current_setting('enable_seqscan'), set_config('enable_seqscan', 'off', true)")
            restore = cur.fetchone()[0]
            # One parameter, the ids joined: a statement of 500 parameters was parsed by psycopg
            # at every batch (it caches only short ones), and a list is dumped item by item.
            joined = ",".join(ids)
            if all(ids) and joined.count(",") == len(ids) - 1:
                cur.execute(_TAKEN_JOINED, {"ids": joined})
            else:  # an id with a comma in it, or empty (never one of ours)
                cur.execute(_TAKEN_LISTED, {"ids": ids})
            seen.update(r[0] for r in cur.fetchall())
        else:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                for table in _ID_TABLES:
                    cur.execute(f"SELECT id FROM {table} WHERE id IN ({marks})", chunk)
                    seen.update(r[0] for r in cur.fetchall())
        if restore is not None:
            cur.execute("SELECT set_config('enable_seqscan', %s, true)", (restore,))
        fresh: list[Event] = []
        new: list[dict[str, Any]] = []
        for body in bodies:
            if body["id"] in seen:
                continue
            seen.add(body["id"])  # a duplicate inside one batch counts once
            fresh.append(Event(body["id"], body["at_us"], canonical_json(body), columns_of(body)))
            new.append(body)
        if fresh:
            append(db, cur, fresh)
            if then is not None:
                caused = then(cur, new)
                if caused:
                    append(db, cur, caused)
    return len(fresh), len(bodies) - len(fresh)
