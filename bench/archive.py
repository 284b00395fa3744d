"""Archiving old records: records per second written, verified and deleted; segment size on disk;
the offline check's speed. SQLite, and PostgreSQL with --pg URL. Prints figures; asserts nothing.

    .venv/bin/python bench/archive.py [--records 100000] [--segment 50000] [--pg postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from clearance import _archive
from clearance._store import Database
from clearance._store import _events as events


def fill(db: Database, n: int) -> None:
    fields = {
        "agent": "refunds",
        "environment": "prod",
        "session": "s-1",
        "tool": "issue_refund",
        "decision": "allow",
        "reason": "no rule matched",
        "args": {"order_id": "A-10042", "amount": 120.5, "note": "customer says the parcel never came"},
    }
    for start in range(0, n, 5000):
        with db.write() as cur:
            events.append(
                db,
                cur,
                [events.make_event("tool_call.decided", 1 + i, fields) for i in range(start, min(n, start + 5000))],
            )
    with db.write() as cur:  # the newest record, which always stays
        events.append(db, cur, [events.make_event("llm.call", 10**15, {"agent": "a", "environment": "prod"})])


def run(url: str, records: int, segment: int, directory: Path) -> None:
    db = Database(url)
    fill(db, records)
    t0, c0 = time.perf_counter(), time.process_time()
    done = _archive.archive(db, directory, before_us=10**14, per_segment=segment)
    took, cpu = time.perf_counter() - t0, time.process_time() - c0
    size = sum(p.stat().st_size for p in directory.glob("*.jsonl.gz"))
    t1, c1 = time.perf_counter(), time.process_time()
    report = _archive.check(directory, db)
    checked, checked_cpu = time.perf_counter() - t1, time.process_time() - c1
    db.close()
    print(
        f"{db.dialect}: archived {done.records} records in {len(done.segments)} segments in {took:.1f} s"
        f" ({done.records / took:,.0f}/s; this process's CPU {cpu:.1f} s, {done.records / cpu:,.0f}/s);"
        f" {size / 2**20:.1f} MiB on disk ({size / done.records:.0f} B/record);"
        f" offline check {'ok' if report.ok else report.problem} in {checked:.1f} s"
        f" (CPU {checked_cpu:.1f} s, {done.records / checked_cpu:,.0f}/s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--segment", type=int, default=50_000)
    parser.add_argument("--pg", help="also on this PostgreSQL URL (an empty database or schema)")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run(str(Path(tmp) / "audit.db"), a.records, a.segment, Path(tmp) / "sqlite-archive")
        if a.pg:
            run(a.pg, a.records, a.segment, Path(tmp) / "pg-archive")


if __name__ == "__main__":
    main()
