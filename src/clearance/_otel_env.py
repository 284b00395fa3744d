"""A tracer provider made from the standard `OTEL_*` environment, for a process that has none.

`clearance serve` makes one whenever `CLEARANCE_OTEL` is on and nothing else did (so setting
`OTEL_EXPORTER_OTLP_ENDPOINT` is all it needs); an agent's `configure(otel=True)` only when the
environment names where spans go (`OTEL_EXPORTER_OTLP_ENDPOINT`, `..._TRACES_ENDPOINT` or
`OTEL_TRACES_EXPORTER`): an application that sets up its own provider later must still be able to.
A process that already has a provider (`opentelemetry-instrument`, the application's own) keeps it.
"""

from __future__ import annotations

import logging
import os
from importlib.metadata import entry_points
from typing import Any

from .errors import ConfigurationError

log = logging.getLogger("clearance")

_warned = False
_NAMED = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER")


def provide(service: str, *, default_otlp: bool) -> None:
    """Make the global tracer provider from the environment, unless the process has one already.

    `default_otlp`: with nothing named, export over OTLP to its default endpoint (the server);
    else make none (an agent, whose application may set up its own).

    Raises:
        ConfigurationError: OpenTelemetry is not installed, or `OTEL_TRACES_EXPORTER` names an
            exporter that is not.
    """
    try:
        from opentelemetry import trace
    except ImportError:
        raise ConfigurationError(
            "otel=True needs OpenTelemetry: pip install 'clearance[otel]' (and an exporter of your choice)"
        ) from None

    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return
    if not default_otlp and not any(os.environ.get(name) for name in _NAMED):
        global _warned
        if not _warned:  # once: configure() may run many times
            _warned = True
            log.warning(
                "otel=True, but this process has no tracer provider and OTEL_EXPORTER_OTLP_ENDPOINT is not set:"
                " Clearance's spans go nowhere until one is set"
            )
        return
    exporters = _exporters()
    if not exporters:
        return
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: service}))
    provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER, as the SDK reads it
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)


def _exporters() -> list[Any]:
    """The exporters `OTEL_TRACES_EXPORTER` names (default `otlp`, over HTTP unless the protocol says gRPC).

    Raises:
        ConfigurationError: One it names explicitly is not installed.
    """
    given = os.environ.get("OTEL_TRACES_EXPORTER")
    names = [n.strip() for n in (given or "otlp").split(",") if n.strip()]
    if "none" in names:
        return []
    protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
    otlp = "otlp_proto_grpc" if protocol == "grpc" else "otlp_proto_http"
    found = []
    for name in (otlp if n == "otlp" else n for n in names):
        entry = next(iter(entry_points(group="opentelemetry_traces_exporter", name=name)), None)
        if entry is None:
            package = "opentelemetry-exporter-" + name.replace("_", "-") if name.startswith("otlp") else name
            if given is not None:
                raise ConfigurationError(f"OTEL_TRACES_EXPORTER names {name!r}, which is not installed ({package})")
            log.warning("OpenTelemetry is on but no span exporter is installed (pip install %s)", package)
            continue
        found.append(entry.load()())
    return found
