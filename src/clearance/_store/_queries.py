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

from . import _rollup
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

    A rare filter would make one query read the whole log, so the log is read in `Windows`:
    a page can then hold fewer than `limit` events (even none) with a cursor that goes on from
    where this search stopped.
    """
    where, params = matching(f, text)
    sql = db.sql(
        f"SELECT seq, hash, body FROM events WHERE {where} AND seq < :upper AND seq >= :lower"
        " ORDER BY seq DESC LIMIT :need"
    )
    rows: list[Any] = []
    with db.read() as cur:
        read = Windows(cur, before, budget)
        for lower, upper in read:
            cur.execute(sql, {**params, "upper": upper, "lower": lower, "need": limit + 1 - len(rows)})
            rows.extend(cur.fetchall())
            if len(rows) > limit:
                break
    page = [stored_event(r[0], r[1], r[2]) for r in rows[:limit]]
    if len(rows) > limit:
        return page, page[-1].seq
    return page, read.stopped


def matching(f: EventFilter, text: str | None) -> tuple[str, dict[str, Any]]:
    """The SQL condition (never empty) and parameters of a search: the filter, and `text` in the record."""
    where, params = _where(f)
    clauses = [where.removeprefix(" WHERE ")] if where else ["1 = 1"]
    if text:
        clauses.append("body LIKE :text ESCAPE '\\'")
        params["text"] = f"%{_escape_like(text)}%"
    return " AND ".join(clauses), params


class Windows:
    """Ranges of chain positions `(lower, upper)` to read, newest first, within about `budget` seconds.

    Starts below `before` (None: at the end of the log) with `FIRST_WINDOW` positions; each next
    window is up to four times the last, but no more than the time left can read at the pace
    the last one was read (the time between two steps is the caller's query). Ends at the start
    of the log, or when the time left reads fewer than `MIN_WINDOW`: then `stopped` is where a
    next page goes on from (None at the start of the log).
    """

    def __init__(self, cur: Any, before: int | None, budget: float = SEARCH_BUDGET_SECONDS) -> None:
        if before is None:
            cur.execute("SELECT MAX(seq) FROM events")
            before = int(cur.fetchone()[0] or 0) + 1
        self.upper = self.lower = before
        self.window = FIRST_WINDOW
        self.deadline = time.monotonic() + budget
        self.started: float | None = None
        self.stopped: int | None = before if before > 1 else None

    def __iter__(self) -> Windows:
        return self

    def __next__(self) -> tuple[int, int]:
        if self.started is not None:  # the last window was read: size the next one
            now = time.monotonic()
            per_second = (self.upper - self.lower) / max(now - self.started, 1e-4)
            self.upper = self.lower
            self.window = int(min(self.window * 4, per_second * (self.deadline - now)))
            self.stopped = self.upper if self.upper > 1 else None
            if self.upper <= 1 or self.window < MIN_WINDOW:
                raise StopIteration
        elif self.upper <= 1:
            raise StopIteration
        self.lower = max(self.upper - self.window, 1)
        self.started = time.monotonic()
        return self.lower, self.upper


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
            f" {db.total(_LLM_COST)},"
            " SUM(CASE WHEN kind = 'llm.call' AND cost_nusd IS NULL THEN 1 ELSE 0 END),"
            f" {db.total(_LLM_TOKENS)}, MIN(environment), MAX(seq)"
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
            Decimal(int(r[8] or 0)) / 10**9,
            r[9] or 0,
            int(r[10] or 0),
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


_LLM_COST = "CASE WHEN kind = 'llm.call' THEN cost_nusd ELSE 0 END"
_LLM_TOKENS = "CASE WHEN kind = 'llm.call' THEN tokens ELSE 0 END"


def usage(db: Database, f: EventFilter, by: GroupBy) -> list[UsageRow]:
    """LLM calls, tokens and cost grouped `by`; unpriced calls are counted apart, never as $0.

    Summed exactly from the hourly sums (`_rollup`, 0020) where they answer, else from the
    usage columns (0019) through the LLM calls' own index: no record's body is read, so no
    record can make the query fail. A day is a UTC day.
    """
    found = _rollup.summed(db, _rollup.Asked((by,), f.agent, f.session, f.since_us, f.until_us))
    rows: dict[str, UsageRow] = {}
    for (k,), (calls, cost, *counts, unpriced) in found.items():
        name = _utc_day(k) if by == "day" else str(k)
        row = rows.setdefault(name, UsageRow(name))
        row.calls += calls
        row.input_tokens += counts[0]
        row.cached_input_tokens += counts[1]
        row.output_tokens += counts[2]
        row.reasoning_tokens += counts[3]
        row.cost_usd += Decimal(cost) / 10**9
        row.unpriced_calls += unpriced
    return sorted(rows.values(), key=lambda r: r.key)


DAY_US = 86_400_000_000


def _utc_day(day: Any) -> str:
    try:
        return datetime.fromtimestamp(int(day) * 86_400, UTC).strftime("%Y-%m-%d")
    except (TypeError, ValueError, OverflowError, OSError):
        return "None"
