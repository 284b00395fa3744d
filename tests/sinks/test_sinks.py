"""The event sink hook on the embedded store: every committed event, once, in order, off the hot path."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance._clock import ManualClock
from clearance._guard import _runtime as runtime
from clearance._sinks import JsonLinesSink, Record, Sinks
from clearance._sinks import _process as exporting
from clearance._sinks._sources import StoreSource
from clearance._store import Database
from clearance._store import _events as events
from clearance._store._db import on_commit
from clearance.errors import ConfigurationError

from .._wait import until
from ..conftest import REPO

POLICY = """\
version: 1
default: allow
tools:
  wire:
    rules:
      - {id: big, when: 'args.amount > 100', effect: block}
"""


class Collecting:
    """A sink that keeps what it is given and lets a test wait for a count; it can fail or block."""

    def __init__(self, name: str = "collect") -> None:
        self.name = name
        self.got: list[Record] = []
        self.changed = threading.Condition()
        self.fail = 0  # raise on this many more attempts
        self.gate: threading.Event | None = None  # block in deliver until set
        self.entered = threading.Event()

    def deliver(self, batch: Sequence[Record]) -> None:
        self.entered.set()
        if self.gate is not None:
            self.gate.wait()
        with self.changed:
            if self.fail:
                self.fail -= 1
                self.changed.notify_all()
                raise OSError("the SIEM is down")
            self.got.extend(batch)
            self.changed.notify_all()

    def wait_for(self, n: int, timeout: float = 30) -> list[Record]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.got) >= n, timeout), f"{len(self.got)} of {n}"
            return list(self.got)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    path = str(tmp_path / "audit.db")
    Database(path).close()
    yield path


@pytest.fixture
def wire(tmp_path: Path, store: str) -> Callable[..., Callable[..., str]]:
    def setup(**kw: Any) -> Callable[..., str]:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        clearance.configure(policy=str(policy), database_url=store, agent="payer", outcome_delay=0, **kw)

        @clearance.guard
        def wire(to: str, amount: float) -> str:
            return f"sent {amount} to {to}"

        return wire

    return setup


def stored(path: str) -> list[tuple[int, str, str, str, str]]:
    db = Database(path)
    try:
        with db.read() as cur:
            cur.execute("SELECT seq, id, body, prev_hash, hash FROM events ORDER BY seq")
            return [tuple(r) for r in cur.fetchall()]
    finally:
        db.close()


def test_every_committed_event_arrives_once_in_order_in_the_jsonl_file(
    tmp_path: Path, store: str, wire: Callable[..., Callable[..., str]]
) -> None:
    out = tmp_path / "feed" / "audit.jsonl"
    out.parent.mkdir()
    send = wire(exporters=[JsonLinesSink(out)])
    for n in range(25):
        send("acme", n)
    hostile = '\u202e"}\n{"forged": true} \\ \u2028'
    with pytest.raises(clearance.ToolCallBlocked):
        send(hostile, 1e9)
    clearance.shutdown()  # the sinks deliver what is committed before they stop
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""
    got = [json.loads(line) for line in lines[:-1]]
    rows = [r for r in stored(store) if json.loads(r[2])["kind"] != "policy.activated"]
    got = [g for g in got if g["kind"] != "policy.activated"]
    assert [(g["seq"], g["id"], g["prev_hash"], g["hash"]) for g in got] == [(r[0], r[1], r[3], r[4]) for r in rows]
    for line, (_, _, body, prev, chain) in zip([x for x in lines if b"policy.activated" not in x], rows, strict=False):
        text = line.decode()[line.decode().index(',"event":') + 9 : -1]
        assert text == body  # the body byte for byte: the chain hash checks from the line alone
        assert hashlib.sha256((prev + text).encode()).hexdigest() == chain
    assert got[-1]["event"]["args"]["to"] == hostile


def test_a_rolled_back_transaction_never_reaches_a_sink(store: str) -> None:
    woken: list[int] = []
    remove = on_commit(store, lambda: woken.append(1))
    sink = Collecting()
    sinks = Sinks([sink], StoreSource(store), linger=0)
    db = Database(store)
    try:
        lost = events.make_event("note", 1, {"agent": "a", "environment": "test"})
        with pytest.raises(RuntimeError), db.write() as cur:
            events.append(db, cur, [lost])
            raise RuntimeError("the transaction fails after the append")
        assert woken == []  # no commit, no hook
        kept = events.make_event("note", 2, {"agent": "a", "environment": "test"})
        with db.write() as cur:
            events.append(db, cur, [kept])
        assert woken == [1]
        got = sink.wait_for(1)
        assert [r.id for r in got] == [kept.id]
        assert (got[0].kind, got[0].at_us, got[0].body) == ("note", 2, kept.body)
    finally:
        remove()
        sinks.close()
        db.close()
    assert lost.id not in {r.id for r in sink.got}


def test_a_failing_sink_is_retried_from_where_it_stopped_and_loses_nothing(
    store: str, wire: Callable[..., Callable[..., str]]
) -> None:
    send = wire()
    sink = Collecting()
    sink.fail = 3
    sinks = Sinks([sink], StoreSource(store), linger=0, most=0.01, batch=7)
    try:
        for n in range(20):
            send("acme", n)
        got = sink.wait_for(40)
        status = sinks.status()[0]
        assert status.failed == 3 and status.delivered == 40 and status.backlog == 0
        assert status.last_error is None
    finally:
        sinks.close()
    ids = [r[1] for r in stored(store)][-40:]
    assert [r.id for r in got] == ids  # every event once, in commit order


def test_a_blocked_sink_does_not_hold_up_guarded_calls(store: str, wire: Callable[..., Callable[..., str]]) -> None:
    send = wire()
    sink = Collecting()
    sink.gate = threading.Event()
    sinks = Sinks([sink], StoreSource(store), linger=0, timeout=0)
    try:
        send("acme", 1)
        assert sink.entered.wait(30)  # the sink is stuck inside deliver
        for n in range(1000):
            assert send("acme", n % 100) == f"sent {n % 100} to acme"
        status = sinks.status()[0]
        assert status.stalled and status.delivered == 0 and status.backlog == 2002
        sink.gate.set()
        got = sink.wait_for(2002)
        assert len({r.id for r in got}) == 2002
    finally:
        sink.gate.set()
        sinks.close()


_CRASH = """
import os, signal, sys, threading
import clearance

