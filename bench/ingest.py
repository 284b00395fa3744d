"""Batched event ingest with the hash chain, on SQLite and PostgreSQL: the store alone, and over
HTTP to a real `clearance serve`. Prints figures; asserts nothing.

    .venv/bin/python bench/ingest.py [--events 50000] [--batch 500] [--pg postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
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


def http_rate(url: str, total: int, size: int) -> float:
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
    try:
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        batches = [
            [{k: v for k, v in e.items() if k not in ("agent", "environment")} for e in batch_of(size)]
            for _ in range(total // size)
        ]
        with httpx.Client(base_url=base, headers={"X-API-Key": secret}, timeout=60) as client:
            started = time.perf_counter()
            for b in batches:
                r = client.post("/v1/events", json={"events": b})
                r.raise_for_status()
            return total / (time.perf_counter() - started)
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
    parser.add_argument("--pg", default=PG)
    o = parser.parse_args()
    print(f"ingest of {o.events} events in batches of {o.batch}, hash-chained, duplicates checked")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"  SQLite store         {store_rate(str(Path(tmp) / 'a.db'), o.events, o.batch):9.0f} events/s")
        print(f"  SQLite over HTTP     {http_rate(str(Path(tmp) / 'b.db'), o.events, o.batch):9.0f} events/s")
    for label, fn in (("PostgreSQL store    ", store_rate), ("PostgreSQL over HTTP", http_rate)):
        url, schema = fresh_pg_schema(o.pg)
        try:
            print(f"  {label} {fn(url, o.events, o.batch):9.0f} events/s   (target 20,000)")
        finally:
            drop(o.pg, schema)


if __name__ == "__main__":
    main()
