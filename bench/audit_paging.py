"""The audit explorer's search with 1,000,000 events: server time per page. Prints figures.

Seeds a store with 1M events (20 agents, 300 tools, 40,000 sessions; decisions, outcomes and LLM
calls in realistic shares, a valid hash chain), once per store — kept for later runs, `--fresh`
rebuilds it — then times `GET /v1/events` in-process (the ASGI app: the query, the JSON, the
auth) for common and rare filters, text in the arguments, the first page and a page 20 deep;
and `GET /v1/calls` (a row per call, with its records) the same way.
Target: <= 300 ms a page on SQLite and PostgreSQL.

    .venv/bin/python bench/audit_paging.py [--events 1000000] [--fresh] [--pg URL | --no-pg]
        [--decisions-only | --dashboard-only]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
from fastapi.testclient import TestClient

from clearance._store import Database, _rollup
from clearance._store import _events as events
from clearance._store import _keys as keys
from clearance.server import ServerSettings, create_app

PG = os.environ.get("CLEARANCE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SQLITE = Path("/tmp/clearance-bench-audit.db")
SCHEMA = "bench_audit"
BATCH = 5000
START_US = 1_790_000_000_000_000


def bodies(n: int, rng: random.Random) -> Iterator[tuple[str, dict[str, Any]]]:
    """(kind, fields) of n events, in time order."""
    at = START_US
    for i in range(n):
        at += rng.randint(1, 60_000_000 // 24)  # about a month of events in all
        agent = f"agent-{rng.randint(1, 20):02d}"
        session = f"ses_{rng.randint(1, 40_000):06d}"
        roll = rng.random()
        if roll < 0.15:
            yield (
                "llm.call",
                {
                    "at_us": at,
                    "agent": agent,
                    "environment": "production",
                    "session": session,
                    "model": rng.choice(["gpt-4o-mini", "gpt-4.1", "claude-sonnet-4-5"]),
                    "input_tokens": 1800,
                    "output_tokens": 120,
                    "tokens": 1920,
                    "cost_nusd": 420_000,
                    "cost_usd": "0.00042",
                    "priced": True,
                },
            )
            continue
        tool = f"tool_{rng.randint(1, 300):03d}"
        fields: dict[str, Any] = {
            "at_us": at,
            "agent": agent,
            "environment": "production",
            "session": session,
            "tool": tool,
            "call_id": f"call_{i:012d}",
        }
        if roll < 0.58:
            decision = "block" if rng.random() < 0.02 else "require_approval" if rng.random() < 0.03 else "allow"
            fields |= {
                "decision": decision,
                "args": {"order_id": f"A-{i:07d}", "amount": rng.randint(1, 2000), "note": "customer asked"},
                "reason": "no rule matched; global default is allow",
                "rule_ids": [],
                "policy_revision": "rev_0123456789ab",
            }
            yield "tool_call.decided", fields
        else:
            fields |= {"decision": "error" if rng.random() < 0.01 else "ok", "duration_ms": 12.5}
            yield "tool_call.finished", fields


def seed(db: Database, n: int) -> None:
    """n more events, a valid hash chain; on PostgreSQL through COPY (10M events in minutes)."""
    rng = random.Random(7)
    started = time.perf_counter()
    batch: list[events.Event] = []
    write = _copied if db.dialect == "postgresql" else _appended
    for done, (kind, fields) in enumerate(bodies(n, rng), 1):
        at = fields.pop("at_us")
        batch.append(events.make_event(kind, at, fields))
        if len(batch) == (COPY_BATCH if db.dialect == "postgresql" else BATCH) or done == n:
            write(db, batch)
            batch = []
            if done % 100_000 == 0:
                print(f"  seeded {done:,} ({time.perf_counter() - started:.0f} s)", flush=True)


COPY_BATCH = 100_000


def _appended(db: Database, batch: list[events.Event]) -> None:
    with db.write() as cur:
        events.append(db, cur, batch)


def _copied(db: Database, batch: list[events.Event]) -> None:
    """`events.append`, with the rows sent by COPY: the same columns, the same chain."""
    columns = events._COLUMNS  # whatever columns this version copies out of the body
    with db.write() as cur:
        cur.execute("SELECT hash FROM events ORDER BY seq DESC LIMIT 1")
        row = cur.fetchone()
        prev = row[0] if row else events.GENESIS
        names = ", ".join((*columns, "id", "at_us", "body", "prev_hash", "hash"))
        with cur.copy(f"COPY events ({names}) FROM STDIN") as copy:
            for e in batch:
                h = events.chain_hash(prev, e.body)
                copy.write_row((*map(e.columns.get, columns), e.id, e.at_us, e.body, prev, h))
                prev = h
        _rollup.add_newest(db, cur, len(batch))  # the hourly usage sums, as `append` keeps them


def count(db: Database) -> int:
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM events")
        return int(cur.fetchone()[0])


SEARCHES: list[tuple[str, dict[str, str]]] = [
    ("everything", {}),
    ("one agent (5%)", {"agent": "agent-07"}),
    ("one tool (0.2%)", {"tool": "tool_123"}),
    ("decision=block (0.7%)", {"decision": "block"}),
    ("errors (0.4%)", {"decision": "error"}),
    ("one session (25 events)", {"session": "ses_012345"}),
    ("agent + tool + block (rare)", {"agent": "agent-07", "tool": "tool_123", "decision": "block"}),
    ("text, common", {"q": "customer asked"}),
    ("text, one order id", {"q": "A-0500000"}),
    ("text, nowhere", {"q": "no such text anywhere"}),
    ("last 24 hours", {"since_us": "recent"}),
    ("one day, a month ago", {"since_us": "old"}),
]


def measure(name: str, url: str, runs: int) -> None:
    db = Database(url)
    have = count(db)
    with db.read() as cur:
        cur.execute("SELECT MAX(at_us) FROM events WHERE kind = 'tool_call.decided'")  # not this run's key
        newest = int(cur.fetchone()[0] or 0)
    _, admin = keys.create(db, name="bench", scopes=["admin"], agent=None, environment="test", created_by="bench")
    db.close()
    print(f"\n{name}: {have:,} events; ms per page of 50 (median of {runs}; first page, then page 20)")
    with TestClient(create_app(ServerSettings(database_url=url))) as client:
        h = {"X-API-Key": admin}
        for label, params in SEARCHES:
            params = {**params, "limit": "50"}
            if params.get("since_us") == "recent":
                params["since_us"] = str(newest - 86_400_000_000)
            elif params.get("since_us") == "old":
                params |= {"since_us": str(START_US + 86_400_000_000), "until_us": str(START_US + 2 * 86_400_000_000)}
            firsts, deeps, found, partial = [], [], 0, 0
            for _ in range(runs):
                cursor, pages = None, 0
                while pages < 20:
                    started = time.perf_counter()
                    r = client.get("/v1/events", headers=h, params={**params, **({"cursor": cursor} if cursor else {})})
                    took = (time.perf_counter() - started) * 1000
                    assert r.status_code == 200, r.text
                    page = r.json()
                    pages += 1
                    if pages == 1:
                        firsts.append(took)
                        found = len(page["events"])
                        partial = int(page["next_cursor"] is not None and found < 50)
                    if pages == 20:
                        deeps.append(took)
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
            deep = f"{statistics.median(deeps):7.1f}" if deeps else "      –"
            note = " (partial: the rest is in later pages)" if partial else ""
            print(f"  {label:30s} {statistics.median(firsts):7.1f} {deep}   {found:3d} on page 1{note}")
        for label, path, query in (
            ("sessions list (200)", "/v1/sessions", {"limit": "200"}),
            ("usage by model, all time", "/v1/usage", {"by": "model"}),
            # the costs page and the replay (issue 17)
            ("spend per day by model, all", "/v1/spend", {"by": "model"}),
            ("spend per day by agent, all", "/v1/spend", {"by": "agent"}),
            (
                "spend per hour by model, 1 day",
                "/v1/spend",
                {"since_us": str(newest - 86_400_000_000), "until_us": str(newest)},  # the data's last day, not now
            ),
            ("budgets in use", "/v1/budgets", {}),
            ("replay of one session", "/v1/replay", {"session": "ses_012345"}),
        ):
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                assert client.get(path, headers=h, params=query).status_code == 200
                times.append((time.perf_counter() - started) * 1000)
            print(f"  {label:30s} {statistics.median(times):7.1f}")
    # The same sums from the records alone, as before the hourly sums (0020): the store's query, in-process
    db = Database(url)
    day = 86_400_000_000
    for label, asked in (
        ("usage by model, from records", _rollup.Asked(("model",))),
        ("spend by model/day, records", _rollup.Asked(("model", "bucket"), since_us=START_US // day * day, size=day)),
    ):
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            _rollup._from_events(db, asked, asked.since_us, None)
            times.append((time.perf_counter() - started) * 1000)
        print(f"  {label:30s} {statistics.median(times):7.1f}   (no hourly sums; before 0020)")
    db.close()


# -- the decisions history (issue 17): GET /v1/decisions over the approvals of the same store --------

DECIDERS = [f"user:lead-{i:02d}" for i in range(1, 13)]


def seed_approvals(db: Database) -> int:
    """An approval for every call the store's log put to approval, decided in realistic shares.

    Approved (a quarter with an edit of the amount; most since executed), granted, denied, expired,
    cancelled; a grant row for each granted one. Written straight into the tables (no events: the
    log stays what the audit figures above measure). Returns how many approvals the store holds.
    """
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM approvals")
        have = int(cur.fetchone()[0])
        if have:
            return have
        cur.execute(
            "SELECT call_id, agent, tool, session, at_us, body FROM events"
            " WHERE kind = 'tool_call.decided' AND decision = 'require_approval' ORDER BY seq"
        )
        asked = cur.fetchall()
    rng = random.Random(17)
    approvals, granted = [], []
    for i, (call_id, agent, tool, session, at, body) in enumerate(asked):
        args = json.loads(body)["args"]
        outcome = rng.choices(["approved", "granted", "denied", "expired", "cancelled"], [50, 6, 20, 14, 10])[0]
        approval_id = f"apr_{at // 1000:012x}{i:020x}"
        row: dict[str, Any] = {
            "id": approval_id,
            "call_id": call_id,
            "status": outcome,
            "tool": tool,
            "agent": agent,
            "environment": "production",
            "session": session,
            "args_json": json.dumps(args),
            "args_hash": "0" * 64,
            "shown_args_json": json.dumps(args),
            "rule_ids": '["needs-approval"]',
            "reason": "over the limit",
            "policy_revision": "rev_0123456789ab",
            "approvers": '["role:support-lead"]',
            "on_timeout": "deny",
            "created_at_us": at,
            "expires_at_us": at + 1_800_000_000,
            "decided_by": rng.choice(DECIDERS),
            "decided_at_us": at + rng.randint(5_000_000, 1_700_000_000),
            "note": None,
            "edited_args_json": None,
            "edited_shown_json": None,
            "edited_args_hash": None,
        }
        if outcome in ("approved", "granted"):
            row["status"] = rng.choices(["executed", "failed", "approved"], [80, 5, 15])[0]
            if rng.random() < 0.25:
                edited = {**args, "amount": max(1, args["amount"] // 2)}
                row |= {"edited_args_json": json.dumps(edited), "edited_shown_json": json.dumps(edited)}
                row |= {"edited_args_hash": "1" * 64, "note": "half now, the rest after the review"}
        elif outcome == "denied":
            row["note"] = "not without the order's receipt"
        elif outcome == "expired":
            row |= {"decided_by": "system", "decided_at_us": at + 1_800_000_000}
        else:
            row |= {"decided_by": agent, "note": "the caller stopped waiting"}
        approvals.append(row)
        if outcome == "granted":
            granted.append(
                {
                    "id": f"grt_{at // 1000:012x}{i:020x}",
                    "kind": "calls",
                    "scope": "session",
                    "agent": agent,
                    "environment": "production",
                    "session": session,
                    "tool": tool,
                    "rule_ids": '["needs-approval"]',
                    "max_calls": 5,
                    "calls_used": 0,
                    "total_used": "0",
                    "approval_id": approval_id,
                    "granted_by": row["decided_by"],
                    "created_at_us": row["decided_at_us"],
                    "expires_at_us": row["decided_at_us"] + 3_600_000_000,
                }
            )
    for table, rows in (("approvals", approvals), ("grants", granted)):
        for start in range(0, len(rows), BATCH):
            chunk = rows[start : start + BATCH]
            cols = list(chunk[0])
            sql = f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join(':' + c for c in cols)})"
            with db.write() as cur:
                cur.executemany(db.sql(sql), chunk)
    return len(approvals)


DECISION_SEARCHES: list[tuple[str, dict[str, str]]] = [
    ("everything", {}),
    ("denied (20%)", {"outcome": "denied"}),
    ("granted (6%)", {"outcome": "granted"}),
    ("approved, no grant (50%)", {"outcome": "approved"}),
    ("one decider (8%)", {"decider": "user:lead-03"}),
    ("one agent (5%)", {"agent": "agent-07"}),
    ("one tool (0.3%)", {"tool": "tool_123"}),
    ("agent + granted + decider (rare)", {"agent": "agent-07", "outcome": "granted", "decider": "user:lead-10"}),
    ("last 24 hours", {"since_us": "recent"}),
    ("one day, a month ago", {"since_us": "old"}),
]


def measure_decisions(name: str, url: str, runs: int) -> None:
    """Time `GET /v1/decisions` (first page, page 20) and its CSV export over the store's approvals."""
    db = Database(url)
    held = seed_approvals(db)
    with db.read() as cur:
        cur.execute("SELECT MIN(decided_at_us), MAX(decided_at_us) FROM approvals")
        oldest, newest = (int(v or 0) for v in cur.fetchone())
    _, admin = keys.create(db, name="bench", scopes=["admin"], agent=None, environment="test", created_by="bench")
    db.close()
    print(f"\n{name}: decisions history over {held:,} approvals; ms per page of 50 (median of {runs}; page 1, page 20)")
    with TestClient(create_app(ServerSettings(database_url=url))) as client:
        h = {"X-API-Key": admin}
        for label, params in DECISION_SEARCHES:
            params = {**params, "limit": "50"}
            if params.get("since_us") == "recent":
                params["since_us"] = str(newest - 86_400_000_000)
            elif params.get("since_us") == "old":
                params |= {"since_us": str(oldest + 86_400_000_000), "until_us": str(oldest + 2 * 86_400_000_000)}
            firsts, deeps, found = [], [], 0
            for _ in range(runs):
                cursor, pages = None, 0
                while pages < 20:
                    query = {**params, **({"cursor": cursor} if cursor else {})}
                    started = time.perf_counter()
                    r = client.get("/v1/decisions", headers=h, params=query)
                    took = (time.perf_counter() - started) * 1000
                    assert r.status_code == 200, r.text
                    pages += 1
                    if pages == 1:
                        firsts.append(took)
                        found = len(r.json()["decisions"])
                    if pages == 20:
                        deeps.append(took)
                    cursor = r.json()["next_cursor"]
                    if cursor is None:
                        break
            deep = f"{statistics.median(deeps):7.1f}" if deeps else "      –"
            print(f"  {label:34s} {statistics.median(firsts):7.1f} {deep}   {found:3d} on page 1")
        started = time.perf_counter()
        with client.stream("GET", "/v1/decisions/export", headers=h, params={"format": "csv"}) as r:
            rows = sum(chunk.count(b"\n") for chunk in r.iter_bytes()) - 1
        print(f"  {'export, CSV, everything':34s} {(time.perf_counter() - started) * 1000:7.0f}   {rows:,} rows")


