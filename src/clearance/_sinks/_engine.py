"""Delivering committed events to sinks: one worker thread per sink, woken by the commit hook.

The hot path only counts a commit and sets each worker's event (no I/O; `Event.set` takes its lock
only when the worker is not already woken). A worker
gathers what was committed for `linger` seconds (less when a full batch is already waiting), then
reads the events after its position from the source and hands them to its sink in batches, and
saves its position once for the lot: a write to the store that the guard's own commits would
wait behind, so it is paid per pass, not per event or per commit. A sink that raises is retried
with backoff (`_retry`) from the first event it has not delivered. A sink that blocks holds up
only its own thread, and is reported `stalled` once a call has run longer than `timeout`.

One batch at a time per sink: in this process, a sink's passes over one store or spool take
its slot (by store and name), so a worker of a new configuration waits for the previous
configuration's worker rather than delivering beside it, and continues after the last event
that one delivered. A worker still inside `deliver()` when `close()` gives up on it is
abandoned: it finishes that call, delivers nothing more, saves nothing, closes its sink, and
the last such thread closes the source (releasing the sink's PostgreSQL lock or SQLite lease).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from .._retry import retrying
from ..errors import ConfigurationError
from ._record import Sink
from ._sources import Source

log = logging.getLogger("clearance.sinks")

SAVE_EVERY = 1.0  # seconds: a pass that runs this long (a long backlog) also saves its position as it goes


@dataclass(frozen=True)
class SinkStatus:
    """How a sink is doing.

    Attributes:
        name: The sink's name.
        delivered: Events it has taken since this process started.
        failed: Attempts that raised (each is retried) since this process started.
        backlog: Committed events it has not taken yet.
        position: The position of the last event it took.
        stalled: Whether a delivery has been running longer than the timeout.
        last_error: The last attempt's error, when the last attempt failed.
        standby: Another process delivers this sink (it holds the sink's lock on PostgreSQL,
            or its lease on SQLite), or in this process an earlier configuration's worker is still
            inside the sink's `deliver()`; this one takes over when that one stops. Its
            `position` and `backlog` are then as of its own last delivery.
    """

    name: str
    delivered: int
    failed: int
    backlog: int
    position: int
    stalled: bool
    last_error: str | None
    standby: bool = False


class _Slot:
    """One sink (by store and name) in this process: one pass at a time, and where the last one got to."""

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held for a pass (reading, delivering, saving)
        self.position = 0  # the last event a pass delivered
        self.users = 0  # workers that may take it


_slots: dict[tuple[str, str], _Slot] = {}
_holders: dict[int, int] = {}  # id(sink) -> workers not finished that deliver to that very object
_slots_lock = threading.Lock()


def _take_slot(source: Source, sink: Sink) -> tuple[tuple[str, str], _Slot]:
    key = (str(getattr(source, "key", None) or id(source)), sink.name)
    with _slots_lock:
        slot = _slots.setdefault(key, _Slot())
        slot.users += 1
        _holders[id(sink)] = _holders.get(id(sink), 0) + 1
    return key, slot


def _leave_slot(key: tuple[str, str], slot: _Slot, sink: Sink) -> bool:
    """Leave the slot; whether no other worker still delivers to the same sink object."""
    with _slots_lock:
        slot.users -= 1
        if slot.users == 0 and _slots.get(key) is slot:
            del _slots[key]
        left = _holders[id(sink)] - 1
        if left:
            _holders[id(sink)] = left
        else:
            del _holders[id(sink)]
    return left == 0


class _Worker:
    """One sink's thread: its position, its counters, its wake-up."""

    def __init__(self, sink: Sink, source: Source, position: int, owner: Sinks) -> None:
        self.sink, self.source, self.position, self.owner = sink, source, position, owner
        self.key, self.slot = _take_slot(source, sink)
        bind = getattr(sink, "bind", None)
        if callable(bind):  # the sink learns which store or spool it delivers
            bind(self.key[0])
        self.abandoned = False  # close() stopped waiting for it: no more batches, no more saves
        self.done = False  # its thread has finished (set under the owner's lock)
        self.saved = position  # the position last saved durably
        self.delivered = self.failed = 0
        self.last_error: str | None = None
        self.busy_since: float | None = None
        self.standby = False
        self.pending = 0  # commits since the last pass began (counted without a lock: a hint)
        self.woken = threading.Event()  # something was committed
        self.hurry = threading.Event()  # stop lingering: a full batch is waiting, or closing
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"clearance-sink-{sink.name}", daemon=True)

    def wake(self) -> None:
        self.pending += 1
        if not self.woken.is_set():  # the common case on the hot path takes no lock
            self.woken.set()
        elif self.pending >= self.owner.batch and not self.hurry.is_set():
            self.hurry.set()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._finish()

    def _loop(self) -> None:
        retry = retrying(self._retry, most=self.owner.most, stop=self.closing, log=log, what=f"sink {self.sink.name}")
        while not self.abandoned:
            self.woken.wait(self.owner.poll)
            self.hurry.wait(self.owner.linger)  # gather a burst of commits into one pass
            self.woken.clear()
            self.hurry.clear()
            self.pending = 0
            closing = self.closing.is_set()
            # Stopped while waiting to retry: the error is counted; a final pass follows.
            with contextlib.suppress(Exception):
                self._pass(closing) if closing else retry(self._pass, False)
            if closing:
                return

    def _finish(self) -> None:
        """The thread's end: close the sink; the last thread of an abandoned lot closes the source.

        The sink is not closed while another worker (a new configuration's) delivers to the very
        same object: the last of them closes it.
        """
        if _leave_slot(self.key, self.slot, self.sink):
            close = getattr(self.sink, "close", None)
            if callable(close):
                with contextlib.suppress(Exception):
                    close()
        owner = self.owner
        with owner._lock:
            self.done = True
            last = owner._abandoned and all(w.done for w in owner._workers)
        if last:
            with contextlib.suppress(Exception):
                self.source.close()

    def _pass(self, closing: bool) -> None:
        """One pass with the sink's slot: wait for another worker's pass (not when closing: it delivers)."""
        if not self.slot.lock.acquire(timeout=0 if closing else self.owner.poll):
            self.standby = True  # an earlier configuration's worker still delivers this sink
            return
        try:
            if self.abandoned:
                return
            self._drain()
        finally:
            self.slot.lock.release()

    def _retry(self, exc: BaseException) -> bool:
        """Count a failed attempt; every exception is retried."""
        self.failed += 1
        self.last_error = f"{type(exc).__name__}: {exc}"[:500]
        return isinstance(exc, Exception)

    def _drain(self) -> None:
        """Deliver everything committed after the position, then save the position once.

        A sink that raises part-way keeps what it delivered: the position saved is the last
        batch it took (the error goes on to be counted and retried).
        """
        ready = getattr(self.sink, "ready", None)
        if callable(ready) and not ready():  # it could deliver nowhere: leave the sink to a process that can
            self.standby = True
            return
        claimed = self.source.claim(self.sink.name, self.position)
        self.standby = claimed is None
        if claimed is None:
            return
        if claimed != self.position:  # taken over from another process: continue where it saved
            self.position = self.saved = claimed
        if self.slot.position > self.position:  # an earlier worker in this process delivered these
            self.position = self.slot.position
        n, saved_at = self.owner.batch, time.monotonic()
        try:
            while not self.abandoned and (batch := self.source.read(self.position, n)):
                self.busy_since = time.monotonic()
                try:
                    self.sink.deliver(batch)
                finally:
                    self.busy_since = None
                self.position = self.slot.position = batch[-1].seq
                self.delivered += len(batch)
                self.last_error = None
                if len(batch) < n:
                    break  # caught up: no need to ask again
                if time.monotonic() - saved_at >= SAVE_EVERY:  # a long backlog: a crash redelivers less
                    self._save()
                    saved_at = time.monotonic()
                    if self.source.claim(self.sink.name, self.position) != self.position:
                        break  # the sink was taken over (a SQLite lease ran out during a long call): stop here
        finally:
            self._save()

    def _save(self) -> None:
        if self.position != self.saved and not self.abandoned:
            self.source.save(self.sink.name, self.position)
            self.saved = self.position

    def status(self) -> SinkStatus:
        busy = self.busy_since
        return SinkStatus(
            self.sink.name,
            self.delivered,
            self.failed,
            self.source.backlog(self.position),
            self.position,
            busy is not None and time.monotonic() - busy > self.owner.timeout,
            self.last_error,
            self.standby,
        )