class Stuck:
    name = "jsonl:" + sys.argv[2]
    def deliver(self, batch):
        threading.Event().wait()  # never delivers

clearance.configure(policy=sys.argv[3], database_url=sys.argv[1], agent="payer", outcome_delay=0, exporters=[Stuck()])

@clearance.guard
def wire(to: str, amount: float) -> str:
    return "sent"

for n in range(10):
    wire("acme", n)
print("committed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _child(script: str, store: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run `script` with the store, the feed's path (tmp_path/audit.jsonl) and a policy as its arguments."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    argv = [sys.executable, "-c", script, store, str(tmp_path / "audit.jsonl"), str(policy)]
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)


def test_events_committed_before_a_kill_9_are_delivered_at_the_next_start(tmp_path: Path, store: str) -> None:
    out = tmp_path / "audit.jsonl"
    run = _child(_CRASH, store, tmp_path)
    assert run.returncode == -9 and run.stdout == "committed\n", run.stderr
    assert not out.exists()  # committed, never delivered
    sink = JsonLinesSink(out)
    sinks = Sinks([sink], StoreSource(store), linger=0)
    sinks.close()  # one pass delivers what the killed process left
    got = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    calls = [r[1] for r in stored(store) if json.loads(r[2])["kind"].startswith("tool_call.")]
    assert len(calls) == 20 and got[-20:] == calls


def test_sinks_are_counted_and_named_uniquely(store: str, wire: Callable[..., Callable[..., str]]) -> None:
    with pytest.raises(ConfigurationError, match="same name"):
        wire(exporters=[Collecting("a"), Collecting("a")])
    with pytest.raises(ConfigurationError, match="unknown exporter"):
        wire(exporters=["syslog:local0"])
    with pytest.raises(ConfigurationError, match="not an event sink"):
        wire(exporters=[object()])
    sink = Collecting()
    send = wire(exporters=[sink])
    send("acme", 5)
    sink.wait_for(2)
    (status,) = exporting.status()
    assert (status.name, status.failed, status.stalled) == ("collect", 0, False)
    assert status.delivered >= 2
    clearance.shutdown()
    assert exporting.status() == []


