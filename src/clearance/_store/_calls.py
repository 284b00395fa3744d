"""The audit log a row per tool call: a call's records (decided → approval → executed) together.

The records of one call share its `call_id` (and its agent: another agent's records with the
same id are another call). A record of no call (an LLM call, a policy activation) is a row of
its own. Rows come newest first, each at its newest record that matches the search, like a mail
thread at its latest message; every row holds all of its call's records, whichever matched.

Paging: a row belongs to the page that holds its newest matching record. Its older records are
met again further down the log; the next page leaves out the calls that have a matching record
between its cursor and the head of the log when the first page was read (`Cursor.head`), so no
call is shown twice or skipped, and records written since do not move calls between pages.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._db import Database
from ._events import EventFilter, StoredEvent
from ._queries import SEARCH_BUDGET_SECONDS, Windows, matching
from ._shown import stored_event

STEPS = 50  # records of one call returned; the rest are counted (`more_steps`)
MORE_COUNTED = 50  # records past those counted at most (`more_capped`: there are more still)


@dataclass(frozen=True)
class Cursor:
    """Where the next page of calls goes on from: below `before`, as the log stood at `head`."""

    before: int
    head: int

    def __str__(self) -> str:
        return f"{self.before}.{self.head}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        """A cursor from its text, `<before>.<head>`.

        Raises:
            ValueError: It is not one.
        """
        before, _, head = text.partition(".")
        return cls(int(before), int(head))


@dataclass(frozen=True)
class CallRecords:
    """One row: a call's records, oldest first (or the one record that belongs to no call)."""

    agent: str | None
    call_id: str | None
    steps: list[StoredEvent]
    more_steps: int = 0
    more_capped: bool = False


_Key = tuple[str | None, str | None, int]  # (agent, call_id, 0), or (None, None, seq) for a record of no call


def calls(
    db: Database,
    f: EventFilter,
    *,
    text: str | None = None,
    cursor: Cursor | None = None,
    limit: int = 50,
    budget: float = SEARCH_BUDGET_SECONDS,
) -> tuple[list[CallRecords], Cursor | None]:
    """The calls with a record matching the search, newest first, and the cursor of the next page.

    The log is read in the same bounded windows as `search`, so a rare filter answers in about
    `budget` seconds with part of a page (even none) and a cursor that goes on from there.
    A row holds only its agent's records (an agent key's search is of its own agent's).
    """
    where, params = matching(f, text)
    scan = db.sql(
        f"SELECT seq, agent, call_id FROM events WHERE {where} AND seq < :upper AND seq >= :lower"
        " ORDER BY seq DESC LIMIT :need"
    )
    # Queries per call, on its id alone: an equality the call_id index answers whatever the
    # planner knows (with no statistics, PostgreSQL read a list of ids with a sequential scan).
    # Each is bounded: one call may hold any number of records.
    shown_earlier = db.sql(
        f"SELECT 1 FROM events WHERE call_id = :of_call AND agent = :of_agent AND {where}"
        " AND seq >= :before AND seq < :head LIMIT 1"
    )
    found: dict[_Key, int] = {}  # each row's newest matching record, in the order met
    seen: set[_Key] = set()  # the calls met, shown or not
    with db.read() as cur:
        read = Windows(cur, cursor.before if cursor else None, budget)
        head = cursor.head if cursor else read.upper
        for lower, upper in read:
            while len(found) <= limit:
                need = 4 * (limit + 1 - len(found))
                cur.execute(scan, {**params, "upper": upper, "lower": lower, "need": need})
                rows = cur.fetchall()
                for seq, agent, call_id in rows:
                    key: _Key = (agent, call_id, 0) if call_id is not None else (None, None, seq)
                    if key in seen or len(found) > limit:
                        continue
                    seen.add(key)
                    if call_id is None or cursor is None:
                        found[key] = seq
                        continue
                    # A matching record above the cursor (and below the head then): an earlier page showed it.
                    marks = {"of_call": call_id, "of_agent": agent, "before": cursor.before, "head": head}
                    cur.execute(shown_earlier, {**params, **marks})
                    if cur.fetchone() is None:
                        found[key] = seq
                if len(rows) < need:
                    break  # this window is read
                upper = rows[-1][0]  # more in this window, below the last read
            if len(found) > limit:
                break
        keys = list(found)[:limit]
        page = _records(db, cur, keys)
    if len(found) > limit:
        return page, Cursor(found[keys[-1]], head)
    return page, (Cursor(read.stopped, head) if read.stopped is not None else None)


def _records(db: Database, cur: Any, keys: list[_Key]) -> list[CallRecords]:
    """Each row with its records: a call's first `STEPS` (and how many more, up to `MORE_COUNTED`)."""
    first = db.sql(f"SELECT seq FROM events WHERE call_id = :c AND agent = :a ORDER BY seq LIMIT {STEPS + 1}")
    rest = db.sql(
        "SELECT count(*) FROM (SELECT 1 FROM events WHERE call_id = :c AND agent = :a AND seq > :after"
        f" LIMIT {MORE_COUNTED + 1}) AS more_steps"
    )
    shown: dict[_Key, list[int]] = {}
    more: dict[_Key, int] = {}
    for k in keys:
        if k[1] is None:
            shown[k] = [k[2]]
            continue
        cur.execute(first, {"c": k[1], "a": k[0]})
        seqs = [int(r[0]) for r in cur.fetchall()]
        shown[k] = seqs[:STEPS]
        if len(seqs) > STEPS:
            cur.execute(rest, {"c": k[1], "a": k[0], "after": seqs[STEPS - 1]})
            more[k] = int(cur.fetchone()[0])
    seqs = sorted(seq for wanted in shown.values() for seq in wanted)
    stored: dict[int, StoredEvent] = {}
    for start in range(0, len(seqs), 500):
        marks = {f"s{i}": v for i, v in enumerate(seqs[start : start + 500])}
        cur.execute(
            db.sql(f"SELECT seq, hash, body FROM events WHERE seq IN ({', '.join(':' + n for n in marks)})"), marks
        )
        stored.update((r[0], stored_event(r[0], r[1], r[2])) for r in cur.fetchall())
    return [
        CallRecords(
            k[0],
            k[1],
            [stored[s] for s in shown[k] if s in stored],
            min(more.get(k, 0), MORE_COUNTED),
            more.get(k, 0) > MORE_COUNTED,
        )
        for k in keys
    ]
