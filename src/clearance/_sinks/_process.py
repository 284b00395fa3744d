"""The SDK process's sinks: opened by `configure()` beside its governor, over its store or spool."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Sequence
from typing import Literal

from .._settings import Settings
from ..errors import ConfigurationError
from ._engine import Sinks, SinkStatus
from ._record import Sink
from ._sources import SpoolSource, StoreSource
from ._spec import sink_from_spec

_lock = threading.Lock()
_current: Sinks | None = None


def replace(settings: Settings, exporters: Sequence[Sink | str] | None, governor: object) -> Callable[[], None]:
    """Open the new configuration's sinks (`exporters`, else `settings.exporters`) and make them current.

    Returns what closes the previous configuration's sinks, to call once the new governor is
    installed and the old one closed: until then they keep delivering what the old governor
    commits. When opening fails, nothing changes (the previous ones stay current). In remote
    mode (`governor.spool`) they read the spool, and a sink no longer configured (removed or
    renamed) holds its rows back until it has closed; else the store. A sink of the same name on the
    same store or spool is delivered one pass at a time: the new one continues after the last
    event the old one delivered. Closing waits at most 5 s for a sink still inside `deliver()`.

    Raises:
        ConfigurationError: An exporter is neither a sink nor a known spec, or two share a name.
        StoreError: The store cannot be opened.
    """
    chosen = [_sink(e) for e in (settings.exporters if exporters is None else exporters)]
    spool = getattr(governor, "spool", None)
    if spool is None:  # in remote mode the server makes the spans, from its log
        chosen = with_otel(chosen, settings.otel, args=settings.otel_args, usage=settings.otel_usage)
    sinks: Sinks | None = None
    if spool is not None:
        if chosen:
            sinks = _opened(chosen, SpoolSource(spool, busy_timeout=settings.busy_timeout))
    else:
        sinks = for_store(settings.database_url, chosen, busy_timeout=settings.busy_timeout)
    global _current
    with _lock:
        old, _current = _current, sinks

    def retire() -> None:
        if old is not None:
            old.close()  # their final pass: what they have not passed is still in the spool
        if spool is not None:  # even with no sinks: rows a removed or renamed sink held back go now
            prune = SpoolSource(spool, busy_timeout=settings.busy_timeout)
            try:
                prune.forget([s.name for s in chosen])
            finally:
                prune.close()

    return retire


def close() -> None:
    """Deliver what is committed and stop the sinks (at `shutdown()`)."""
    global _current
    with _lock:
        old, _current = _current, None
    if old is not None:
        old.close()


def status() -> list[SinkStatus]:
    """Each of this process's sinks: delivered, failed, backlog (empty when none is configured).

    Raises:
        StoreError: The store or spool cannot be read to count the backlog.
    """
    sinks = _current
    return sinks.status() if sinks is not None else []


def with_otel(chosen: list[Sink], otel: bool, *, args: bool, usage: Literal["auto", "always", "never"]) -> list[Sink]:
    """`chosen`, and with `otel` the OpenTelemetry sink (unless one is there already, whatever its name).

    Raises:
        ConfigurationError: OpenTelemetry is not installed.
    """
    if not otel or has_otel_sink(chosen) or any(s.name == "otel" for s in chosen):
        return chosen
    from ._otel import OtelSink

    return [*chosen, OtelSink(args=args, usage=usage)]


def has_otel_sink(chosen: Sequence[object]) -> bool:
    """Whether `chosen` holds an `OtelSink` (without importing its module when none can)."""
    module = sys.modules.get(f"{__package__}._otel")
    return module is not None and any(isinstance(s, module.OtelSink) for s in chosen)


def _opened(chosen: list[Sink], source: SpoolSource | StoreSource) -> Sinks:
    try:
        return Sinks(chosen, source)
    except BaseException:
        source.close()
        raise


def _sink(exporter: Sink | str) -> Sink:
    if isinstance(exporter, str):
        return sink_from_spec(exporter)
    if not isinstance(exporter, Sink):
        raise ConfigurationError(f"{exporter!r} is not an event sink (it needs `name` and `deliver(batch)`)")
    return exporter


def for_store(
    url: str,
    specs: Sequence[Sink | str],
    *,
    busy_timeout: float = 30.0,
    otel: bool = False,
    otel_args: bool = False,
    otel_usage: Literal["auto", "always", "never"] = "auto",
) -> Sinks | None:
    """Sinks over the store at `url` (the server's), or None when there are none.

    With `otel`, the OpenTelemetry sink too (`with_otel`, given `otel_args` and `otel_usage`).

    Raises:
        ConfigurationError: A spec names no known sink, two sinks share a name, or `otel` and
            OpenTelemetry is not installed.
        StoreError: The store cannot be opened.
    """
    chosen = with_otel([_sink(s) for s in specs], otel, args=otel_args, usage=otel_usage)
    return _opened(chosen, StoreSource(url, busy_timeout=busy_timeout)) if chosen else None