def _failing_close(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """Make the current governor's close() raise (after closing), and return the sink threads running now."""
    governor = runtime._current
    assert governor is not None
    closing = governor.close

    def close() -> None:
        closing()
        raise OSError("the store is read-only")

    monkeypatch.setattr(governor, "close", close)
    assert exporting._current is not None
    return [w.thread for w in exporting._current._workers]


@pytest.mark.parametrize("then", ["configure", "shutdown"])
def test_the_old_sinks_stop_even_when_the_old_governor_fails_to_close(
    then: str, store: str, wire: Callable[..., Callable[..., str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = Collecting()
    wire(exporters=[sink])("acme", 5)
    sink.wait_for(2)
    threads = _failing_close(monkeypatch)
    assert threads
    try:
        with pytest.raises(OSError, match="read-only"):
            wire(exporters=[]) if then == "configure" else clearance.shutdown()
        for thread in threads:
            thread.join(5)
        assert not any(t.is_alive() for t in threads)
        assert exporting.status() == []
    finally:
        clearance.shutdown()


class Closing(Collecting):
    """A collecting sink that counts its close() calls."""

    def __init__(self, name: str = "collect") -> None:
        super().__init__(name)
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def _commit_one(store: str) -> None:
    db = Database(store)
    try:
        with db.write() as cur:
            events.append(db, cur, [events.make_event("note", 1, {"agent": "a", "environment": "test"})])
    finally:
        db.close()


def test_a_sink_object_the_next_configuration_also_uses_is_closed_once_by_the_last(store: str) -> None:
    sink = Closing()
    first = Sinks([sink], StoreSource(store), linger=0, poll=0.05)
    second = Sinks([sink], StoreSource(store), linger=0, poll=0.05)
    try:
        first.close()
        assert sink.closed == 0  # the second configuration's worker still delivers to it
        _commit_one(store)
        sink.wait_for(1)
    finally:
        second.close()
        first.close()
    assert sink.closed == 1


def test_a_retired_sink_is_closed_while_its_successor_of_the_same_name_delivers(store: str) -> None:
    old, new = Closing(), Closing()
    new.gate = threading.Event()
    second = Sinks([new], StoreSource(store), linger=0, poll=0.05)
    try:
        _commit_one(store)
        assert new.entered.wait(30)  # holding the name's slot
        first = Sinks([old], StoreSource(store), linger=0, poll=0.05)
        first.close()
        assert old.closed == 1 and new.closed == 0
    finally:
        new.gate.set()
        second.close()
    assert new.closed == 1


class _Unsubscribable(StoreSource):
    def subscribe(self, wake: Callable[[], None]) -> Callable[[], None]:
        raise RuntimeError("no hook")


def test_sinks_that_fail_to_start_give_their_slots_back(store: str) -> None:
    from clearance._sinks import _engine

    source = _Unsubscribable(store)
    try:
        with pytest.raises(RuntimeError, match="no hook"):
            Sinks([Collecting("fails-to-start")], source)
    finally:
        source.close()
    assert not [k for k in _engine._slots if k[1] == "fails-to-start"]


def test_the_jsonl_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(out, fsync=True)
    body = json.dumps({"id": "evt_1", "kind": "note"})
    sink.deliver([Record(1, "evt_1", "note", 1, body, "0" * 64, "1" * 64)])
    out.rename(tmp_path / "audit.jsonl.1")  # logrotate's default: move, then the writer reopens
    sink.deliver([Record(2, "evt_2", "note", 2, body, "1" * 64, "2" * 64)])
    sink.close()
    assert [json.loads(x)["seq"] for x in (tmp_path / "audit.jsonl.1").read_text().splitlines()] == [1]
    assert [json.loads(x)["seq"] for x in out.read_text().splitlines()] == [2]


def test_a_body_that_is_not_strict_json_is_written_in_its_marked_form(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    sink = JsonLinesSink(out)
    deep = '{"id":"evt_1","kind":"note","args":' + "[" * 2000 + "]" * 2000 + "}"
    odd = '{"id":"evt_2","kind":"note","n":1e400,"s":"\\ud800"}'
    marked = '{"id":"evt_3","kind":"note","args":{"n":{"$int":"123456789012345678901234567890"}}}'
    sink.deliver([Record(n + 1, f"evt_{n + 1}", "note", 0, b) for n, b in enumerate([deep, odd, marked, "not json"])])
    sink.close()
    lines = out.read_text(encoding="utf-8").splitlines()
    got = [json.loads(x)["event"] for x in lines]
    assert "$degraded" in got[0] and "$degraded" in got[1] and "$degraded" in got[3]
    assert got[1]["n"] == {"$number": "1e400"} and got[1]["s"] == "\\ud800"
    assert lines[2].endswith(',"event":' + marked + "}")  # a marked form passes through as stored
    assert got[3]["$preview"] == "not json"


_APPEND = """
import sys
from clearance._store import Database
from clearance._store import _events as events

db = Database(sys.argv[1])
with db.write() as cur:
    events.append(db, cur, [events.make_event("note", 1, {"agent": "a", "environment": "test"})])
"""


def test_a_sink_reads_what_another_process_commits(store: str) -> None:
    sink = Collecting()
    sinks = Sinks([sink], StoreSource(store), linger=0, poll=0.05)  # its hook is not ours: found by polling
    try:
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        subprocess.run([sys.executable, "-c", _APPEND, store], check=True, env=env, timeout=60)
        assert [r.kind for r in sink.wait_for(1)] == ["note"]
    finally:
        sinks.close()


class Counting(StoreSource):
    """A store source that records each position save."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.saves: list[tuple[str, int]] = []

    def save(self, name: str, position: int) -> None:
        super().save(name, position)
        self.saves.append((name, position))


class Batches(Collecting):
    """Keeps the size of each batch it is given."""

    def __init__(self, name: str = "collect") -> None:
        super().__init__(name)
        self.sizes: list[int] = []

    def deliver(self, batch: Sequence[Record]) -> None:
        self.sizes.append(len(batch))
        super().deliver(batch)


def _notes(db: Database, n: int, *, one_transaction: bool = False) -> list[str]:
    made = [events.make_event("note", i, {"agent": "a", "environment": "test"}) for i in range(n)]
    for group in [made] if one_transaction else [[e] for e in made]:
        with db.write() as cur:
            events.append(db, cur, group)
    return [e.id for e in made]


def test_commits_made_while_a_sink_lingers_arrive_in_one_batch(store: str) -> None:
    sink = Batches()
    source = Counting(store)
    sinks = Sinks([sink], source, linger=60, batch=10)  # only a full batch waiting ends the linger
    db = Database(store)
    try:
        ids = _notes(db, 10)  # ten commits: the tenth hurries the worker
        got = sink.wait_for(10)
        assert sink.sizes == [10] and [r.id for r in got] == ids
        until(lambda: bool(source.saves), "a save", timeout=30)  # saved after the batch is delivered
        assert source.saves == [(sink.name, got[-1].seq)]  # one save for the pass
    finally:
        sinks.close()
        db.close()


def test_the_position_is_saved_once_per_pass_not_per_batch(store: str) -> None:
    sink = Batches()
    source = Counting(store)
    sinks = Sinks([sink], source, linger=0, batch=4)
    db = Database(store)
    try:
        ids = _notes(db, 10, one_transaction=True)
        got = sink.wait_for(10)
    finally:
        sinks.close()
        db.close()
    assert sink.sizes == [4, 4, 2] and [r.id for r in got] == ids
    assert source.saves == [(sink.name, got[-1].seq)]
    db = Database(store)
    try:
        with db.read() as cur:
            cur.execute("SELECT position FROM sink_positions WHERE sink = 'collect'")
            assert cur.fetchone()[0] == got[-1].seq  # durable
    finally:
        db.close()


_DIES_AFTER_DELIVERING = """
import os, signal, sys, threading
import clearance
from clearance.sinks import JsonLinesSink

class Dying(JsonLinesSink):
    calls = 0
    def deliver(self, batch):
        super().deliver(batch)  # written and flushed: delivered, but the position is not saved yet
        self.calls += sum(r.kind.startswith("tool_call.") for r in batch)
        if self.calls >= 20:
            os.kill(os.getpid(), signal.SIGKILL)

clearance.configure(policy=sys.argv[3], database_url=sys.argv[1], agent="payer", outcome_delay=0,
                    exporters=[Dying(sys.argv[2])])

@clearance.guard
def wire(to: str, amount: float) -> str:
    return "sent"

for n in range(10):
    wire("acme", n)
threading.Event().wait(60)  # the sink kills the process once it has the twenty records
"""


def test_a_batch_delivered_just_before_a_kill_9_comes_again_at_the_next_start(
    tmp_path: Path, store: str, clock: ManualClock
) -> None:
    out = tmp_path / "audit.jsonl"
    run = _child(_DIES_AFTER_DELIVERING, store, tmp_path)
    assert run.returncode == -9, run.stderr
    calls = [r[1] for r in stored(store) if json.loads(r[2])["kind"].startswith("tool_call.")]
    before = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert len(calls) == 20 and [i for i in before if i in calls] == calls  # all delivered once
    clock.set(time.time() + 31)  # the killed process's lease on the sink has run out
    Sinks([JsonLinesSink(out)], StoreSource(store), linger=0).close()  # the next start
    after = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    again = after[len(before) :]
    assert again and again == before[len(before) - len(again) :]  # the unsaved pass, again, in order
    assert calls[-1] in again


@pytest.mark.postgres
def test_on_postgresql_one_process_delivers_a_sink_and_another_takes_over(pg_url: str) -> None:
    Database(pg_url).close()
    a, b = Collecting("siem"), Collecting("siem")
    first = Sinks([a], StoreSource(pg_url), linger=0, poll=0.05)
    second = Sinks([b], StoreSource(pg_url), linger=0, poll=0.05)
    db = Database(pg_url)
    try:
        ids = _notes(db, 5)
        until(
            lambda: len(a.got) + len(b.got) == 5 and sum(s.status()[0].standby for s in (first, second)) == 1,
            "one delivers, one stands by",
            timeout=30,
        )
        (holding, sink), (waiting, other) = sorted([(first, a), (second, b)], key=lambda p: p[0].status()[0].standby)
        assert [r.id for r in sink.got] == ids and other.got == []  # each event once, by one process
        holding.close()  # its connection closes: the lock is free
        more = _notes(db, 3)
        got = other.wait_for(3)
        assert [r.id for r in got] == more  # from where the first one saved, not from its own start
        assert waiting.status()[0].standby is False
    finally:
        first.close()
        second.close()
        db.close()


class Overlapping(Collecting):
    """Blocks like `Collecting`, and records the most `deliver()` calls running at once."""

    def __init__(self, name: str = "siem") -> None:
        super().__init__(name)
        self.active = self.most = 0

    def deliver(self, batch: Sequence[Record]) -> None:
        with self.changed:
            self.active += 1
            self.most = max(self.most, self.active)
        try:
            super().deliver(batch)
        finally:
            with self.changed:
                self.active -= 1


def _abandon_then_reopen(url: str) -> None:
    """A sink blocked past close()'s timeout, opened again over the same store: each event once, one call at a time."""
    Database(url).close()
    sink = Overlapping()
    sink.gate = threading.Event()
    first = Sinks([sink], StoreSource(url), linger=0, poll=0.05)
    db = Database(url)
    second: Sinks | None = None
    try:
        ids = _notes(db, 3)
        assert sink.entered.wait(30)  # stuck inside deliver with the first batch
        ids += _notes(db, 5)
        first.close(timeout=0)  # gives up on it: abandoned
        second = Sinks([sink], StoreSource(url), linger=0, poll=0.05)
        ids += _notes(db, 4)
        # the new worker waits for the abandoned one, never delivers beside it
        until(lambda: second.status()[0].standby, "the new worker stands by", timeout=30)
        sink.gate.set()
        got = sink.wait_for(len(ids))
        first._workers[0].thread.join(30)
        second.close()
        more = _notes(db, 2)  # nothing delivers now; the next start begins after what was delivered
        third = Sinks([sink], StoreSource(url), linger=0)
        third.close()
        assert [r.id for r in sink.got] == ids + more and sink.most == 1, (got, sink.most)
    finally:
        sink.gate.set()
        first.close()
        if second is not None:
            second.close()
        db.close()


def test_a_sink_abandoned_at_close_is_not_delivered_beside_by_the_next_configuration(store: str) -> None:
    _abandon_then_reopen(store)


@pytest.mark.postgres
def test_on_postgresql_an_abandoned_sink_releases_its_lock_and_the_next_configuration_delivers(pg_url: str) -> None:
    _abandon_then_reopen(pg_url)


def test_a_saved_position_never_moves_back(store: str) -> None:
    source = StoreSource(store)
    try:
        source.start(["siem"])
        source.save("siem", 7)
        source.save("siem", 3)  # a late save from an older worker
        assert source.start(["siem"]) == {"siem": 7}
    finally:
        source.close()


def test_when_the_new_sinks_cannot_open_configure_keeps_the_old_ones_delivering(
    store: str, wire: Callable[..., Callable[..., str]]
) -> None:
    sink = Collecting("siem")
    send = wire(exporters=[sink])
    try:
        with pytest.raises(ConfigurationError):
            wire(exporters=[Collecting("twin"), Collecting("twin")])  # opening the new ones fails
        assert [s.name for s in exporting.status()] == ["siem"]
        send("acme", 1)
        got = sink.wait_for(2)  # the old governor and its sink still run
        assert [r.kind for r in got] == ["tool_call.decided", "tool_call.finished"]
    finally:
        clearance.shutdown()


def test_a_blocked_sink_makes_one_configure_wait_not_every_one(
    store: str, wire: Callable[..., Callable[..., str]]
) -> None:
    sink = Collecting("siem")
    sink.gate = threading.Event()
    send = wire(exporters=[sink])
    try:
        send("acme", 1)
        assert sink.entered.wait(30)
        wire(exporters=[sink])  # waits up to 5 s for the blocked call, then abandons it
        started = time.monotonic()
        wire(exporters=[sink])  # the worker waiting for it stops at once
        clearance.shutdown()
        assert time.monotonic() - started < 4
    finally:
        sink.gate.set()
        clearance.shutdown()


class _Full:
    """A file on a disk with `room` bytes left: a write past it writes what fits, then fails."""

    def __init__(self, file: Any, room: int) -> None:
        self.file, self.room = file, room

    def write(self, data: bytes) -> int:
        fits = data[: self.room]
        self.file.write(fits)
        self.file.flush()
        self.room -= len(fits)
        if len(fits) < len(data):
            raise OSError(28, "No space left on device")
        return len(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.file, name)


class FillingUp(JsonLinesSink):
    """The first batch finds the disk full part-way through; the retry has room."""

    room: int | None = 100

    def _open(self) -> Any:
        out, torn = super()._open()
        if self.room is None:
            return out, torn
        full, self.room = _Full(out, self.room), None
        return full, torn


def _batch(*seqs: int) -> list[Record]:
    return [Record(i, f"evt_{i}", "note", 0, json.dumps({"id": f"evt_{i}", "pad": "x" * 80}), None, None) for i in seqs]


def test_a_batch_cut_off_by_a_full_disk_leaves_one_torn_line_and_the_retry_starts_a_new_one(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    first = [Record(1, "evt_a", "note", 0, '{"id":"evt_a"}', None, None)]
    before = JsonLinesSink(out)
    before.deliver(first)
    before.close()
    sink = FillingUp(out)
    with pytest.raises(OSError):
        sink.deliver(_batch(2, 3))
    sink.deliver(_batch(2, 3))  # the retry
    sink.close()
    text = out.read_bytes()
    assert text.endswith(b"\n")
    lines = text.decode().splitlines()
    whole, torn = [], []
    for x in lines:
        try:
            whole.append(json.loads(x)["id"])
        except json.JSONDecodeError:
            torn.append(x)
    assert whole == ["evt_a", "evt_2", "evt_3"]  # every complete line parses
    assert len(torn) == 1 and len(torn[0]) == 100 and lines[2].startswith(torn[0])  # the retry began a new line


def test_a_failed_write_after_a_copytruncate_leaves_no_zero_bytes(tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    sink = FillingUp(out)
    sink.room = None
    sink.deliver(_batch(1, 2, 3))  # the sink's descriptor is now well past 100 bytes
    os.truncate(out, 0)  # logrotate's copytruncate
    sink.room = 100
    with pytest.raises(OSError):
        sink.deliver(_batch(4, 5))
    sink.deliver(_batch(4, 5))  # the retry
    sink.close()
    text = out.read_bytes()
    assert b"\0" not in text
    lines = text.decode().splitlines()
    assert len(lines) == 3 and lines[1].startswith(lines[0]) and len(lines[0]) == 100
    assert [json.loads(x)["id"] for x in lines[1:]] == ["evt_4", "evt_5"]
