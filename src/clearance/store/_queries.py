"""Read-side queries: audit search with cursor paging, sessions, replay, usage summaries.

Every reader survives every record: a stored JSON text is decoded by `shown`, which never fails
and never differs silently from what is stored. Records written by older versions (or put in
the database by hand) may hold values no encoder returns: nested hundreds of levels deep, lone
surrogates, numbers beyond a double, text that is not JSON. They are returned in a marked form
and the record lists, under `$degraded`, how what is shown differs from what is stored.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from ..errors import StoreError
from . import _events as events
from ._db import Database
from ._events import EventFilter, StoredEvent, _where

GroupBy = Literal["model", "session", "agent", "day"]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# -- stored JSON as readers show it --------------------------------------------------------------

SHOWN_DEPTH = 100  # levels of a recorded value returned whole (what the API can encode is ~250)
PREVIEW = 4096  # characters of a record that is not JSON
DEGRADED = "$degraded"  # the key under which a record lists how it is shown differently
_TOO_DEEP = {"$truncated": f"nested deeper than {SHOWN_DEPTH} levels"}
_STRING_OR_BRACKET = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.S)
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_NOTE_DEEP = f'values nested deeper than {SHOWN_DEPTH} levels are cut there, marked {{"$truncated": …}}'
_NOTE_NUMBER = 'numbers beyond the range of a double are shown as their text, marked {"$number": …}'
_NOTE_SURROGATE = "lone surrogates (not Unicode text) are shown as their \\uXXXX escape"


@dataclass(frozen=True, slots=True)
class Shown:
    """A stored value as readers return it, and how that differs from what is stored.

    Attributes:
        value: What to return: plain JSON any encoder writes.
        notes: Each way it differs from the stored value (empty: it is the stored value).
    """

    value: Any
    notes: tuple[str, ...] = ()


def shown(text: str, *, record: bool = False) -> Shown:
    """Decode a stored JSON text for a reader; never fails.

    With `record`, the text is an audit record: each of its fields keeps `SHOWN_DEPTH` levels,
    and a record that is not a JSON object is returned as one that says so.
    """
    notes: dict[str, None] = {}

    def number(text: str) -> Any:
        value = float(text)
        if math.isfinite(value):
            return value
        notes[_NOTE_NUMBER] = None
        return {"$number": text}

    levels = SHOWN_DEPTH + 1 if record else SHOWN_DEPTH
    try:
        try:
            value = json.loads(text, parse_float=number, parse_constant=number)
        except RecursionError:  # deeper than the decoder goes: cut the text first
            value = json.loads(_cut(text, levels), parse_float=number, parse_constant=number)
    except ValueError as exc:
        note = f"the stored text is not JSON ({exc}); its first {PREVIEW} characters are shown"
        unreadable = {"$unreadable": note, "$preview": text[:PREVIEW], "$length": len(text)}
        return Shown(unreadable, (note,))
    if record and not isinstance(value, dict):
        note = "the stored record is not a JSON object"
        return Shown({"$unreadable": note, "$value": _plain(value, SHOWN_DEPTH, notes)}, (note, *notes))
    if text.count("[") + text.count("{") <= levels and _SURROGATE_ESCAPE.search(text) is None:
        return Shown(value, tuple(notes))  # it cannot be too deep nor hold a lone surrogate: as decoded
    return Shown(_plain(value, levels, notes), tuple(notes))


def show(value: Any, *, record: bool = False) -> Shown:
    """`shown` for a value decoded elsewhere (by `json.loads`): the same marks, the same notes."""
    notes: dict[str, None] = {}
    return Shown(_plain(value, SHOWN_DEPTH + 1 if record else SHOWN_DEPTH, notes), tuple(notes))


def _plain(value: Any, levels: int, notes: dict[str, None]) -> Any:
    """`value` with containers below `levels` cut, lone surrogates escaped, non-finite floats marked."""
    if isinstance(value, str):
        return _text(value, notes)
    if isinstance(value, dict | list):
        if levels <= 0:
            notes[_NOTE_DEEP] = None
            return dict(_TOO_DEEP)
        if isinstance(value, list):
            return [_plain(v, levels - 1, notes) for v in value]
        return {_text(k, notes): _plain(v, levels - 1, notes) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        notes[_NOTE_NUMBER] = None
        return {"$number": repr(value)}
    return value


def _text(text: str, notes: dict[str, None]) -> str:
    if _LONE_SURROGATE.search(text) is None:
        return text
    notes[_NOTE_SURROGATE] = None
    return _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def _cut(text: str, levels: int) -> str:
    """JSON text with every container below `levels` replaced by the marker (strings skipped whole)."""
    out, level, kept_to = [], 0, 0
    marker = json.dumps(_TOO_DEEP)
    for token in _STRING_OR_BRACKET.finditer(text):
        char = token.group()
        if char in ("[", "{"):
            level += 1
            if level == levels + 1:
                out.append(text[kept_to : token.start()])
        elif char in ("]", "}"):
            if level == levels + 1:
                out.append(marker)
                kept_to = token.end()
            level -= 1
    out.append(text[kept_to:])
    return "".join(out)


def stored_event(seq: int, chain_hash: str, body: str) -> StoredEvent:
    """A stored record as readers return it: marked where it differs, with the reasons under `$degraded`."""
    found = shown(body, record=True)
    value = found.value
    if found.notes:
        value = {**value, DEGRADED: list(found.notes)}
    return StoredEvent(seq, chain_hash, value)


# -- search ------------------------------------------------------------------------------------

SEARCH_BUDGET_SECONDS = 0.2
FIRST_WINDOW = 20_000
MIN_WINDOW = 1_000  # less is not worth another query: answer with a cursor


def search(
    db: Database,
    f: EventFilter,
    *,
    text: str | None = None,
    before: int | None = None,
    limit: int = 100,
    budget: float = SEARCH_BUDGET_SECONDS,
) -> tuple[list[StoredEvent], int | None]:
    """Matching events, newest first, and the cursor for the next page (None at the end).

    `text` matches anywhere in the recorded event (its arguments, reason, error), literally.
    `before` is the cursor a previous page returned.

    A rare filter would make one query read the whole log, so the log is read in windows of
    chain positions, newest first, each up to four times the last, sized by how fast the last
    one was read to end within about `budget` seconds:
    a page can then hold fewer than `limit` events (even none) with a cursor that goes on from
    where this search stopped.
    """
    where, params = _where(f)
    clauses = [where.removeprefix(" WHERE ")] if where else []
    if text:
        clauses.append("body LIKE :text ESCAPE '\\'")
        params["text"] = f"%{_escape_like(text)}%"
    clauses.append("seq < :upper AND seq >= :lower")
    sql = db.sql(f"SELECT seq, hash, body FROM events WHERE {' AND '.join(clauses)} ORDER BY seq DESC LIMIT :need")
    rows: list[Any] = []
    deadline = time.monotonic() + budget
    with db.read() as cur:
        if before is None:
            cur.execute("SELECT MAX(seq) FROM events")
            before = int(cur.fetchone()[0] or 0) + 1
        upper, window = before, FIRST_WINDOW
        while upper > 1:
            lower = max(upper - window, 1)
            started = time.monotonic()
            cur.execute(sql, {**params, "upper": upper, "lower": lower, "need": limit + 1 - len(rows)})
            rows.extend(cur.fetchall())
            if len(rows) > limit:
                break
            now = time.monotonic()
            # The next window: four times this one, but no more than the time left can read.
            per_second = (upper - lower) / max(now - started, 1e-4)
            upper, window = lower, int(min(window * 4, per_second * (deadline - now)))
            if window < MIN_WINDOW:
                break
    page = [stored_event(r[0], r[1], r[2]) for r in rows[:limit]]
    if len(rows) > limit:
        return page, page[-1].seq
    return page, (upper if upper > 1 else None)


def records(db: Database, f: EventFilter, *, after: int = 0, batch: int = 2000) -> Iterator[StoredEvent]:
    """`events.iterate` for readers: every event matching `f` after `after`, oldest first, as shown.

    A session's replay, an export: read in batches of bounded ranges of positions, like
    `events.iterate`, and decoded by `stored_event`, so no record stops the read.
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
            if after >= top:
                cur.execute("SELECT MAX(seq) FROM events")
                top = int(cur.fetchone()[0] or 0)
                if after >= top:
                    return
            upto = top if narrow else min(after + events.ITERATE_WINDOW, top)
            cur.execute(sql, {**params, "after": after, "upto": upto, "n": batch})
            rows = cur.fetchall()
        for r in rows:
            yield stored_event(r[0], r[1], r[2])
        after = rows[-1][0] if len(rows) == batch else upto


