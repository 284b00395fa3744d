"""How fast one hash chain can grow on PostgreSQL, and how K independent chains would. Prints figures.

Every append holds the chain's lock from reading the head to the commit (the commit's WAL
flush included), so one chain takes appends one transaction at a time, however many writers
or server processes there are. Measured here:

1. The store itself (`events.ingest`, the path of `/v1/ingest` and of every recorded decision):
   W writer threads, each with its own connection, appending 1 or B events per transaction.
2. A simulation of one chain per stream (environment or tenant): the same transaction shape
   (lock the stream's head, read it, hash, insert, commit) on a table keyed by stream, with K
   streams sharing the W writers. K = 1 is today's single chain, and should match (1).

    .venv/bin/python bench/chain_limit.py [--seconds 5] [--writers 8] [--pg postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg

from clearance._store import Database
from clearance._store import _events as events

PG = os.environ.get("CLEARANCE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def body(i: int) -> dict[str, Any]:
    return {
        "v": 1,
        "id": events.new_id("evt"),
        "kind": "tool_call.finished",
        "at_us": time.time_ns() // 1000 + i,
        "agent": "bench",
        "environment": "test",
        "session": "s1",
        "tool": "issue_refund",
        "call_id": events.new_id("call"),
        "decision": "ok",
        "duration_ms": 1.25,
    }


def threads(writers: int, seconds: float, make: Callable[[int], Callable[[], int]]) -> float:
    """Run `writers` threads, each calling its `make(i)()` (returns events appended) for `seconds`; events/s."""
    appended = [0] * writers
    ready = threading.Barrier(writers + 1)
    stop = threading.Event()

    def run(i: int) -> None:
        step = make(i)
        ready.wait()
        while not stop.is_set():
            appended[i] += step()

    pool = [threading.Thread(target=run, args=(i,)) for i in range(writers)]
    for t in pool:
        t.start()
    ready.wait()
    started = time.monotonic()
    time.sleep(seconds)
    stop.set()
    for t in pool:
        t.join()
    return sum(appended) / (time.monotonic() - started)


def store_rate(url: str, writers: int, batch: int, seconds: float) -> float:
    """The real store: `events.ingest` of `batch` events a transaction from `writers` connections."""
    opened = [Database(url)]  # migrated once before the writers open theirs

    def make(i: int) -> Callable[[], int]:
        db = Database(url)
        opened.append(db)
        return lambda: events.ingest(db, [body(n) for n in range(batch)])[0]

    rate = threads(writers, seconds, make)
    assert events.verify(opened[0]).ok
    for db in opened:
        db.close()
    return rate


SIM = """
CREATE TABLE chain (stream int NOT NULL, seq bigint NOT NULL, body text NOT NULL, prev_hash text NOT NULL,
                    hash text NOT NULL, PRIMARY KEY (stream, seq))
"""


def simulated_rate(plain: str, schema: str, streams: int, writers: int, batch: int, seconds: float) -> float:
    """K chains: writer i appends `batch` records a transaction to stream i % K under that stream's lock."""
    conns: list[psycopg.Connection[Any]] = []
    salt = uuid.uuid4().int % 1_000_000 * 1000  # lock keys of this run only

    def make(i: int) -> Callable[[], int]:
        conn = psycopg.connect(plain, options=f"-csearch_path={schema}")
        conns.append(conn)
        stream = i % streams

        def step() -> int:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (salt + stream,))
                row = conn.execute(
                    "SELECT seq, hash FROM chain WHERE stream = %s ORDER BY seq DESC LIMIT 1", (stream,)
                ).fetchone()
                seq, prev = row if row else (0, "0" * 64)
                rows = []
                for n in range(batch):
                    text = f'{{"stream":{stream},"n":{seq + n + 1},"kind":"tool_call.finished"}}'
                    h = hashlib.sha256((prev + text).encode()).hexdigest()
                    rows.append((stream, seq + n + 1, text, prev, h))
                    prev = h
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO chain VALUES (%s, %s, %s, %s, %s)", rows)
            return batch

        return step

    rate = threads(writers, seconds, make)
    for conn in conns:
        conn.close()
    return rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--pg", default=PG)
    o = parser.parse_args()
    plain = o.pg.replace("postgresql+psycopg://", "postgresql://")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
        conn.execute(f'SET search_path = "{schema}"')
        conn.execute(SIM)
    try:
        url = f"{o.pg}{'&' if '?' in o.pg else '?'}options=-csearch_path%3D{schema}"
        print(f"one hash chain on PostgreSQL: events.ingest from W connections, {o.seconds:g} s a row")
        for writers, batch in ((1, 1), (o.writers, 1), (1, 100), (o.writers, 100)):
            rate = store_rate(url, writers, batch, o.seconds)
            commits = rate / batch
            print(f"  {writers:>2} writers, {batch:>3} a transaction {rate:9.0f} appends/s ({commits:7.0f} commits/s)")
        print(f"simulated: K chains (a lock and a head each), {o.writers} writers spread over them")
        for batch in (1, 100):
            base = None
            for streams in (1, 2, 4, 8):
                rate = simulated_rate(plain, schema, streams, o.writers, batch, o.seconds)
                base = base or rate
                print(
                    f"  K={streams}  {batch:>3} a transaction  {rate:9.0f} appends/s  ({rate / base:4.2f}x one chain)"
                )
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
