"""What a sink is given (`Record`), and what a sink is (`Sink`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

from .._store._shown import stored_event


class Record(NamedTuple):
    """One committed event, exactly as stored (immutable; a named tuple, so a source builds one per row cheaply).

    Attributes:
        seq: Its position: in the audit log (the store), or in the agent's spool (remote mode).
            Increasing in commit order, with gaps.
        id: The event's id (`evt_…`): stable across redeliveries and across the agent's spool
            and the server's store, so a consumer dedupes on it.
        kind: The event kind (`tool_call.decided`, …).
        at_us: When it happened, microseconds since the epoch (UTC).
        body: The stored record, byte for byte (canonical JSON).
        prev_hash: The chain hash it links to (None in the spool, which is not chained).
        hash: Its chain hash, `SHA-256(prev_hash || body)` (None in the spool).
    """

    seq: int
    id: str
    kind: str
    at_us: int
    body: str
    prev_hash: str | None = None
    hash: str | None = None

    def event(self) -> dict[str, Any]:
        """The body decoded as every reader gets it: marked (under `$degraded`) where it cannot be shown as stored."""
        return stored_event(self.seq, self.hash or "", self.body).body


@runtime_checkable
class Sink(Protocol):
    """Where committed events go: a file, a SIEM, a tracing backend.

    `deliver` runs on the sink's own thread, one batch at a time, in commit order. Returning
    means the batch is delivered; raising means it is not, and the same events (and later ones)
    come again after a backoff. It may be called again with events it already had (after a
    crash, or a raise part-way through a batch), never skipped.

    Two methods are optional: `bind(source)`, told once which store or spool (a key) it
    delivers, and `ready()`, asked before each pass: False leaves the sink's events to another
    process (on the same store) that can deliver them, as when no exporter is configured here.

    Attributes:
        name: Unique among the process's sinks, at most 200 characters, not starting with `$`:
            its delivered position is kept under this name, so a restart resumes there.
    """

    name: str

    def deliver(self, batch: Sequence[Record]) -> None:
        """Deliver `batch` (1 to `Sinks.batch` records); raise when it could not be."""
        ...  # pragma: no cover
