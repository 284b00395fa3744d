"""Group commit: the records of concurrent requests share one write transaction.

Every decided call must be committed before its answer is sent, and one commit a request would
cap the server at the store's commit rate and queue requests on its lock. Instead, requests hand
their write step (a function of the transaction's cursor) to one writer thread, which runs all
the steps waiting at that moment in one transaction, commits once, and wakes each request with
its own result. One at a time when the server is quiet; hundreds at a time under load.

A step that fails spoils its batch's transaction, so the batch is rolled back and its steps run
again one transaction each: one bad request fails alone and the others still commit. When the
store itself fails (locked past its busy timeout, connection lost), every request of the batch
gets that error at once instead.

A PostgreSQL connection lost at commit leaves its outcome unknown: the server may have committed
and the answer been lost with the connection. Before answering, the writer reads on a new
connection whether the transaction's last event is there, and answers what was committed — so a
request is never told 503 about a decision the log holds (the agent would then record a second
decision of its own). Only a store that stays unreadable for `RESOLVE_FOR` seconds leaves it
unknown, and says so.

A request's step may also wait behind another's: a batch resolving a lost commit holds the
writer for up to `RESOLVE_FOR`. The agent does not wait for ever (`_remote`'s `CHECK_TIMEOUT`);
if it gave up, recorded its own `block` and the step were then committed as `allow`, the log
would hold a phantom decision. So a step not started within `START_WITHIN` seconds of being
handed over is not run: its request fails (503) with nothing recorded, while the agent still
waits for the answer — it waits longer than `START_WITHIN` + `RESOLVE_FOR`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from .._clock import monotonic
from .._store import Database
from ..errors import StoreError

T = TypeVar("T")
MAX_BATCH = 256
RESOLVE_FOR = 15.0  # seconds to keep trying to read whether a commit lost with its connection was made
START_WITHIN = 10.0  # seconds a step may wait for the writer before it is refused, not run
log = logging.getLogger("clearance.server")

_Item = tuple[Callable[[Any], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]", float]


class GroupCommit:
    """A writer thread with its own connection to the store (so reads never wait behind it)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._queue: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="clearance-commits", daemon=True)
        self._thread.start()

    async def run(self, step: Callable[[Any], T]) -> T:
        """Run `step(cursor)` in a write transaction and return its result once committed.

        Raises:
            StoreError: The store could not be written (the step's changes are not committed).
            Exception: Whatever `step` raised (its changes are not committed).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((step, loop, future, monotonic() + START_WITHIN))
        # A request cancelled while waiting (client gone) still commits: the decision happened.
        return await asyncio.shield(future)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close its connection."""
        self._queue.put(None)
        self._thread.join()
        self.db.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            stop = False
            while len(batch) < MAX_BATCH:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            batch = self._in_time(batch)
            if len(batch) == 1:
                self._commit_one(batch[0])
            elif batch:
                self._commit_many(batch)
            if stop:
                return

    def _in_time(self, batch: list[_Item]) -> list[_Item]:
        """The steps still to run; those that waited past their start-by time fail without running."""
        now = monotonic()
        late: list[_Outcome] = [
            (loop, future, None, _TooLate()) for _, loop, future, start_by in batch if start_by < now
        ]
        if late:
            log.warning(
                "%d requests waited over %ss for the store's writer: refused, not recorded", len(late), START_WITHIN
            )
            _settle(late)
        return [item for item in batch if item[3] >= now]

    def _commit_many(self, batch: list[_Item]) -> None:
        results, exc = self._attempt([item[0] for item in batch])
        if exc is not None:
            if self._unavailable(exc):  # no step is to blame: every request gets the store's error now
                _settle([(loop, future, None, exc) for _, loop, future, _ in batch])
                return
            for item in batch:  # the batch's transaction is gone: each on its own, to fail alone
                if self._in_time([item]):  # (one of them may have held the writer resolving a lost commit)
                    self._commit_one(item)
            return
        _settle([(loop, future, result, None) for (_, loop, future, _), result in zip(batch, results, strict=True)])

    def _unavailable(self, exc: Exception) -> bool:
        """Whether a failure is the store's (locked past the busy timeout, connection lost)."""
        return isinstance(exc, _OutcomeUnknown) or (
            isinstance(exc, StoreError) and ("stayed locked" in str(exc) or self.db.lost)
        )

    def _commit_one(self, item: _Item) -> None:
        step, loop, future, _ = item
        results, exc = self._attempt([step])
        _settle([(loop, future, results[0] if exc is None else None, exc)])

    def _attempt(self, steps: list[Callable[[Any], Any]]) -> tuple[list[Any], Exception | None]:
        """Run `steps` in one transaction: their results once committed, else the error.

        The connection lost once every step has run leaves the commit's outcome unknown (it may
        have been lost with the connection after the server committed): it is looked up before
        anyone is answered, so a request is never told "not recorded" about a decision that was.
        """
        results: list[Any] = []
        probe: str | None = None
        try:
            with self.db.write(pipelined=True) as cur:
                results = [step(cur) for step in steps]
                probe = self.db.last_appended  # the commit is all that is left
        except Exception as exc:
            if probe is None or not self._lost(exc):
                return [], exc
            committed = self._committed(probe)
            if committed is None:
                return [], _OutcomeUnknown(f"{exc}; whether it was committed could not be found out")
            if not committed:
                return [], exc
            log.warning("the connection was lost at commit, and the commit had been made: %s", exc)
            return results, None
        return results, None

    def _lost(self, exc: Exception) -> bool:
        return isinstance(exc, StoreError) and self.db.lost

    def _committed(self, event_id: str) -> bool | None:
        """Whether the event `event_id` is in the store, on a new connection (None: it cannot be read).

        The lookup takes the chain's write lock, which the lost transaction held until it ended:
        so it sees that transaction committed or rolled back, never still running.
        """
        sql = self.db.sql("SELECT 1 FROM events WHERE id = :id")
        deadline = time.monotonic() + RESOLVE_FOR
        delay = 0.02
        while True:
            try:
                with self.db.write() as cur:
                    cur.execute(sql, {"id": event_id})
                    return cur.fetchone() is not None
            except StoreError as exc:
                if time.monotonic() >= deadline:
                    log.error("whether event %s was committed could not be found out: %s", event_id, exc)
                    return None
            time.sleep(delay)  # the writer's own thread: no request waits on anything but this answer
            delay = min(delay * 2, 1.0)


class _TooLate(StoreError):
    """A step waited too long for the writer: not run, so its agent's own record is the only one."""

    def __init__(self) -> None:
        super().__init__(f"the store's writer was busy for over {START_WITHIN:g} s: the call was not decided")


class _OutcomeUnknown(StoreError):
    """The connection was lost at commit and the store stayed unreadable: nobody can say if it committed."""


_Outcome = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Any, Exception | None]


def _settle(outcomes: list[_Outcome]) -> None:
    """Hand each waiting request its result: one wake-up of the event loop for the whole batch."""

    def settle(mine: list[_Outcome]) -> None:
        for _, future, result, error in mine:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)

    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        by_loop.setdefault(outcome[0], []).append(outcome)
    for loop, mine in by_loop.items():
        try:
            loop.call_soon_threadsafe(settle, mine)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass
