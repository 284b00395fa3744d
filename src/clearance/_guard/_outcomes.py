"""Outcome records, committed off the hot path.

The decision record of a call is committed before the tool runs; its outcome (status, duration,
error) joins the next transaction this process makes anyway — usually the next call's decision
— or is committed by a background flush `delay` seconds after the call returned, and always at
shutdown and interpreter exit. That keeps one commit per governed call. A crash inside that
window loses only outcomes, never a decision: such a call reads as decided with no outcome,
exactly as if the process had died while the tool ran. `delay=0` commits every outcome before
the governed call returns.

The flusher's delay is timed on the current clock (`_clock`), so a test moves a manual clock past
it instead of sleeping; adding an outcome never touches the clock.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .. import _clock
from .._store import Database
from .._store import _events as events
from .._store._events import Event
from ..errors import ClearanceError


class OutcomeBuffer:
    """Outcomes waiting for a transaction. Thread-safe."""

    def __init__(self, db: Database, delay: float) -> None:
        self._db = db
        self._delay = delay
        self._pending: list[Event] = []
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._idle = False  # the flusher waits for work: only then does an add need to wake it
        self.flushes = 0  # background commits, for tests and benchmarks

    def add(self, event: Event) -> None:
        """Queue an outcome; with no delay, try to commit it at once.

        Never raises: the tool has already run, and an error here would make the agent think
        it failed (and perhaps run it again). What cannot be written now stays queued.
        """
        with self._cond:
            self._pending.append(event)
            if self._delay > 0 and not self._closed:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="clearance-outcomes", daemon=True)
                    self._thread.start()
                elif self._idle:
                    self._cond.notify()
                return
        with contextlib.suppress(ClearanceError):
            self.flush()

    def take(self) -> list[Event]:
        """The queued outcomes, to append in the caller's transaction (`put_back` them if it fails)."""
        with self._cond:
            taken, self._pending = self._pending, []
        return taken

    _take = take

    def put_back(self, taken: list[Event]) -> None:
        """Queue outcomes taken for a transaction that failed again, ahead of any added since."""
        self._put_back(taken)

    def _put_back(self, taken: list[Event]) -> None:
        with self._cond:
            self._pending[:0] = taken

    @contextmanager
    def draining(self) -> Iterator[list[Event]]:
        """The queued outcomes, to append in the caller's transaction.

        If that transaction fails they are queued again, so nothing is lost.
        """
        taken = self._take()
        try:
            yield taken
        except BaseException:
            self._put_back(taken)
            raise

    def flush(self) -> None:
        """Commit every queued outcome now."""
        with self.draining() as taken:
            if taken:
                with self._db.write() as cur:
                    events.append(self._db, cur, taken)

    def _run(self) -> None:
        # At most one wake-up per `delay`: woken by the first outcome queued while idle, it then
        # sleeps a full delay (later outcomes do not wake it) and flushes what is still queued.
        # A busy agent drains the queue itself in its next commit; waking on every outcome would
        # cost each call a thread switch (measured: +50-90 µs a call on 2 cores).
        clock = _clock.current()
        undo = clock.on_advance(self._clock_moved)
        try:
            while self._wait_and_flush(clock):
                pass
        finally:
            undo()

    def _clock_moved(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _wait_and_flush(self, clock: _clock.Clock) -> bool:
        """Wait for an outcome and then the delay, and flush; False once closed."""
        with self._cond:
            if not self._pending and not self._closed:
                self._idle = True
                with clock.parked("outcome flush"):
                    self._cond.wait()  # once woken, sleep the delay even if a call drained them
                self._idle = False
            deadline = _clock.monotonic() + self._delay
            while not self._closed and (left := deadline - _clock.monotonic()) > 0:
                with clock.parked("outcome flush"):  # a manual clock's move wakes it, never a timeout
                    self._cond.wait(None if clock.manual else left)
            if self._closed:
                return False
            if not self._pending:
                return True
        if not self._db.lock.acquire(blocking=False):
            return True  # a call is committing right now and will carry them
        try:
            self.flush()
            self.flushes += 1
        except Exception:  # the store is locked by another process or gone: retry later
            pass
        finally:
            self._db.lock.release()
        return True

    def close(self) -> None:
        """Stop the flusher and commit what is queued."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        self.flush()