class Sinks:
    """The process's sinks over one source of committed events.

    Args:
        sinks: The sinks (names unique).
        source: Where committed events are read and positions kept (`StoreSource`, `SpoolSource`).
        batch: Most events handed to a sink at once; this many commits waiting end the linger early.
        linger: Seconds a woken worker waits for more commits before reading (one pass, one
            position save, for everything committed meanwhile).
        poll: Seconds between reads when nothing wakes a worker (commits by other processes).
        timeout: Seconds after which a delivery still running is reported stalled.
        most: Longest wait between retries of a failing sink, in seconds.

    Raises:
        ConfigurationError: Two sinks share a name, or a name is empty, too long or starts with `$`.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        source: Source,
        *,
        batch: int = 500,
        linger: float = 0.2,
        poll: float = 1.0,
        timeout: float = 30.0,
        most: float = 30.0,
    ) -> None:
        names = [s.name for s in sinks]
        for name in names:
            if not isinstance(name, str) or not name or len(name) > 200 or name.startswith("$"):
                raise ConfigurationError(
                    f"an event sink's name must be 1 to 200 characters, not starting with $: {name!r}"
                )
        if len(set(names)) != len(names):
            raise ConfigurationError(f"two event sinks have the same name: {sorted(names)}")
        self.batch, self.linger, self.poll, self.timeout, self.most = batch, linger, poll, timeout, most
        self.source = source
        positions = source.start(names)
        self._lock = threading.Lock()
        self._abandoned = False  # close() left a worker running: the last one to finish closes the source
        self._workers: list[_Worker] = []
        self._closed = False
        try:
            for sink in sinks:
                self._workers.append(_Worker(sink, source, positions[sink.name], self))
            self._unsubscribe = source.subscribe(self.wake)
        except BaseException:  # no worker runs: give their slots back
            for worker in self._workers:
                _leave_slot(worker.key, worker.slot, worker.sink)
            raise
        for worker in self._workers:
            worker.thread.start()
            worker.woken.set()  # deliver what an earlier run committed and did not deliver

    def wake(self) -> None:
        """Tell every worker that events were committed (the post-commit hook; no I/O)."""
        for worker in self._workers:
            worker.wake()

    def status(self) -> list[SinkStatus]:
        """Each sink's counters, backlog and position.

        Raises:
            StoreError: The store cannot be read to count the backlog.
        """
        return [w.status() for w in self._workers]

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what is committed (one last attempt each, within `timeout`), then stop.

        A sink still inside `deliver()` at the deadline is abandoned to its (daemon) thread: it
        finishes that call and delivers nothing more; what was not saved comes again at the next
        start, or from a new `Sinks` over the same store, which waits for it. A worker that is
        itself waiting for such a one stops at once, so a sink that blocks costs one `timeout`,
        not one per close. Closing again does nothing.
        """
        if self._closed:
            return
        self._closed = True
        self._unsubscribe()
        for worker in self._workers:
            worker.closing.set()
            worker.hurry.set()
            worker.woken.set()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = [w for w in self._workers if not w.done]
            for worker in left:
                worker.abandoned = True
            self._abandoned = bool(left)
        if left:  # the last of them closes the source when its call returns
            log.warning("an event sink is still delivering at shutdown; the rest comes at the next start")
            return
        self.source.close()
