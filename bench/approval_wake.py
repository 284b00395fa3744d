"""How fast a waiting call resumes after a human decides in another process, and how often the
waiter reads the store meanwhile. Prints figures; asserts nothing.

    .venv/bin/python bench/approval_wake.py [--rounds 30] [--think 0.3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import clearance
from clearance.store import _approvals

DECIDER = """
import sys, time
from clearance import _decisions
from clearance.store import Database
db = Database(sys.argv[1], create=False)
for line in sys.stdin:
    time.sleep(float(sys.argv[2]))  # the human thinks
    _decisions.decide(db, line.strip(), approve=True, by="bench")
    print(time.time(), flush=True)
"""
POLICY = (
    "version: 1\ntools:\n  transfer:\n    rules:\n"
    "      - {id: all, effect: require_approval, approval: {timeout: 1h}}\n"
)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--think", type=float, default=0.3, help="seconds the decider waits before deciding")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "wake.db")
        (Path(tmp) / "p.yaml").write_text(POLICY)
        clearance.configure(policy=str(Path(tmp) / "p.yaml"), database_url=db, agent="bench")
        decider = subprocess.Popen(
            [sys.executable, "-c", DECIDER, db, str(opts.think)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert decider.stdin and decider.stdout
        reads = 0
        real_get = _approvals.get

        def counting_get(*args: object) -> _approvals.Approval:
            nonlocal reads
            reads += 1
            return real_get(*args)  # type: ignore[arg-type]

        _approvals.get = counting_get  # type: ignore[assignment]
        started: list[float] = []

        def ask(p: clearance.PendingApproval) -> None:
            decider.stdin.write(p.approval_id + "\n")  # type: ignore[union-attr]
            decider.stdin.flush()  # type: ignore[union-attr]

        @clearance.guard(on_pending=ask)
        def transfer(amount: int) -> None:
            started.append(time.time())

        latencies, per_wait = [], []
        for i in range(opts.rounds):
            before = reads
            transfer(i)
            decided_at = float(decider.stdout.readline())
            latencies.append((started[-1] - decided_at) * 1000)
            per_wait.append(reads - before)
        decider.stdin.close()
        decider.wait()
        clearance.shutdown()
    ordered = sorted(latencies)
    print(
        f"approval decided in another process -> tool body starts ({opts.rounds} rounds, decider thinks {opts.think}s)"
    )
    print(
        f"  median {statistics.median(ordered):7.2f} ms   p90 {ordered[int(len(ordered) * 0.9)]:7.2f} ms"
        f"   max {ordered[-1]:7.2f} ms"
    )
    print(
        f"  store reads per wait: {statistics.mean(per_wait):.1f} (one before waiting, one after the wake-up;"
        " a fallback re-check runs only every 5 s)"
    )


if __name__ == "__main__":
    main()
