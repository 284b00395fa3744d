"""Event sinks: where every committed audit record goes, at least once and off the hot path.

```python
import clearance
from clearance.sinks import JsonLinesSink

clearance.configure(exporters=[JsonLinesSink("audit.jsonl")])
```

A sink is any object with a `name` and `deliver(batch)` (the `Sink` protocol); see
docs/extending.md. `OtelSink` makes OpenTelemetry spans of the governed calls
(`configure(otel=True)` adds one; see docs/guides/tracing.md).
"""

from __future__ import annotations

from ._sinks import JsonLinesSink, Record, Sink, SinkStatus
from ._sinks._otel import OtelSink
from ._sinks._process import status

__all__ = ["JsonLinesSink", "OtelSink", "Record", "Sink", "SinkStatus", "status"]
