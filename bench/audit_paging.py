"""The audit explorer's search with 1,000,000 events: server time per page. Prints figures.

Seeds a store with 1M events (20 agents, 300 tools, 40,000 sessions; decisions, outcomes and LLM
calls in realistic shares, a valid hash chain), once per store — kept for later runs, `--fresh`
rebuilds it — then times `GET /v1/events` in-process (the ASGI app: the query, the JSON, the
auth) for common and rare filters, text in the arguments, the first page and a page 20 deep.
Target: <= 300 ms a page on SQLite and PostgreSQL.

    .venv/bin/python bench/audit_paging.py [--events 1000000] [--fresh] [--pg URL | --no-pg]
"""

from __future__ import annotations

import argparse
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

from clearance._store import Database
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
    rng = random.Random(7)
    started = time.perf_counter()
    batch: list[events.Event] = []
    for done, (kind, fields) in enumerate(bodies(n, rng), 1):
        at = fields.pop("at_us")
        batch.append(events.make_event(kind, at, fields))
        if len(batch) == BATCH or done == n:
            with db.write() as cur:
                events.append(db, cur, batch)
            batch = []
            if done % 100_000 == 0:
                print(f"  seeded {done:,} ({time.perf_counter() - started:.0f} s)", flush=True)


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
        ):
            times = []
            for _ in range(runs):
                started = time.perf_counter()
                assert client.get(path, headers=h, params=query).status_code == 200
                times.append((time.perf_counter() - started) * 1000)
            print(f"  {label:30s} {statistics.median(times):7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--fresh", action="store_true", help="seed the stores again")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg", default=PG)
    parser.add_argument("--no-pg", action="store_true")
    o = parser.parse_args()
    warnings.simplefilter("ignore")
    if o.fresh:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{SQLITE}{suffix}").unlink(missing_ok=True)
    stores = [("SQLite", str(SQLITE))]
    if not o.no_pg:
        plain = o.pg.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as conn:
            if o.fresh:
                conn.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE')
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
        stores.append(("PostgreSQL", f"{o.pg}?options=-csearch_path%3D{SCHEMA}"))
    for name, url in stores:
        db = Database(url)
        have = count(db)
        if have < o.events:
            print(f"{name}: seeding {o.events - have:,} events…", flush=True)
            seed(db, o.events - have)
        db.close()
    for name, url in stores:
        measure(name, url, o.runs)


if __name__ == "__main__":
    main()
