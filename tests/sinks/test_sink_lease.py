"""One process at a time delivers a sink on SQLite too: a lease in its row, handed over on close or when it runs out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from clearance._clock import ManualClock
from clearance._sinks import JsonLinesSink, Record, Sinks, _engine
from clearance._sinks._sources import StoreSource
from clearance._store import Database

from .._wait import until
from ..conftest import REPO
from .test_sinks import POLICY, Collecting, _notes, stored

# An agent with a JSONL sink (so the sink `jsonl:<feed>`): ten governed calls, then it waits for a
# line on standard input and shuts down cleanly. Arguments: the store, the feed, a policy.
_AGENT = """
import sys
import clearance
from clearance.sinks import JsonLinesSink

clearance.configure(policy=sys.argv[3], database_url=sys.argv[1], agent="payer", outcome_delay=0,
                    exporters=[JsonLinesSink(sys.argv[2])])

@clearance.guard
def wire(to: str, amount: float) -> str:
    return "sent"

for n in range(10):
    wire("acme", n)
print("committed", flush=True)
sys.stdin.readline()
clearance.shutdown()
print("stopped", flush=True)
"""


@pytest.fixture
def store(tmp_path: Path) -> str:
    """A fresh store whose feed sink starts before its first event (so every event belongs in the feed)."""
    path = str(tmp_path / "audit.db")
    source = StoreSource(path)
    source.start([_name(tmp_path)])
    source.close()
    return path


@pytest.fixture
def agents() -> Iterator[list[subprocess.Popen[str]]]:
    """Agent processes started with `_agent`; any still running at the end are killed."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


def _name(tmp_path: Path) -> str:
    return JsonLinesSink(tmp_path / "feed.jsonl").name


def _agent(tmp_path: Path, store: str, started: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    """Start `_AGENT` on `store` and wait until its ten calls are committed."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    argv = [sys.executable, "-c", _AGENT, store, str(tmp_path / "feed.jsonl"), str(policy)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    started.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "committed\n"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    """Tell an agent to shut down cleanly and wait until it has."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("stop\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == "stopped\n"
    assert proc.wait(30) == 0


def _fed(tmp_path: Path) -> list[str]:
    """The event ids in the feed, in the order written."""
    feed = tmp_path / "feed.jsonl"
    return [json.loads(line)["id"] for line in feed.read_text().splitlines()] if feed.exists() else []


def _ids(store: str) -> list[str]:
    return [row[1] for row in stored(store)]


def _saved(store: str, name: str) -> int:
    db = Database(store)
    try:
        with db.read() as cur:
            cur.execute("SELECT position FROM sink_positions WHERE sink = :s", {"s": name})
            return int(cur.fetchone()[0])
    finally:
        db.close()


def test_two_processes_on_one_sqlite_store_deliver_each_event_once_and_a_clean_stop_hands_over_at_once(
    tmp_path: Path, store: str, agents: list[subprocess.Popen[str]]
) -> None:
    first = _agent(tmp_path, store, agents)
    until(lambda: set(_fed(tmp_path)) == set(_ids(store)), "the first agent delivers its calls")  # it holds the sink
    second = _agent(tmp_path, store, agents)
    until(lambda: set(_fed(tmp_path)) == set(_ids(store)), "the second agent's calls reach the feed")
    _stop(first)  # releases the sink: the second takes it over at its next pass, not after the lease
    db = Database(store)
    try:
        more = _notes(db, 5)  # committed by this process, which has no sinks: only polling finds them
    finally:
        db.close()
    until(lambda: set(more) <= set(_fed(tmp_path)), "the second agent delivers once the first has stopped")
    _stop(second)
    assert _fed(tmp_path) == _ids(store)  # every event once, in order, across the two processes


def test_a_killed_holders_lease_runs_out_and_another_process_continues_where_it_saved(
    tmp_path: Path, store: str, agents: list[subprocess.Popen[str]], clock: ManualClock
) -> None:
    name = _name(tmp_path)
    holder = _agent(tmp_path, store, agents)
    until(lambda: _saved(store, name) == stored(store)[-1][0], "the agent delivered and saved its calls")
    holder.send_signal(signal.SIGKILL)
    assert holder.wait(30) == -signal.SIGKILL
    sinks = Sinks([JsonLinesSink(tmp_path / "feed.jsonl")], StoreSource(store), linger=0, poll=0.05)
    db = Database(store)
    try:
        more = _notes(db, 3)
        until(lambda: sinks.status()[0].standby, "this process stands by while the killed one's lease lasts")
        assert not set(more) & set(_fed(tmp_path))
        clock.set(time.time() + 31)  # past any lease the killed process took or renewed
        until(lambda: set(more) <= set(_fed(tmp_path)), "this process takes the sink over")
        assert not sinks.status()[0].standby
    finally:
        sinks.close()
        db.close()
    assert _fed(tmp_path) == _ids(store)  # from where the killed process saved: nothing again, nothing lost


def test_a_lease_is_renewed_as_its_holder_passes_and_released_when_its_source_closes(
    store: str, tmp_path: Path, clock: ManualClock
) -> None:
    name = _name(tmp_path)
    one, two = StoreSource(store), StoreSource(store)
    try:
        assert one.claim(name, 0) == 0
        assert two.claim(name, 0) is None
        clock.advance(11)
        assert one.claim(name, 0) == 0  # renewed: 30 s from now
        clock.advance(25)
        assert two.claim(name, 0) is None  # 36 s after it was taken, but 25 s after it was renewed
        one.save(name, 4)
        clock.advance(6)  # the holder stopped passing (a stuck call, a frozen process): its lease runs out
        assert two.claim(name, 0) == 4  # taken over, from where the last holder saved
        assert one.claim(name, 4) is None
        two.close()  # a clean stop hands over at once
        assert one.claim(name, 4) == 4
    finally:
        one.close()
        two.close()


class Losing(Collecting):
    """Collects; while taking its first batch, another source takes the sink over (its lease has run out)."""

    def __init__(self, name: str, store: str, clock: ManualClock) -> None:
        super().__init__(name)
        self.other, self.clock = StoreSource(store), clock

    def deliver(self, batch: Sequence[Record]) -> None:
        if not self.got:
            self.clock.advance(31)  # as if this call had been stuck past the lease
            assert self.other.claim(self.name, 0) is not None
        super().deliver(batch)


def test_a_long_pass_stops_once_another_process_has_taken_the_sink_over(
    store: str, tmp_path: Path, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_engine, "SAVE_EVERY", 0)  # check the lease after every batch
    db = Database(store)
    ids = _notes(db, 10, one_transaction=True)
    db.close()
    sink = Losing(_name(tmp_path), store, clock)
    sinks = Sinks([sink], StoreSource(store), linger=0, batch=2)
    try:
        until(lambda: sinks.status()[0].standby, "the overtaken worker stands by")
        assert [r.id for r in sink.got] == ids[:2]  # not the rest of the backlog beside the new holder
    finally:
        sinks.close()
        sink.other.close()
