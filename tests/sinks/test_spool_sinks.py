"""Remote mode's spool as a source: rows stay until shipped and passed by every sink; numbers never reused."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from clearance._remote._spool import Spool
from clearance._settings import Settings
from clearance._sinks import Sinks
from clearance._sinks import _process as exporting
from clearance._sinks._sources import SpoolSource
from clearance._store._events import make_event

from .test_sinks import Collecting


def _events(n: int, start: int = 0) -> list:  # type: ignore[type-arg]
    return [make_event("note", start + i, {"agent": "a", "environment": "test"}) for i in range(n)]


def test_the_spool_keeps_rows_a_sink_has_not_passed_and_never_reuses_their_numbers(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    sink = Collecting()
    sink.gate = threading.Event()
    sinks = Sinks([sink], SpoolSource(spool), linger=0)
    try:
        first = _events(3)
        spool.put(first)
        assert sink.entered.wait(30)
        rows = spool.peek()
        spool.drop(rows[-1][0])  # shipped, but the sink has not passed them
        assert spool.size() == 0 and sinks.status()[0].backlog == 3
        sink.gate.set()
        got = sink.wait_for(3)
        assert [r.id for r in got] == [e.id for e in first]
        assert (got[0].kind, got[0].hash) == ("note", None)
        sinks.close()
        with sqlite3.connect(spool.path) as conn:  # shipped and delivered: gone
            assert conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0
        spool.put(_events(1, 10))
        assert spool.peek()[0][0] == rows[-1][0] + 1  # the emptied table does not start again at 1
    finally:
        sink.gate.set()
        sinks.close()
        spool.close()


def test_a_sink_no_longer_configured_stops_holding_rows(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    sink = Collecting()
    sink.gate = threading.Event()
    sinks = Sinks([sink], SpoolSource(spool), linger=0)
    spool.put(_events(2))
    assert sink.entered.wait(30)
    spool.drop(spool.peek()[-1][0])
    sink.gate.set()
    sinks.close()
    spool.put(_events(2, 5))
    with sqlite3.connect(spool.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0] >= 2
    source = SpoolSource(spool)
    source.forget([])  # the next run has no sinks
    source.close()
    spool.drop(spool.peek()[-1][0])
    with sqlite3.connect(spool.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0
    spool.close()


@pytest.mark.parametrize("then", [["b"], []], ids=["renamed", "removed"])
def test_a_sink_renamed_or_removed_delivers_what_it_had_not_passed_before_its_position_goes(
    then: list[str], tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool.db")
    governor = SimpleNamespace(spool=spool)  # remote mode: the sinks read the governor's spool
    old = Collecting("a")
    old.gate = threading.Event()
    try:
        exporting.replace(Settings(), [old], governor)()
        first = _events(1)
        spool.put(first)
        assert old.entered.wait(30)  # delivering the first row, not having read the next ones
        later = _events(2, 5)
        spool.put(later)
        spool.drop(spool.peek()[-1][0])  # all shipped: only the sink holds them
        retire = exporting.replace(Settings(), [Collecting(n) for n in then], governor)
        old.gate.set()
        retire()  # the old sink's final pass, then its position goes
        assert [r.id for r in old.got] == [e.id for e in first + later]
        with sqlite3.connect(spool.path) as conn:
            names = {n for (n,) in conn.execute("SELECT name FROM positions WHERE name <> '$shipper'")}
            assert names == set(then)
            assert conn.execute("SELECT COUNT(*) FROM spool").fetchone()[0] == 0  # passed by all: gone
    finally:
        old.gate.set()
        exporting.close()
        spool.close()


def test_an_older_spool_is_renumbered_by_autoincrement_keeping_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE spool (seq INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, body TEXT NOT NULL)")
        conn.execute("INSERT INTO spool VALUES (7, 'evt_a', '{\"id\":\"evt_a\"}')")
    spool = Spool(path)
    try:
        assert spool.peek() == [(7, '{"id":"evt_a"}')] and spool.size() == 1
    finally:
        spool.close()


def test_the_public_sinks_module_is_pinned() -> None:
    import clearance.sinks

    assert sorted(clearance.sinks.__all__) == ["JsonLinesSink", "OtelSink", "Record", "Sink", "SinkStatus", "status"]


def test_a_spool_transaction_that_fails_part_way_is_rolled_back_and_the_next_put_writes(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    try:
        spool.put(_events(2))
        rows = spool.peek()
        broken = [(rows[0][0], "not json"), rows[1]]  # a body whose id cannot be read
        with pytest.raises(ValueError):
            spool.settle(broken, {0: "refused"})
        spool.put(_events(1, 10))  # the connection is not left inside the failed transaction
        with pytest.raises(ValueError):
            spool.reject(broken, "invalid batch")
        spool.put(_events(1, 20))
        assert spool.size() == 4 and spool.rejected() == []  # nothing of the failed ones was kept
    finally:
        spool.close()
