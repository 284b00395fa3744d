"""Approval round trip: from the moment a human's decision is requested (in another process) to
the waiting tool body starting — embedded (SQLite, the CLI's code path) and server mode (a
`clearance serve` process, the agent in remote mode long-polling, the decision by HTTP).
Prints figures; asserts nothing.

    .venv/bin/python bench/approval_wake.py [--rounds 200] [--think 0.02]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import clearance
from clearance._store import Database, _approvals
from clearance._store import _keys as keys

EMBEDDED_DECIDER = """
import sys, time
from clearance import _decisions
from clearance._decisions import Decider
from clearance._store import Database
db = Database(sys.argv[1], create=False)
for line in sys.stdin:
    time.sleep(float(sys.argv[2]))  # the human thinks
    print(time.time(), flush=True)  # the decision is requested now
    _decisions.decide(db, line.strip(), approve=True, by=Decider("bench", trusted=True))
"""
SERVER_DECIDER = """
import sys, time, httpx
with httpx.Client(base_url=sys.argv[1], headers={"X-API-Key": sys.argv[3]}) as http:
    for line in sys.stdin:
        time.sleep(float(sys.argv[2]))
        print(time.time(), flush=True)
        http.post(f"/v1/approvals/{line.strip()}/approve").raise_for_status()
"""
POLICY = (
    "version: 1\ntools:\n  transfer:\n    rules:\n"
    "      - {id: all, effect: require_approval, approval: {timeout: 1h}}\n"
)


def rounds(decider: subprocess.Popen[str], n: int) -> list[float]:
    """Run `n` approvals through the guarded tool; the decision-request-to-body latencies in ms."""
    assert decider.stdin and decider.stdout
    started: list[float] = []

    def ask(p: clearance.PendingApproval) -> None:
        decider.stdin.write(p.approval_id + "\n")  # type: ignore[union-attr]
        decider.stdin.flush()  # type: ignore[union-attr]

    @clearance.guard(name="transfer", on_pending=ask)
    def transfer(amount: int) -> None:
        started.append(time.time())

    latencies = []
    for i in range(n):
        transfer(i)
        requested_at = float(decider.stdout.readline())
        latencies.append((started[-1] - requested_at) * 1000)
    decider.stdin.close()
    decider.wait()
    return latencies


def embedded(tmp: Path, n: int, think: float) -> list[float]:
    db = str(tmp / "wake.db")
    clearance.configure(policy=str(tmp / "p.yaml"), database_url=db, agent="bench")
    reads = 0
    real_get = _approvals.get

    def counting_get(*args: object) -> _approvals.Approval:
        nonlocal reads
        reads += 1
        return real_get(*args)  # type: ignore[arg-type]

    _approvals.get = counting_get  # type: ignore[assignment]
    try:
        decider = subprocess.Popen(
            [sys.executable, "-c", EMBEDDED_DECIDER, db, str(think)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        latencies = rounds(decider, n)
    finally:
        _approvals.get = real_get  # type: ignore[assignment]
        clearance.shutdown()
    print(f"  (embedded: {reads / n:.1f} store reads per wait; a fallback re-check runs only every 5 s)")
    return latencies


def server(tmp: Path, n: int, think: float) -> list[float]:
    db = tmp / "server.db"
    store = Database(str(db))
    _, agent_key = keys.create(store, name="a", scopes=["agent"], agent="bench", environment="test", created_by="b")
    _, admin = keys.create(store, name="m", scopes=["admin"], agent=None, environment="test", created_by="b")
    _, approver = keys.create(store, name="p", scopes=["approver"], agent=None, environment="test", created_by="b")
    store.close()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clearance.cli",
            "serve",
            "--port",
            str(port),
            "--no-access-log",
            "--database-url",
            str(db),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(300):
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        h = {"X-API-Key": admin}
        rev = httpx.post(f"{base}/v1/policies", headers=h, json={"text": POLICY}).json()["id"]
        httpx.post(f"{base}/v1/policies/{rev}/activate", headers=h, json={}).raise_for_status()
        clearance.configure(server_url=base, api_key=agent_key, spool_path=str(tmp / "spool.db"))
        decider = subprocess.Popen(
            [sys.executable, "-c", SERVER_DECIDER, base, str(think), approver],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        return rounds(decider, n)
    finally:
        clearance.shutdown()
        proc.terminate()
        proc.wait(30)


def report(label: str, latencies: list[float]) -> None:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    print(
        f"  {label:<9} p50 {statistics.median(ordered):7.2f} ms   p99 {p99:7.2f} ms   max {ordered[-1]:7.2f} ms"
        f"   ({len(ordered)} approvals)"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--think", type=float, default=0.02, help="seconds the decider waits before deciding")
    opts = parser.parse_args()
    print("approval round trip: decision requested in another process -> the waiting tool body starts")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p.yaml").write_text(POLICY)
        results = {
            "embedded": embedded(Path(tmp), opts.rounds, opts.think),
            "server": server(Path(tmp), opts.rounds, opts.think),
        }
    for label, latencies in results.items():
        report(label, latencies)
    print("  polling every 2 s instead: 1,000 ms on average, up to 2,000 ms, plus the request itself")


if __name__ == "__main__":
    main()
