"""LLM usage per hour, agent and model (0020): what usage and spend summaries read instead of every call.

`usage_hours` holds, for each UTC hour, agent and model, the LLM calls' count, their unpriced
count and their sums. Every change to it is made by one statement that sums records of `events`
(`_SUMMED`), in the transaction that appends or archives them: appending adds the new calls,
archiving subtracts the calls it moves out, and the migration sums every call already written.
So the table always equals the sums of the LLM calls in the database, which is what a summary
the table cannot answer (by session, or a part of an hour) sums from the records themselves.

A sum is kept exact in two 64-bit halves, `name_hi` (the value shifted right by 32 bits) and
`name_lo` (its low 32 bits): counts and costs an agent reports can be near 2^63, and adding two
of them overflows a 64-bit integer (SQLite's `SUM` then fails; its `TOTAL` rounds). The halves of
a billion calls still fit.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ._db import Database

HOUR_US = 3_600_000_000
INT64_MAX = 2**63 - 1
DAY_US = 86_400_000_000
# What each call adds up; a call's count, and its count when unpriced, are kept besides.
SUMMED = ("cost_nusd", "input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens")
_HALVES = [f"{name}_{half}" for name in SUMMED for half in ("hi", "lo")]
_KEY = ("hour_us", "agent", "unnamed", "model")
_HOUR = f"at_us - ((at_us % {HOUR_US}) + {HOUR_US}) % {HOUR_US}"  # the hour it is in, before 1970 too


def halves(expr: str) -> str:
    """SQL summing `expr` (a 64-bit integer column, or NULL) exactly, as its high and low halves."""
    return f"COALESCE(SUM({expr} >> 32), 0), COALESCE(SUM({expr} & 4294967295), 0)"


def _summed(where: str, sign: str = "", source: str = "events") -> str:
    """The statement adding (`sign` '-': subtracting) the LLM calls of `source` `where` to the table."""
    sums = ", ".join(f"{sign}COALESCE(SUM({n} >> 32), 0), {sign}COALESCE(SUM({n} & 4294967295), 0)" for n in SUMMED)
    names = ", ".join((*_KEY, "calls", "unpriced", *_HALVES))
    added = ", ".join(f"{n} = usage_hours.{n} + excluded.{n}" for n in ("calls", "unpriced", *_HALVES))
    return (
        f"INSERT INTO usage_hours ({names})"
        f" SELECT {_HOUR}, agent, CASE WHEN model IS NULL THEN 1 ELSE 0 END, COALESCE(model, ''),"
        f" {sign}COUNT(*), {sign}SUM(CASE WHEN cost_nusd IS NULL THEN 1 ELSE 0 END), {sums}"
        f" FROM {source} WHERE kind = 'llm.call' AND {where} GROUP BY 1, 2, 3, 4"
        f" ON CONFLICT ({', '.join(_KEY)}) DO UPDATE SET {added}"
    )


BACKFILL = _summed("1 = 1")
_SUBTRACT = _summed("seq >= :first AND seq <= :last", "-")
_COLUMNS = ", ".join(("kind", "at_us", "agent", "model", *SUMMED))


def add_newest(db: Database, cur: Any, n: int) -> None:
    """Count the `n` records just appended in this write transaction (the newest `n`).

    `n` is written into the statement: PostgreSQL then plans for `n` rows (for a bound it cannot
    see, it planned for a third of the log, and compiled the plan with JIT: 0.2 s an append).
    """
    newest = f"(SELECT {_COLUMNS} FROM events ORDER BY seq DESC LIMIT {int(n)}) AS events"
    cur.execute(db.sql(_summed("1 = 1", source=newest)), {})


def subtract(db: Database, cur: Any, first: int, last: int) -> None:
    """Take the records from `first` to `last`, about to be deleted in this transaction, out of the table."""
    cur.execute(db.sql(_SUBTRACT), {"first": first, "last": last})
    cur.execute("DELETE FROM usage_hours WHERE calls = 0")


def differences(db: Database, limit: int = 5) -> tuple[int, list[str]]:
    """Where `usage_hours` is not the sums of the LLM calls in `events`: how many rows, and the first few.

    The table is derived, not chained: `audit verify` proves the records, and this shows whether
    the summaries the costs pages and budgets read still add them up (a changed row, a lost
    update). Both sides are read by one statement, so an append or an archive running meanwhile
    is in both or in neither.
    """
    width = 2 + len(_HALVES)  # calls, unpriced, then each sum's halves: e* from the records, k* as kept
    counted = ["COUNT(*)", "SUM(CASE WHEN cost_nusd IS NULL THEN 1 ELSE 0 END)"]
    for name in SUMMED:
        counted += [f"COALESCE(SUM({name} >> 32), 0)", f"COALESCE(SUM({name} & 4294967295), 0)"]
    records = ", ".join([f"{expr} AS e{i}" for i, expr in enumerate(counted)] + [f"0 AS k{i}" for i in range(width)])
    table = ", ".join(["0"] * width + ["calls", "unpriced", *_HALVES])
    side = ", ".join(f"SUM(e{i}), SUM(k{i})" for i in range(width))
    sql = (
        f"SELECT hour_us, agent, unnamed, model, {side} FROM ("
        f" SELECT {_HOUR} AS hour_us, agent, CASE WHEN model IS NULL THEN 1 ELSE 0 END AS unnamed,"
        f" COALESCE(model, '') AS model, {records} FROM events WHERE kind = 'llm.call' GROUP BY 1, 2, 3, 4"
        f" UNION ALL SELECT hour_us, agent, unnamed, model, {table} FROM usage_hours"
        ") AS sides GROUP BY hour_us, agent, unnamed, model"
    )
    with db.read() as cur:
        cur.execute(db.sql(sql), {})
        rows = cur.fetchall()
    wrong = []
    for r in rows:
        pairs = r[4:]
        expected = _totals([pairs[2 * i] for i in range(width)])
        stored = _totals([pairs[2 * i + 1] for i in range(width)])
        if expected != stored:
            wrong.append((tuple(r[:4]), expected, stored))
    wrong.sort(key=lambda w: (int(w[0][0]), str(w[0][1]), int(w[0][2]), str(w[0][3])))
    shown = []
    for (hour, agent, unnamed, model), expected, stored in wrong[:limit]:
        what = ", ".join(
            f"{name} {b:,} where the records sum to {a:,}"
            for name, a, b in zip(("calls", "unpriced", *SUMMED), expected, stored, strict=True)
            if a != b
        )
        named_as = "no model" if unnamed else f"model {model!r}"
        shown.append(f"the hour from {_utc(int(hour))}, agent {agent!r}, {named_as}: {what}")
    return len(wrong), shown


def _utc(at_us: int) -> str:
    try:
        return datetime.fromtimestamp(at_us / 1e6, UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (OverflowError, ValueError, OSError):
        return f"{at_us} µs"


def _totals(row: Any) -> list[int]:
    """Calls, unpriced calls and each of SUMMED, from a row of those (the sums in halves)."""
    out = [int(row[0] or 0), int(row[1] or 0)]
    for i in range(2, 2 + 2 * len(SUMMED), 2):
        out.append((int(row[i] or 0) << 32) + int(row[i + 1] or 0))
    return out


def rebuild(db: Database) -> None:
    """Sum `usage_hours` again from every LLM call in `events` (in a write transaction: no append meanwhile)."""
    with db.write() as cur:
        cur.execute("DELETE FROM usage_hours")
        cur.execute(db.sql(BACKFILL), {})


Sums = list[int]  # calls, then each of SUMMED, then unpriced calls
Group = Literal["model", "agent", "day", "session", "bucket"]


@dataclass(frozen=True)
class Asked:
    """Which LLM calls a summary sums, and by what (one group or more, the key a tuple of them).

    A "bucket" is the one of `size` µs the call is in, counted from `since_us`.
    """

    by: tuple[Group, ...]
    agent: str | None = None
    session: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    size: int = HOUR_US


def summed(db: Database, q: Asked) -> dict[tuple[Any, ...], Sums]:
    """The sums of each group's LLM calls, exactly as summing the records gives them.

    Whole hours are read from `usage_hours` when the question allows it (not by or of a
    session, and buckets that are whole hours from a whole hour); the rest of the range, the
    part of an hour at either end and any time before 1970, is summed from the records
    (through their usage index).
    """
    hourly = "bucket" not in q.by or (q.since_us or 0) % HOUR_US == 0 == q.size % HOUR_US
    if q.session is not None or "session" in q.by or not hourly:
        return _from_events(db, q, q.since_us, q.until_us)
    start = -(-max(q.since_us or 0, 0) // HOUR_US) * HOUR_US
    end = None if q.until_us is None else q.until_us // HOUR_US * HOUR_US
    if end is not None and end <= start or start > INT64_MAX:  # no whole hour (past 2^63 − 1: none a store holds)
        return _from_events(db, q, q.since_us, q.until_us)
    found = _from_hours(db, q, start, end)
    for since, until in ((q.since_us, start), (end, q.until_us)):
        if since is None and until is None or since is not None and until is not None and since >= until:
            continue
        for key, sums in _from_events(db, q, since, until).items():
            found[key] = [a + b for a, b in zip(found.get(key, [0] * len(sums)), sums, strict=True)]
    return found


def _keys(q: Asked, at: str) -> str:
    """The SQL of each group's key, named k0, k1, …: `at` is the time column."""
    out: list[str] = []
    for group in q.by:
        if group == "bucket":
            key = f"({at} - CAST(:origin AS BIGINT)) / CAST(:size AS BIGINT)"
        elif group == "day":
            key = f"{at} / {DAY_US}"
        elif group == "model" and at == "hour_us":
            key = "CASE WHEN unnamed = 1 THEN NULL ELSE model END"
        else:
            key = group  # a column name of ours, never a caller's
        out.append(f"{key} AS k{len(out)}")
    return ", ".join(out)