def locate(db: Database, seq: int) -> events.Located | None:
    """`events.locate` for readers: the record at `seq` as shown, checked against the one before it.

    A record too deep to decode whole is still checked: its link and hash on the stored text,
    its indexed columns against the record as shown (which keeps every top-level field).
    """
    cols = (
        "seq, id, kind, at_us, agent, environment, session, tool, call_id, decision,"
        " cost_nusd, tokens, body, prev_hash, hash"
    )
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT {cols} FROM events WHERE seq = :seq"), {"seq": seq})
        row = cur.fetchone()
        if row is None:
            return None
        cur.execute(db.sql("SELECT seq, hash FROM events WHERE seq < :seq ORDER BY seq DESC LIMIT 1"), {"seq": seq})
        before = cur.fetchone()
        cur.execute("SELECT MAX(seq) FROM events")
        head = int(cur.fetchone()[0])
    prev_seq, prev_hash = (before[0], before[1]) if before else (0, events.GENESIS)
    found = stored_event(row[0], row[14], row[12])
    return events.Located(found, row[13], head, _check(row, prev_seq, prev_hash, found.body))


def verify(db: Database, *, batch: int = 5000) -> events.VerifyReport:
    """`events.verify` for readers: the whole chain recomputed, whatever a record holds."""
    prev_seq, prev_hash, checked = 0, events.GENESIS, 0
    sql = db.sql(
        "SELECT seq, id, kind, at_us, agent, environment, session, tool, call_id, decision,"
        " cost_nusd, tokens, body, prev_hash, hash FROM events WHERE seq > :after ORDER BY seq LIMIT :n"
    )
    while True:
        with db.read() as cur:
            cur.execute(sql, {"after": prev_seq, "n": batch})
            rows = cur.fetchall()
        if not rows:
            return events.VerifyReport(True, checked, prev_seq, prev_hash)
        for row in rows:
            problem = _check(row, prev_seq, prev_hash)
            if problem:
                return events.VerifyReport(False, checked, prev_seq, prev_hash, row[0], problem)
            prev_seq, prev_hash = row[0], row[14]
            checked += 1


