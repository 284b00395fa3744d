"""The spool's backlog: exact whoever writes it, counted without holding up `put` (the guard's hot path)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clearance._remote._spool import SinkCursor, Spool
from clearance._store._events import Event, make_event

from ..conftest import REPO
from ..server.conftest import Server


def _events(n: int) -> list[Event]:
    return [make_event("note", i, {"agent": "a", "environment": "test"}) for i in range(n)]


def _truth(path: Path) -> int:
    """The backlog as a full count on a connection of the test's own."""
    conn = sqlite3.connect(path)
    try:
        shipped = "(SELECT position FROM positions WHERE name = '$shipper')"
        return int(conn.execute(f"SELECT COUNT(*) FROM spool WHERE seq > {shipped}").fetchone()[0])
    finally:
        conn.close()


def test_the_backlog_is_exact_through_put_shipping_duplicates_another_writer_and_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path)
    other = Spool(path)  # another process on the same file (a second worker of the same app)
    sinks = SinkCursor(path)
    try:
        sinks.start(["siem"])  # a sink that holds shipped rows back: they stay, but are not waiting
        first = _events(6)
        spool.put(first)
        assert spool.size() == 6
        spool.put([*first[:4], *_events(2)])  # duplicates are ignored, but use numbers up
        assert spool.size() == 8 == _truth(path)
        rows = spool.peek(3)
        spool.settle(rows, {1: "refused"})  # shipped, one refused and kept aside: none waits
        assert spool.size() == 5
        spool.reject(spool.peek(2), "a 422")
        assert spool.size() == 3
        other.put([*first[:1], *_events(4)])  # another writer: its rows, and a duplicate of one shipped
        assert spool.size() == 7 == other.size() == _truth(path)
        other.settle(other.peek(5), {})  # shipped by the other process, past the duplicates' numbers
        assert spool.size() == 2 == other.size() == _truth(path)
        sinks.save("siem", 10**6)  # the sink passed everything: shipped rows go
        assert spool.size() == 2
    finally:
        sinks.close()
        other.close()
        spool.close()
    again = Spool(path)  # a restart counts from scratch
    try:
        assert again.size() == 2
        again.drop(again.peek()[-1][0])
        assert again.size() == 0 == _truth(path)
    finally:
        again.close()


_STEP = st.one_of(
    st.tuples(st.just("put"), st.integers(1, 5), st.integers(0, 3)),  # new records, duplicates of earlier ones
    st.tuples(st.just("ship"), st.integers(1, 6), st.integers(0, 1)),  # a batch shipped (by the other process)
    st.tuples(st.just("sink"), st.integers(0, 1), st.integers(0, 0)),  # the sink catches up (rows go)
    st.tuples(st.just("restart"), st.integers(0, 0), st.integers(0, 0)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_STEP, max_size=25))
def test_the_backlog_matches_a_full_count_after_any_steps(steps: list[tuple[str, int, int]]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "spool.db"
        spools = [Spool(path), Spool(path)]
        sinks = SinkCursor(path)
        sinks.start(["siem"])
        made: list[Event] = []
        try:
            for step, n, k in steps:
                if step == "put":
                    new = _events(n)
                    spools[0].put([*new, *made[-k:][:k]] if k else new)
                    made += new
                elif step == "ship" and (rows := spools[k].peek(n)):
                    spools[k].settle(rows, {})
                elif step == "sink":
                    sinks.save("siem", 10**6)
                elif step == "restart":
                    spools[0].close()
                    spools[0] = Spool(path)
                assert spools[0].size() == spools[1].size() == _truth(path), steps
        finally:
            sinks.close()
            for spool in spools:
                spool.close()


class _Gate:
    """Once armed, stops the next backlog count (a statement with COUNT) until `go` is set."""

    def __init__(self) -> None:
        self.armed = False
        self.counting = threading.Event()
        self.go = threading.Event()


class _Pausing:
    """A sqlite3 connection whose statements pass through `gate`."""

    def __init__(self, conn: sqlite3.Connection, gate: _Gate) -> None:
        self._conn, self._gate = conn, gate

    def execute(self, sql: str, *args: Any) -> Any:
        if self._gate.armed and "COUNT(" in sql:
            self._gate.armed = False
            self._gate.counting.set()
            assert self._gate.go.wait(30)
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_put_is_not_held_up_while_the_backlog_is_counted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gate, real = _Gate(), sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **kw: _Pausing(real(*a, **kw), gate))
    spool = Spool(tmp_path / "spool.db")  # every connection it opens passes through the gate
    monkeypatch.setattr(sqlite3, "connect", real)
    spool.put(_events(3))
    gate.armed = True
    counted: list[int] = []
    counter = threading.Thread(target=lambda: counted.append(spool.size()))
    put = threading.Thread(target=spool.put, args=(_events(2),))
    try:
        counter.start()
        assert gate.counting.wait(30)  # the count is under way, and stays so until `go`
        put.start()
        put.join(30)
        assert not put.is_alive(), "put waited for the count"
    finally:
        gate.go.set()
        counter.join(30)
        put.join(30)
    assert counted == [3]  # the count as of when it began
    assert spool.size() == 5
    spool.close()


def test_the_spool_gauges_read_the_status_once_per_collection(server: Server, tmp_path: Path) -> None:
    # Its own process: a MeterProvider is set once per process.
    script = textwrap.dedent(
        f"""
        import json
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        import clearance
        from clearance._remote import _status

        reads = []
        real = _status.spool_status
        _status.spool_status = lambda: reads.append(1) or real()
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        clearance.configure(server_url={server.base!r}, api_key={server.agent!r}, spool_path={str(tmp_path / "s.db")!r})

        @clearance.guard
        def lookup(order_id: str) -> str:
            return order_id

        lookup("o1")
        clearance.flush()
        seen = []
        for _ in range(2):
            names = [m.name for rm in reader.get_metrics_data().resource_metrics
                     for sm in rm.scope_metrics for m in sm.metrics]
            seen.append(sorted(n for n in names if n.startswith("clearance.spool.")))
        print(json.dumps({{"reads": len(reads), "seen": seen}}))
        clearance.shutdown()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CLEARANCE_OTEL": "true"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["seen"] == [["clearance.spool.backlog", "clearance.spool.last_ship_age"]] * 2
    assert got["reads"] == 2  # one per collection, not one per gauge
