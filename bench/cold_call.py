"""Where a governed call's time goes, hot (calls back to back) and cold (other Python work between
calls, as inside an agent framework, which runs milliseconds of its own code between tool calls).

Each stage is timed in the calling thread's CPU time (`time.thread_time_ns`, so other processes'
load does not count), by wrapping the function that does it; the wrappers add a little of their
own. "Between" calls, the cold run builds a dict of JUNK strings and serialises some of them:
what evicts the CPU caches a call would otherwise find warm. Prints figures; asserts nothing.

    .venv/bin/python bench/cold_call.py [--calls 1000] [--junk 20000]

`--plain N` makes N calls with nothing timed or wrapped, for counting instructions, which load
on the machine does not move: the difference of two runs is N2 - N1 calls'
(`--separate-threads=yes` gives the calling thread its own file, `*-01`):

    valgrind --tool=callgrind --separate-threads=yes .venv/bin/python bench/cold_call.py --plain 100
    valgrind --tool=callgrind --separate-threads=yes .venv/bin/python bench/cold_call.py --plain 1100
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import clearance
from clearance._guard import _backend, _governor, _record, _runtime
from clearance._store import _events
from clearance.integrations import _common
from clearance.policy import _compile

POLICY = """version: 1
default: allow
tools:
  lookup:
    rules:
      - {id: long, when: 'size(args.order_id) > 64', effect: block}
"""
STAGES: dict[str, list[int]] = {}


def timed(owner: Any, name: str, label: str) -> None:
    """Time every call of `owner.name` under `label`."""
    inner = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return inner(*args, **kwargs)
        finally:
            STAGES.setdefault(label, []).append(time.thread_time_ns() - started)

    setattr(owner, name, wrapper)


class _Cursor:
    """A cursor whose statements are timed by their first word."""

    def __init__(self, cur: Any) -> None:
        self._cur = cur

    def execute(self, sql: str, *args: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return self._cur.execute(sql, *args)
        finally:
            STAGES.setdefault(f"  SQL {sql.split()[0]}", []).append(time.thread_time_ns() - started)

    def executemany(self, sql: str, *args: Any) -> Any:
        started = time.thread_time_ns()
        try:
            return self._cur.executemany(sql, *args)
        finally:
            STAGES.setdefault(f"  SQL {sql.split()[0]}", []).append(time.thread_time_ns() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cur, name)


class _Connection:
    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def cursor(self) -> _Cursor:
        return _Cursor(self._conn.cursor())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def run(calls: int, between: Callable[[], Any]) -> dict[str, float]:
    """Median µs per stage over `calls` governed calls (after 100 unmeasured), `between()` before each."""
    whole: list[int] = []
    for i in range(calls + 100):
        between()
        started = time.thread_time_ns()
        governor, ticket = _common.begin("lookup", {"order_id": f"A-{i}"})
        governor.finish(ticket, error=None, duration_s=0.001, result="ok")
        whole.append(time.thread_time_ns() - started)
        if i == 99:
            STAGES.clear()
            whole.clear()
    out = {"begin + finish": statistics.median(whole) / 1000}
    out.update({k: statistics.median(v) / 1000 for k, v in STAGES.items()})
    STAGES.clear()
    return out


def plain(calls: int) -> None:
    """`calls` allowed calls after 50 unmeasured, nothing wrapped."""
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "policy.yaml").write_text(POLICY)
        clearance.configure(policy=str(Path(tmp, "policy.yaml")), database_url=str(Path(tmp, "b.db")), agent="bench")
        for i in range(50 + calls):
            governor, ticket = _common.begin("lookup", {"order_id": f"A-{i}"})
            governor.finish(ticket, error=None, duration_s=0.001, result="ok")
        clearance.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--junk", type=int, default=20000)
    parser.add_argument("--plain", type=int, default=None, help="make this many calls, untimed (for callgrind)")
    a = parser.parse_args()
    if a.plain is not None:
        plain(a.plain)
        return
    timed(_governor.Governor, "begin", "Governor.begin")
    timed(_record, "prepare", "  arguments checked, serialised, hashed")
    timed(_compile.Policy, "decide_rules", "  decided (CEL)")
    timed(_record, "decided_event", "  record built")
    timed(_events, "append", "  appended (chain hash, SELECT head, INSERT)")
    timed(_backend.Backend, "finish", "finish (outcome queued)")
    junk = [str(i) * 3 for i in range(a.junk)]

    def cold() -> None:
        seen = {}
        for text in junk:
            seen[text] = len(text)
        json.dumps(junk[:2000])

    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "policy.yaml").write_text(POLICY)
        clearance.configure(policy=str(Path(tmp, "policy.yaml")), database_url=str(Path(tmp, "b.db")), agent="bench")
        db = _runtime.current().db  # type: ignore[attr-defined]
        db._conn = _Connection(db._conn)
        hot = run(a.calls, lambda: None)
        started = time.perf_counter()
        cold()
        gap = (time.perf_counter() - started) * 1e6
        chilled = run(a.calls, cold)
        clearance.shutdown()
    print(f"a governed allowed call, median thread CPU µs over {a.calls} calls (1 rule, SQLite WAL)")
    print(f"{'stage':<48}{'hot':>10}{'cold':>10}")
    for stage in chilled:
        print(f"{stage:<48}{hot.get(stage, float('nan')):>10.1f}{chilled[stage]:>10.1f}")
    print(f"(cold: about {gap:.0f} µs of other Python work between calls; stages overlap: SQL is inside")
    print(" Governor.begin, and the indented stages are parts of it)")


if __name__ == "__main__":
    main()
