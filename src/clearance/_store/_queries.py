"""Read-side queries: audit search with cursor paging, sessions, replay, usage summaries.

Every reader survives every record: a stored JSON text is decoded by `_shown.shown`, which never
fails and never differs silently from what is stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from ..errors import StoreError
from . import _events as events
from ._db import Database
from ._events import EventFilter, StoredEvent, _where
from ._shown import stored_event

GroupBy = Literal["model", "session", "agent", "day"]


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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
    for e in events.iterate(db, EventFilter(**{**f.__dict__, "kind": "llm.call"})):
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