def _check(row: Any, prev_seq: int, prev_hash: str, body: dict[str, Any] | None = None) -> str | None:
    """Why a stored row does not verify (`events._check_row`), also for a body too deep to decode."""
    try:
        return events._check_row(row, prev_seq, prev_hash)
    except (RecursionError, AttributeError):  # it links and hashes right; its body is too deep, or no object
        shown_body = body if body is not None else stored_event(row[0], row[14], row[12]).body
        stored_cols = dict(zip(events._COLUMNS, (row[2], *row[4:12]), strict=True))
        agrees = (
            shown_body.get("id") == row[1]
            and shown_body.get("at_us") == row[3]
            and events.columns_of(shown_body) == stored_cols
        )
        return None if agrees else "its indexed columns disagree with its recorded body (a column was changed)"


@dataclass
class SessionSummary:
    """One session at a glance."""

    session: str
    agent: str
    first_at_us: int
    last_at_us: int
    events: int
    tool_calls: int
    blocked: int
    llm_calls: int
    cost_usd: Decimal = field(default_factory=Decimal)
    unpriced_llm_calls: int = 0
    tokens: int = 0
    environment: str = ""


def sessions(db: Database, *, agent: str | None = None, limit: int = 100) -> list[SessionSummary]:
    """The most recently active sessions, newest first.

    The sessions are found from the end of the log backwards, in growing windows, until there
    are `limit` of them; only they are summed up (through the session index), so the answer
    does not read a large log whole.
    """
    only_agent = " AND agent = :agent" if agent else ""
    find = db.sql(
        "SELECT session, MAX(seq) FROM events WHERE seq >= :lower AND seq < :upper AND session IS NOT NULL"
        f"{only_agent} GROUP BY session"
    )
    last: dict[str, int] = {}
    with db.read() as cur:
        cur.execute("SELECT MAX(seq) FROM events")
        upper, window = int(cur.fetchone()[0] or 0) + 1, FIRST_WINDOW
        while upper > 1 and len(last) < limit:
            lower = max(upper - window, 1)
            cur.execute(find, {"lower": lower, "upper": upper, "agent": agent})
            for session, seq in cur.fetchall():
                last.setdefault(session, seq)  # a newer window saw it first
            upper, window = lower, window * 4
        chosen = sorted(last, key=last.__getitem__, reverse=True)[:limit]
        if not chosen:
            return []
        names = {f"s{i}": name for i, name in enumerate(chosen)}
        sql = (
            "SELECT session, MIN(agent), MIN(at_us), MAX(at_us), COUNT(*),"
            " SUM(CASE WHEN kind = 'tool_call.decided' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN kind = 'tool_call.decided' AND decision = 'block' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN kind = 'llm.call' THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN kind = 'llm.call' THEN cost_nusd ELSE 0 END),"
            " SUM(CASE WHEN kind = 'llm.call' AND cost_nusd IS NULL THEN 1 ELSE 0 END),"
            " SUM(CASE WHEN kind = 'llm.call' THEN tokens ELSE 0 END), MIN(environment), MAX(seq)"
            f" FROM events WHERE session IN ({', '.join(':' + n for n in names)}){only_agent} GROUP BY session"
        )
        cur.execute(db.sql(sql), {**names, "agent": agent})
        rows = sorted(cur.fetchall(), key=lambda r: -int(r[12]))
    return [
        SessionSummary(
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            r[5] or 0,
            r[6] or 0,
            r[7] or 0,
            Decimal(r[8] or 0) / 10**9,
            r[9] or 0,
            r[10] or 0,
            r[11] or "",
        )
        for r in rows
    ]


