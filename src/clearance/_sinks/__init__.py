"""Event sinks: one post-commit hook every committed event passes, and what it delivers to.

```
store commit (events.append in db.write)  ─┐ wake (no I/O)   ┌ worker thread ─> sink.deliver(batch)
spool commit (Spool.put, remote mode)     ─┘ ─────────────>  │   per sink: position, retry, counters
```
A commit only wakes the workers; each sink has its own thread that reads the committed events
after its durable position, in order, and hands them over in batches. Delivery is at least
once: after a crash a batch may come again (dedupe on `Record.id`).
"""

from __future__ import annotations

from ._engine import Sinks, SinkStatus
from ._jsonl import JsonLinesSink
from ._record import Record, Sink
from ._spec import sink_from_spec

__all__ = ["JsonLinesSink", "Record", "Sink", "SinkStatus", "Sinks", "sink_from_spec"]
