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
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from .._store import Database
from ..errors import StoreError

T = TypeVar("T")
MAX_BATCH = 256

_Item = tuple[Callable[[Any], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


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
        self._queue.put((step, loop, future))
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
            if len(batch) == 1:
                self._commit_one(item)
            else:
                self._commit_many(batch)
            if stop:
                return

    def _commit_many(self, batch: list[_Item]) -> None:
        try:
            with self.db.write(pipelined=True) as cur:
                results = [step(cur) for step, _, _ in batch]
        except Exception as exc:
            if self._unavailable(exc):  # no step is to blame: every request gets the store's error now
                _settle([(loop, future, None, exc) for _, loop, future in batch])
                return
            for item in batch:  # the batch's transaction is gone: each on its own, to fail alone
                self._commit_one(item)
            return
        _settle([(loop, future, result, None) for (_, loop, future), result in zip(batch, results, strict=True)])

    def _unavailable(self, exc: Exception) -> bool:
        """Whether a failure is the store's (locked past the busy timeout, connection lost)."""
        return isinstance(exc, StoreError) and ("stayed locked" in str(exc) or self.db.lost)

    def _commit_one(self, item: _Item) -> None:
        step, loop, future = item
        try:
            with self.db.write(pipelined=True) as cur:
                result = step(cur)
        except Exception as exc:
            _settle([(loop, future, None, exc)])
            return
        _settle([(loop, future, result, None)])


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