@dataclass
class UsageRow:
    """LLM usage of one group."""

    key: str
    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: Decimal = field(default_factory=Decimal)
    unpriced_calls: int = 0


def _field(db: Database, name: str, *, number: bool = False) -> str:
    """SQL for a field of the event's JSON body (`name` is ours, never a caller's)."""
    if db.dialect == "postgresql":
        text = f"(body::json ->> '{name}')"
        return f"{text}::bigint" if number else text
    return f"json_extract(body, '$.{name}')"


def _day(db: Database) -> str:
    if db.dialect == "postgresql":
        return "to_char(to_timestamp(at_us / 1000000.0) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
    return "strftime('%Y-%m-%d', at_us / 1000000, 'unixepoch')"


_TOKENS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")


def usage(db: Database, f: EventFilter, by: GroupBy) -> list[UsageRow]:
    """LLM calls, tokens and cost grouped `by`; unpriced calls are counted apart, never as $0.

    Summed by the database: only the grouped rows leave it. A record the database cannot read
    (not JSON, a NUL escape, a count beyond BIGINT) fails the query for every record; then the
    records are summed here instead, each as readers show it (slower, but an answer).
    """
    try:
        return _usage_summed_by_the_database(db, f, by)
    except StoreError:  # a record it cannot read, or the store is down (then reading fails too)
        return _usage_summed_here(db, f, by)


def _usage_summed_here(db: Database, f: EventFilter, by: GroupBy) -> list[UsageRow]:
    rows: dict[str, UsageRow] = {}
    for e in records(db, EventFilter(**{**f.__dict__, "kind": "llm.call"})):
        body = e.body
        key = _utc_day(body.get("at_us")) if by == "day" else str(body.get(by))
        row = rows.setdefault(key, UsageRow(key))
        row.calls += 1
        for name in _TOKENS:
            count = body.get(name)
            if isinstance(count, int) and not isinstance(count, bool):
                setattr(row, name, getattr(row, name) + count)
        cost = body.get("cost_nusd")
        if isinstance(cost, int) and not isinstance(cost, bool):
            row.cost_usd += Decimal(cost) / 10**9
        else:
            row.unpriced_calls += 1
    return sorted(rows.values(), key=lambda r: r.key)


def _utc_day(at_us: Any) -> str:
    try:
        return datetime.fromtimestamp(at_us / 1e6, UTC).strftime("%Y-%m-%d")
    except (TypeError, ValueError, OverflowError, OSError):
        return "None"


def _usage_summed_by_the_database(db: Database, f: EventFilter, by: GroupBy) -> list[UsageRow]:
    key = {"model": _field(db, "model"), "session": "session", "agent": "agent", "day": _day(db)}[by]
    where, params = _where(EventFilter(**{**f.__dict__, "kind": "llm.call"}))
    sums = ", ".join(f"SUM(COALESCE({_field(db, name, number=True)}, 0))" for name in _TOKENS)
    sql = (
        f"SELECT {key} AS k, COUNT(*), {sums}, SUM(cost_nusd),"
        f" SUM(CASE WHEN cost_nusd IS NULL THEN 1 ELSE 0 END) FROM events{where} GROUP BY k"
    )
    with db.read() as cur:
        cur.execute(db.sql(sql), params)
        found = cur.fetchall()
    rows = [
        UsageRow(
            key=str(r[0]),
            calls=int(r[1]),
            input_tokens=int(r[2] or 0),
            cached_input_tokens=int(r[3] or 0),
            output_tokens=int(r[4] or 0),
            reasoning_tokens=int(r[5] or 0),
            cost_usd=Decimal(int(r[6] or 0)) / 10**9,
            unpriced_calls=int(r[7] or 0),
        )
        for r in found
    ]
    return sorted(rows, key=lambda r: r.key)
