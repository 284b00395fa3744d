"""Group commit: many requests' records in one transaction, each request failing alone."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from clearance import _clock
from clearance._store import Database
from clearance._store import _events as events
from clearance.errors import StoreError
from clearance.server._commits import RESOLVE_FOR, START_WITHIN, GroupCommit

FIELDS = {"agent": "a", "environment": "test", "session": "s", "tool": "t"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "commits.db")
    return str(request.getfixturevalue("pg_url"))


def _append(db: Database, n: int) -> Any:
    def step(cur: Any) -> str:
        e = events.make_event("test.step", n, {**FIELDS, "n": n})
        events.append(db, cur, [e])
        return e.id

    return step


def _count(url: str) -> int:
    db = Database(url)
    try:
        with db.read() as cur:
            cur.execute("SELECT count(*) FROM events WHERE kind = 'test.step'")
            return int(cur.fetchone()[0])
    finally:
        db.close()


class Blocker:
    """A step that holds the writer inside its transaction until released."""

    def __init__(self) -> None:
        self.inside, self.release = threading.Event(), threading.Event()

    def __call__(self, cur: Any) -> None:
        self.inside.set()
        self.release.wait(10)

    async def entered(self) -> None:
        """Return once the writer runs this step (its transaction is open)."""
        assert await asyncio.to_thread(self.inside.wait, 10)

    def release_once_queued(self, commits: GroupCommit, count: int) -> None:
        """Release the writer once the tasks started so far have handed it `count` steps.

        The loop runs its ready callbacks in order, so this runs after those tasks' first steps,
        which queue their steps before they wait.
        """

        def release() -> None:
            assert commits._queue.qsize() == count
            self.release.set()

        asyncio.get_running_loop().call_soon(release)


def _verify(url: str) -> None:
    db = Database(url)
    try:
        report = events.verify(db)
        assert report.ok, report
    finally:
        db.close()


def test_waiting_steps_share_one_transaction_and_the_chain_stays_whole(store_url: str) -> None:
    commits = GroupCommit(Database(store_url))
    gate = Blocker()

    async def main() -> list[Any]:
        blocker = asyncio.ensure_future(commits.run(gate))
        await gate.entered()  # the writer is inside the blocker's transaction
        steps = [asyncio.ensure_future(commits.run(_append(commits.db, n))) for n in range(40)]
        gate.release_once_queued(commits, 40)
        await blocker
        return await asyncio.gather(*steps)

    try:
        ids = asyncio.run(main())
    finally:
        commits.close()
    assert len(set(ids)) == 40
    assert _count(store_url) == 40
    _verify(store_url)
    if commits.db.dialect == "postgresql":  # the 40 waited together, so they committed together
        db = Database(store_url)
        with db.read() as cur:
            cur.execute("SELECT count(DISTINCT xmin::text) FROM events WHERE kind = 'test.step'")
            assert cur.fetchone()[0] == 1
        db.close()


def test_a_failing_step_fails_alone_and_leaves_nothing(store_url: str) -> None:
    commits = GroupCommit(Database(store_url))
    gate = Blocker()

    def bad_python(cur: Any) -> None:
        events.append(commits.db, cur, [events.make_event("test.step", 1, {**FIELDS, "bad": True})])
        raise ValueError("this step is broken")

    def bad_sql(cur: Any) -> None:
        cur.execute("INSERT INTO no_such_table VALUES (1)")

    async def main() -> list[Any]:
        blocker = asyncio.ensure_future(commits.run(gate))
        await gate.entered()
        steps = [asyncio.ensure_future(commits.run(_append(commits.db, n))) for n in range(5)]
        steps.append(asyncio.ensure_future(commits.run(bad_python)))
        steps.append(asyncio.ensure_future(commits.run(bad_sql)))
        steps += [asyncio.ensure_future(commits.run(_append(commits.db, n))) for n in range(5, 10)]
        gate.release_once_queued(commits, 12)  # one batch: the bad ones spoil it, and fail alone
        await blocker
        return await asyncio.gather(*steps, return_exceptions=True)

    try:
        results = asyncio.run(main())
    finally:
        commits.close()
    assert isinstance(results[5], ValueError) and "broken" in str(results[5])
    assert isinstance(results[6], StoreError) and "no_such_table" in str(results[6])
    assert all(isinstance(r, str) for r in results[:5] + results[7:])
    assert _count(store_url) == 10  # the ten good ones, not the broken step's record
    _verify(store_url)


def test_a_cancelled_request_still_commits_what_was_decided(store_url: str) -> None:
    commits = GroupCommit(Database(store_url))
    gate = Blocker()

    async def main() -> None:
        blocker = asyncio.ensure_future(commits.run(gate))
        await gate.entered()
        step = asyncio.ensure_future(commits.run(_append(commits.db, 1)))
        # The client goes away while its decision waits to be committed: once its step is queued
        # (after the task's first step, as the loop runs in order), before the writer is released.
        asyncio.get_running_loop().call_soon(step.cancel)
        gate.release_once_queued(commits, 1)
        await blocker
        assert step.cancelled()

    try:
        asyncio.run(main())
    finally:
        commits.close()  # drains what is queued
    assert _count(store_url) == 1


def test_close_commits_everything_queued(tmp_path: Path) -> None:
    url = str(tmp_path / "drain.db")
    commits = GroupCommit(Database(url))

    async def main() -> None:
        for n in range(100):
            commits._queue.put((_append(commits.db, n), asyncio.get_running_loop(), asyncio.Future(), float("inf")))

    asyncio.run(main())
    commits.close()
    assert _count(url) == 100
    _verify(url)


def test_a_locked_store_fails_the_waiting_requests_and_the_writer_recovers(tmp_path: Path) -> None:
    url = str(tmp_path / "locked.db")
    commits = GroupCommit(Database(url, busy_timeout=0.2))
    other = sqlite3.connect(url, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

    async def attempt(n: int) -> Any:
        return await asyncio.gather(*(commits.run(_append(commits.db, i)) for i in range(n)), return_exceptions=True)

    try:
        failed = asyncio.run(attempt(3))
        assert all(isinstance(r, StoreError) and "locked" in str(r) for r in failed)
        other.execute("ROLLBACK")
        assert all(isinstance(r, str) for r in asyncio.run(attempt(3)))
    finally:
        other.close()
        commits.close()
    assert _count(url) == 3


def test_a_step_kept_waiting_past_its_start_by_time_is_refused_not_run(
    store_url: str, clock: _clock.ManualClock
) -> None:
    """A step held behind the writer longer than START_WITHIN is not committed: its agent, which
    waits longer than that and the lost-commit lookup together, is told the call was not decided
    (and records its own block), never answered after it gave up by a commit it does not know of."""
    commits = GroupCommit(Database(store_url))
    gate = Blocker()

    async def main() -> None:
        blocker = asyncio.ensure_future(commits.run(gate))
        await gate.entered()
        late = asyncio.ensure_future(commits.run(_append(commits.db, 1)))
        await asyncio.sleep(0)  # one turn of the loop: the task hands its step over before it waits
        assert commits._queue.qsize() == 1  # queued behind the blocker, not yet started
        clock.advance(START_WITHIN + 0.001)
        on_time = asyncio.ensure_future(commits.run(_append(commits.db, 2)))  # handed over now: in time
        gate.release_once_queued(commits, 2)
        await blocker
        with pytest.raises(StoreError, match="the call was not decided"):
            await late
        await on_time

    try:
        asyncio.run(main())
    finally:
        commits.close()
    assert _count(store_url) == 1  # only the step handed over in time
    _verify(store_url)


def test_the_agent_waits_longer_than_the_server_can_take_to_commit() -> None:
    from clearance._remote._governor import CHECK_TIMEOUT

    assert CHECK_TIMEOUT > START_WITHIN + RESOLVE_FOR  # else a commit could land after the agent gave up
