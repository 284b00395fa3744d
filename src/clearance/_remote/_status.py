"""How remote mode's spool is doing, for the application: `clearance.spool_status()`, and OTel gauges.

With `otel=True` the same figures are observable gauges on the global MeterProvider (your
exporter): `clearance.spool.backlog`, `clearance.spool.oldest_unshipped_age` and
`clearance.spool.last_ship_age`. They are registered once per process, at the first
`configure()` that turns OpenTelemetry on, and read the configuration current at each collection,
once for the three.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .._clock import now_us
from .._guard import _runtime
from ..errors import StoreError


@dataclass(frozen=True)
class SpoolStatus:
    """Where this process's records stand on their way to the server.

    Attributes:
        remote: Whether this process ships its records to a server (remote mode). False when it
            records into its own store (embedded) or is not configured: it has no spool, and
            the other fields are empty.
        backlog: Records in the spool not shipped yet.
        oldest_unshipped_at: When the oldest of them was recorded (None: nothing waits).
        last_shipped_at: When the server last took a batch from this process (None: not yet).
            An idle agent ships nothing, so read it beside `backlog`.
        last_error: Why the last attempt to ship failed; None once one succeeds.
        shipped: Records the server took from this process.
        failures: Attempts to ship that failed in this process (each is retried).
    """

    remote: bool
    backlog: int = 0
    oldest_unshipped_at: datetime | None = None
    last_shipped_at: datetime | None = None
    last_error: str | None = None
    shipped: int = 0
    failures: int = 0


def spool_status() -> SpoolStatus:
    """How the spool of the current configuration is doing (reads it; configures nothing).

    In embedded mode, or before `configure()`, there is no spool: `remote` is False.

    Raises:
        StoreError: The spool cannot be read (it is being closed, or the file is gone).
    """
    governor = _runtime._current
    spool, shipper = getattr(governor, "spool", None), getattr(governor, "shipper", None)
    if spool is None or shipper is None:
        return SpoolStatus(remote=False)
    try:
        backlog = spool.size()
        oldest = spool.peek(1)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the spool {spool.path}: {exc}") from None
    return SpoolStatus(
        remote=True,
        backlog=backlog,
        oldest_unshipped_at=_when(_recorded_at(oldest[0][1])) if oldest else None,
        last_shipped_at=_when(shipper.last_shipped_us),
        last_error=shipper.last_error,
        shipped=shipper.shipped,
        failures=shipper.failures,
    )


def _recorded_at(body: str) -> int | None:
    try:
        at = json.loads(body).get("at_us")
    except (ValueError, AttributeError, RecursionError):
        return None
    return at if isinstance(at, int) and not isinstance(at, bool) else None


def _when(at_us: int | None) -> datetime | None:
    return None if at_us is None else datetime.fromtimestamp(at_us / 1e6, tz=UTC)


def _age(at: datetime | None) -> float | None:
    return None if at is None else max(0.0, now_us() / 1e6 - at.timestamp())


# -- OpenTelemetry -------------------------------------------------------------------------------

_registered = False
_lock = threading.Lock()


def observe() -> None:
    """Register the spool's OTel gauges when the current configuration has `otel=True` (once per process)."""
    global _registered
    settings = getattr(_runtime._current, "settings", None)
    if _registered or settings is None or not settings.otel:
        return
    with _lock:
        if _registered:
            return
        try:
            from opentelemetry import metrics
        except ImportError:  # tracing says what to install; the spool's gauges just stay off
            return
        meter, reads = metrics.get_meter("clearance"), _Reads()
        meter.create_observable_gauge(
            "clearance.spool.backlog",
            [_observed(reads, "backlog", lambda s: s.backlog)],
            unit="{record}",
            description="Records in the agent's spool not shipped to the server yet.",
        )
        meter.create_observable_gauge(
            "clearance.spool.oldest_unshipped_age",
            [_observed(reads, "oldest", lambda s: _age(s.oldest_unshipped_at))],
            unit="s",
            description="How long the oldest record in the spool has waited to be shipped.",
        )
        meter.create_observable_gauge(
            "clearance.spool.last_ship_age",
            [_observed(reads, "last_ship", lambda s: _age(s.last_shipped_at))],
            unit="s",
            description="Seconds since the server last took a batch from this process.",
        )
        _registered = True


class _Reads:
    """One status for the gauges of a collection: a gauge observed again means a new collection, read afresh."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._status: SpoolStatus | None = None  # None: the last read failed
        self._seen: set[str] | None = None  # the gauges that took the status read last (None: none read yet)

    def status(self, gauge: str) -> SpoolStatus | None:
        with self._lock:
            if self._seen is None or gauge in self._seen:
                try:
                    self._status = spool_status()
                except StoreError:
                    self._status = None
                self._seen = set()
            self._seen.add(gauge)
            return self._status


def _observed(reads: _Reads, gauge: str, read: Any) -> Any:
    """An OTel callback observing `read(status)`, in remote mode and when it has a value."""
    from opentelemetry.metrics import Observation

    def callback(_: Any) -> Iterator[Observation]:
        status = reads.status(gauge)
        value = read(status) if status is not None and status.remote else None
        if value is not None:
            yield Observation(value)

    return callback


_runtime.after_configure(observe)
