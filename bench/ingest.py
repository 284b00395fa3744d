"""Batched event ingest with the hash chain, on SQLite and PostgreSQL: the store alone, and over
HTTP to a real `clearance serve` from one shipper and from several at once (agents ship their
spools concurrently; each shipper is a thread posting bodies encoded beforehand, as a spool holds
them). Also prints the server process's CPU per event. Prints figures; asserts nothing.

    .venv/bin/python bench/ingest.py [--events 50000] [--batch 500] [--shippers 1,2,4] [--pg postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg

from clearance._store import Database
from clearance._store import _events as events
from clearance._store import _keys as keys

PG = os.environ.get("CLEARANCE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def batch_of(n: int) -> list[dict[str, Any]]:
    now = time.time_ns() // 1000
    return [
        {
            "v": 1,
            "id": events.new_id("evt"),
            "kind": "tool_call.finished",
            "at_us": now + i,
            "agent": "bench",
            "environment": "test",
            "session": "s1",
            "tool": "issue_refund",
            "call_id": events.new_id("call"),
            "decision": "ok",
            "duration_ms": 1.25,
        }
        for i in range(n)
    ]


def store_rate(url: str, total: int, size: int) -> float:
    db = Database(url)
    batches = [batch_of(size) for _ in range(total // size)]
    started = time.perf_counter()
    for b in batches:
        events.ingest(db, b)
    elapsed = time.perf_counter() - started
    assert events.verify(db).ok
    db.close()
    return total / elapsed


def _agent_batches(total: int, size: int) -> list[list[dict[str, Any]]]:
    """Batches as an agent sends them: the key gives the agent and environment."""
    return [
        [{k: v for k, v in e.items() if k not in ("agent", "environment")} for e in batch_of(size)]
        for _ in range(total // size)
    ]


def _cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def http_rates(url: str, total: int, size: int, shippers: list[int]) -> list[tuple[int, float, float]]:
    """(shippers, events/s, server CPU µs per event) for each number of concurrent shippers."""
    db = Database(url)
    _, secret = keys.create(db, name="bench", scopes=["agent"], agent="bench", environment="test", created_by="bench")
    db.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CLEARANCE_MAX_BODY_BYTES": str(64 * 1024 * 1024)}
    server = subprocess.Popen(
        [sys.executable, "-m", "clearance.cli", "serve", "--port", str(port), "--database-url", url],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    headers = {"X-API-Key": secret, "Content-Type": "application/json"}

    def ship(bodies: list[bytes]) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=60) as client:
            for body in bodies:
                client.post("/v1/events", content=body).raise_for_status()

    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        figures = []
        for n in shippers:
            bodies = [json.dumps({"events": batch}).encode() for batch in _agent_batches(total, size)]
            threads = [threading.Thread(target=ship, args=(bodies[i::n],)) for i in range(n)]
            cpu = _cpu_seconds(server.pid)
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - started
            figures.append((n, total / elapsed, (_cpu_seconds(server.pid) - cpu) / total * 1e6))
        return figures
    finally:
        server.terminate()
        server.wait(30)


def fresh_pg_schema(url: str) -> tuple[str, str]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{url}?options=-csearch_path%3D{schema}", schema


def drop(url: str, schema: str) -> None:
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--shippers", default="1,2,4", help="numbers of concurrent shippers over HTTP")
    parser.add_argument("--pg", default=PG)
    o = parser.parse_args()
    shippers = [int(n) for n in o.shippers.split(",")]
    print(f"ingest of {o.events} events in batches of {o.batch}, hash-chained, duplicates checked (target 20,000/s)")

    def show(label: str, figures: list[tuple[int, float, float]]) -> None:
        for n, rate, cpu in figures:
            who = f"{n} shipper{'s' if n > 1 else ' '}"
            print(f"  {label} over HTTP, {who} {rate:9.0f} events/s   server CPU {cpu:5.1f} µs/event")

    with tempfile.TemporaryDirectory() as tmp:
        rate = store_rate(str(Path(tmp) / "a.db"), o.events, o.batch)
        print(f"  SQLite store                       {rate:9.0f} events/s")
        show("SQLite    ", http_rates(str(Path(tmp) / "b.db"), o.events, o.batch, shippers))
    url, schema = fresh_pg_schema(o.pg)
    try:
        print(f"  PostgreSQL store                   {store_rate(url, o.events, o.batch):9.0f} events/s")
    finally:
        drop(o.pg, schema)
    url, schema = fresh_pg_schema(o.pg)
    try:
        show("PostgreSQL", http_rates(url, o.events, o.batch, shippers))
    finally:
        drop(o.pg, schema)


if __name__ == "__main__":
    main()
