"""Overhead of a governed, allowed call: 10 rules on its tool, the record committed to SQLite
before the tool runs (and its outcome after). Prints figures; asserts nothing.

The same calls are then timed with a JSON lines sink registered (`CLEARANCE_EXPORTERS=jsonl:…`),
in alternating slices with the rows without one, so the two are compared under the same load.

Then, in alternating slices too (issue 14's targets): a call a live grant covers (its rules
ask for approval; the grant lets it through and counts the use) against the allowed call —
at most 10 us more at the median — and a call decided by a shadow policy beside the enforced
one (the same 10 rules) against the same call without — at most 15 us more.

    .venv/bin/python bench/guard_overhead.py [--calls 20000]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clearance
from clearance import _decisions
from clearance._granting import GrantRequest
from clearance._guard import _runtime
from clearance._guard._record import record_call
from clearance._sinks import JsonLinesSink, Sinks
from clearance._sinks._sources import StoreSource
from clearance.policy import parse_policy

RULES = [
    "args.amount > 10000.0",
    "args.amount < 0",
    "args.currency != 'USD' && args.amount > 100",
    "args.order_id.startsWith('TEST-') && args.amount > 1",
    "size(args.order_id) > 64",
    "args.reason.contains('urgent') && args.amount > 500",
    "dec_gt(args.amount, '9999.99')",
    "args.customer_tier == 'new' && args.amount > 5000",
    "args.amount > 2000 && args.reason == ''",
    "args.order_id in ['BLOCKED-1', 'BLOCKED-2', 'BLOCKED-3']",
]
TEN_RULES = "    rules:\n" + "".join(
    f'      - {{id: r{i}, when: "{cond}", effect: {"block" if i % 2 else "require_approval"}}}\n'
    for i, cond in enumerate(RULES)
)
POLICY = "version: 1\ndefault: allow\ntools:\n  issue_refund:\n" + TEN_RULES
# The same ten rules, and one more that asks for approval of every call and lets approvers grant.
GRANTED_POLICY = (
    POLICY
    + "  granted_refund:\n"
    + TEN_RULES.replace("id: r", "id: g")
    + "      - {id: ask, effect: require_approval, approval: {grants: {scopes: [agent], max_duration: 1d}}}\n"
)
ARGS = {"order_id": "A-10042", "amount": 125.5, "currency": "USD", "reason": "damaged", "customer_tier": "gold"}


def issue_refund(order_id: str, amount: float, currency: str, reason: str, customer_tier: str) -> str:
    return order_id


def timings(fn: Callable[[], Any], n: int) -> list[int]:
    out = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t)
    return out


def pct(values: list[int], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] / 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20000)
    n = parser.parse_args().calls
    with tempfile.TemporaryDirectory() as tmp:
        policy_path = Path(tmp) / "p.yaml"
        policy_path.write_text(POLICY)
        policy_path.write_text(GRANTED_POLICY)
        clearance.configure(policy=str(policy_path), database_url=str(Path(tmp) / "bench.db"), agent="bench")
        guarded = clearance.guard(issue_refund)
        policy = _runtime.current().policy
        assert policy.decide("issue_refund", ARGS, {}).effect.value == "allow"
        assert len(policy.plan("issue_refund").conditional) == 10

        jsonl = Path(tmp) / "events.jsonl"
        url = str(Path(tmp) / "bench.db")

        opened = itertools.count()

        def exporting() -> Sinks:
            """A JSON lines sink over the bench's store, as CLEARANCE_EXPORTERS=jsonl:<path> opens one.

            Each is new (it starts at the newest event), so it never delivers the calls timed without one.
            """
            return Sinks([JsonLinesSink(jsonl, name=f"jsonl-{next(opened)}")], StoreSource(url))

        cpu = {False: 0.0, True: 0.0}  # the process's CPU seconds (every thread's, the sink's too)

        def alternating(run: Callable[[int], list[int]], total: int, slices: int = 4) -> tuple[list[int], list[int]]:
            """`total` calls without a sink and `total` with one, in alternating slices."""
            without: list[int] = []
            with_sink: list[int] = []
            for _ in range(slices):
                started = time.process_time()
                without += run(total // slices)
                cpu[False] += time.process_time() - started
                sinks = exporting()
                started = time.process_time()
                with_sink += run(total // slices)
                sinks.close(timeout=60)  # delivers the rest: its CPU is counted, its time is not
                cpu[True] += time.process_time() - started
            return without, with_sink

        bare = timings(lambda: issue_refund(**ARGS), n)
        timings(lambda: guarded(**ARGS), 2000)  # warm up
        governed, sunk = alternating(lambda k: timings(lambda: guarded(**ARGS), k), n)
        decide = timings(lambda: policy.decide("issue_refund", ARGS, {}), n)
        compiled = parse_policy(POLICY)
        compiled.plan("issue_refund")

        base = statistics.median(bare) / 1000
        print(f"guarded allowed call, 10 rules, record committed (SQLite WAL), {n} calls, 1 thread")
        print(f"  bare call          median {base:8.2f} us")
        print(f"  guarded call       median {pct(governed, 0.5):8.2f} us   p99 {pct(governed, 0.99):8.2f} us")
        print(
            f"  overhead           median {pct(governed, 0.5) - base:8.2f} us"
            f"   p99 {pct(governed, 0.99) - base:8.2f} us"
            f"   p99.9 {pct(governed, 0.999) - base:8.2f} us"
        )
        print(f"  throughput         {1e9 / statistics.mean(governed):8.0f} calls/s")
        print(f"  with a JSONL sink  median {pct(sunk, 0.5):8.2f} us   p99 {pct(sunk, 0.99):8.2f} us")
        print(
            f"    overhead         median {pct(sunk, 0.5) - base:8.2f} us"
            f"   p99 {pct(sunk, 0.99) - base:8.2f} us"
            f"   p99.9 {pct(sunk, 0.999) - base:8.2f} us"
        )
        print(f"    throughput       {1e9 / statistics.mean(sunk):8.0f} calls/s")
        print(
            f"  CPU per call       {cpu[False] / len(governed) * 1e6:8.2f} us"
            f"   with a JSONL sink {cpu[True] / len(sunk) * 1e6:8.2f} us  (every thread's, the sink's included)"
        )
        print(
            f"  decision only      median {pct(decide, 0.5):8.2f} us   p99 {pct(decide, 0.99):8.2f} us"
            "  (CEL, 10 rules, no store)"
        )

        per_thread = n // 4
        elapsed = {False: 0.0, True: 0.0}

        def threaded(k: int, sink: bool) -> list[int]:
            """`k` calls on 4 threads; adds the wall time to `elapsed[sink]`."""
            results: list[list[int]] = [[] for _ in range(4)]

            def work(i: int) -> None:
                results[i] = timings(lambda: guarded(**ARGS), k // 4)

            threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
            started = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed[sink] += time.perf_counter() - started
            return [x for r in results for x in r]

        merged: list[int] = []
        merged_sunk: list[int] = []
        for _ in range(2):
            merged += threaded(per_thread * 2, False)
            sinks = exporting()
            merged_sunk += threaded(per_thread * 2, True)
            sinks.close(timeout=60)
        print(f"4 threads, {per_thread * 4} calls")
        print(f"  per call           median {pct(merged, 0.5):8.2f} us   p99 {pct(merged, 0.99):8.2f} us")
        print(f"  throughput         {len(merged) / elapsed[False]:8.0f} calls/s")
        print(f"  with a JSONL sink  median {pct(merged_sunk, 0.5):8.2f} us   p99 {pct(merged_sunk, 0.99):8.2f} us")
        print(f"    throughput       {len(merged_sunk) / elapsed[True]:8.0f} calls/s")
        lines = sum(1 for _ in jsonl.open("rb"))
        print(f"JSONL sink wrote {lines} lines")
        grants_and_shadow(n)
        report = __import__("clearance._store._events", fromlist=["verify"]).verify(_runtime.current().db)
        print(f"chain verified: {report.ok}, {report.checked} records")
        clearance.shutdown()


def granted_refund(order_id: str, amount: float, currency: str, reason: str, customer_tier: str) -> str:
    return order_id


def grants_and_shadow(n: int) -> None:
    """A call a grant covers, and a call with a shadow policy, each beside an allowed call."""
    governor = _runtime.current()
    db, policy = governor.db, governor.policy  # type: ignore[attr-defined]
    asked = record_call(
        db, policy, agent="bench", environment=governor.environment, tool="granted_refund", args=ARGS, session="s"
    )
    assert asked.approval_id is not None
    _decisions.decide(
        db,
        asked.approval_id,
        approve=True,
        by=_decisions.Decider("bench-approver", trusted=True),
        grant=GrantRequest(scope="agent", duration="1d"),
    )
    allowed = clearance.guard(issue_refund)
    granted = clearance.guard(granted_refund)
    assert "grant" in _last_reason(db)  # warm: the grant answers
    base: list[int] = []
    covered: list[int] = []
    for _ in range(4):
        base += timings(lambda: allowed(**ARGS), n // 4)
        covered += timings(lambda: granted(**ARGS), n // 4)
    print(f"a call a grant covers vs an allowed call, {n} each, alternating slices (target: at most +10 us)")
    print(f"  allowed call       median {pct(base, 0.5):8.2f} us   p99 {pct(base, 0.99):8.2f} us")
    print(f"  granted call       median {pct(covered, 0.5):8.2f} us   p99 {pct(covered, 0.99):8.2f} us")
    print(f"  added by the grant median {pct(covered, 0.5) - pct(base, 0.5):8.2f} us")

    same = parse_policy(GRANTED_POLICY.replace("version: 1", "version: 1\n# shadow"))
    # One rule of the tool changed: the shadow's plan differs, so its rules are evaluated again.
    changed = parse_policy(GRANTED_POLICY.replace("args.amount > 10000.0", "args.amount > 5000.0", 1))
    env = governor.environment

    def record(shadow: Any) -> Callable[[], Any]:
        return lambda: record_call(
            db, policy, agent="bench", environment=env, tool="issue_refund", args=ARGS, session="s", shadow=shadow
        )

    plain: list[int] = []
    reused: list[int] = []
    evaluated: list[int] = []
    for _ in range(4):
        plain += timings(record(None), n // 4)
        reused += timings(record(same), n // 4)
        evaluated += timings(record(changed), n // 4)
    print(f"a call decided and recorded with and without a shadow policy, {n} each (target: at most +15 us)")
    print(f"  enforced only      median {pct(plain, 0.5):8.2f} us   p99 {pct(plain, 0.99):8.2f} us")
    print(
        f"  shadow, same rules median {pct(reused, 0.5):8.2f} us   p99 {pct(reused, 0.99):8.2f} us  (decision reused)"
    )
    print(f"  shadow, 1 rule new median {pct(evaluated, 0.5):8.2f} us   p99 {pct(evaluated, 0.99):8.2f} us")
    print(
        f"  added by shadow    median {pct(reused, 0.5) - pct(plain, 0.5):8.2f} us (same rules)"
        f"   {pct(evaluated, 0.5) - pct(plain, 0.5):8.2f} us (10 rules evaluated again)"
    )


def _last_reason(db: Any) -> str:
    granted_refund_guarded = clearance.guard(granted_refund)
    granted_refund_guarded(**ARGS)
    with db.read() as cur:
        cur.execute("SELECT body FROM events WHERE kind = 'tool_call.decided' ORDER BY seq DESC LIMIT 1")
        return str(cur.fetchone()[0])


if __name__ == "__main__":
    main()