# -- the audit log a row per call (GET /v1/calls): first page, filtered pages, page 20 ------------

CALL_SEARCHES = [
    label_params
    for label_params in SEARCHES
    if label_params[0]
    in ("everything", "one agent (5%)", "one tool (0.2%)", "decision=block (0.7%)", "one session (25 events)")
    + ("text, one order id", "last 24 hours")
]


def measure_calls(name: str, url: str, runs: int) -> None:
    """Time `GET /v1/calls` (50 calls a page, each with its records) like `measure` times `/v1/events`."""
    db = Database(url)
    with db.read() as cur:
        cur.execute("SELECT MAX(at_us) FROM events WHERE kind = 'tool_call.decided'")
        newest = int(cur.fetchone()[0] or 0)
    _, admin = keys.create(db, name="bench", scopes=["admin"], agent=None, environment="test", created_by="bench")
    db.close()
    print(f"\n{name}: the audit log by call, ms per page of 50 calls (median of {runs}; first page, then page 20)")
    with TestClient(create_app(ServerSettings(database_url=url))) as client:
        h = {"X-API-Key": admin}
        for label, params in CALL_SEARCHES:
            params = {**params, "limit": "50"}
            if params.get("since_us") == "recent":
                params["since_us"] = str(newest - 86_400_000_000)
            firsts, deeps, found, steps, partial = [], [], 0, 0, 0
            for _ in range(runs):
                cursor, pages = None, 0
                while pages < 20:
                    started = time.perf_counter()
                    r = client.get("/v1/calls", headers=h, params={**params, **({"cursor": cursor} if cursor else {})})
                    took = (time.perf_counter() - started) * 1000
                    assert r.status_code == 200, r.text
                    page = r.json()
                    pages += 1
                    if pages == 1:
                        firsts.append(took)
                        found = len(page["calls"])
                        steps = sum(len(c["steps"]) for c in page["calls"])
                        partial = int(page["next_cursor"] is not None and found < 50)
                    if pages == 20:
                        deeps.append(took)
                    cursor = page["next_cursor"]
                    if cursor is None:
                        break
            deep = f"{statistics.median(deeps):7.1f}" if deeps else "      –"
            note = " (partial: the rest is in later pages)" if partial else ""
            print(f"  {label:30s} {statistics.median(firsts):7.1f} {deep}   {found:3d} calls ({steps} records){note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fresh", action="store_true", help="seed the stores again")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg", default=PG)
    parser.add_argument("--no-pg", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--sqlite", type=Path, default=SQLITE, help="the SQLite store's file")
    parser.add_argument("--schema", default=SCHEMA, help="the PostgreSQL store's schema")
    parser.add_argument("--decisions-only", action="store_true", help="time only the decisions history")
    parser.add_argument(
        "--dashboard-only", action="store_true", help="time only the audit log by call and the decisions history"
    )
    o = parser.parse_args()
    warnings.simplefilter("ignore")
    if o.fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{o.sqlite}{suffix}").unlink(missing_ok=True)
    stores = [] if o.no_sqlite else [("SQLite", str(o.sqlite))]
    if not o.no_pg:
        plain = o.pg.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as conn:
            if o.fresh:
                conn.execute(f'DROP SCHEMA IF EXISTS "{o.schema}" CASCADE')
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{o.schema}"')
        stores.append(("PostgreSQL", f"{o.pg}?options=-csearch_path%3D{o.schema}"))
    for name, url in stores:
        db = Database(url)
        have = count(db)
        if have < o.events:
            print(f"{name}: seeding {o.events - have:,} events…", flush=True)
            seed(db, o.events - have)
            if db.dialect == "postgresql":  # as autovacuum would, in time: index-only scans need it
                with psycopg.connect(plain, autocommit=True, options=f"-csearch_path={o.schema}") as conn:
                    conn.execute("VACUUM ANALYZE events")
        db.close()
    for name, url in stores:
        if not o.decisions_only and not o.dashboard_only:
            measure(name, url, o.runs)
        if not o.decisions_only:
            measure_calls(name, url, o.runs)
        measure_decisions(name, url, o.runs)


if __name__ == "__main__":
    main()