def _from_events(db: Database, q: Asked, since: int | None, until: int | None) -> dict[tuple[Any, ...], Sums]:
    clauses, params = ["kind = 'llm.call'"], _params(q)
    for name, value in (("agent", q.agent), ("session", q.session)):
        if value is not None:
            clauses.append(f"{name} = :{name}")
            params[name] = value
    _range(clauses, params, "at_us", since, until)
    sums = ", ".join(halves(name) for name in SUMMED)
    sql = (
        f"SELECT {_keys(q, 'at_us')}, COUNT(*), {sums}, SUM(CASE WHEN cost_nusd IS NULL THEN 1 ELSE 0 END)"
        f" FROM events WHERE {' AND '.join(clauses)} GROUP BY {_numbers(q)}"
    )
    return _read(db, sql, params, len(q.by))


def _from_hours(db: Database, q: Asked, start: int, end: int | None) -> dict[tuple[Any, ...], Sums]:
    clauses, params = ["1 = 1"], _params(q)
    if q.agent is not None:
        clauses.append("agent = :agent")
        params["agent"] = q.agent
    _range(clauses, params, "hour_us", start, end)
    sums = ", ".join(f"SUM({n})" for n in _HALVES)
    sql = (
        f"SELECT {_keys(q, 'hour_us')}, SUM(calls), {sums}, SUM(unpriced) FROM usage_hours"
        f" WHERE {' AND '.join(clauses)} GROUP BY {_numbers(q)}"
    )
    return _read(db, sql, params, len(q.by))


def _numbers(q: Asked) -> str:
    return ", ".join(str(i + 1) for i in range(len(q.by)))


def _params(q: Asked) -> dict[str, Any]:
    return {"origin": q.since_us or 0, "size": q.size} if "bucket" in q.by else {}


def _range(clauses: list[str], params: dict[str, Any], column: str, since: int | None, until: int | None) -> None:
    if since is not None:
        clauses.append(f"{column} >= :since")
        params["since"] = since
    if until is not None:
        clauses.append(f"{column} < :until")
        params["until"] = until


def _read(db: Database, sql: str, params: dict[str, Any], keys: int) -> dict[tuple[Any, ...], Sums]:
    with db.read() as cur:
        cur.execute(db.sql(sql), params)
        rows = cur.fetchall()
    return {tuple(r[:keys]): list(_joined(r[keys:])) for r in rows}


def _joined(row: Any) -> Iterator[int]:
    """The calls, each sum from its halves, and the unpriced calls, of a row of `summed`."""
    yield int(row[0])
    for i in range(1, 1 + 2 * len(SUMMED), 2):
        yield (int(row[i] or 0) << 32) + int(row[i + 1] or 0)
    yield int(row[-1] or 0)
