"""Sinks named in settings: `CLEARANCE_EXPORTERS=jsonl:/var/log/clearance.jsonl`."""

from __future__ import annotations

from ..errors import ConfigurationError
from ._jsonl import JsonLinesSink
from ._record import Sink

SCHEMES = ("jsonl", "jsonl+fsync")


def sink_from_spec(spec: str) -> Sink:
    """The sink a setting names: `jsonl:<path>` (`jsonl:-` is standard output), `jsonl+fsync:<path>`.

    Raises:
        ConfigurationError: An unknown kind of sink, or no path.
    """
    scheme, _, target = spec.partition(":")
    if scheme not in SCHEMES or not target:
        raise ConfigurationError(f"unknown exporter {spec!r}: use jsonl:<path>, jsonl:- (stdout) or jsonl+fsync:<path>")
    return JsonLinesSink(target, fsync=scheme == "jsonl+fsync")


def exporter_specs(value: object) -> object:
    """A settings validator: `CLEARANCE_EXPORTERS` is comma-separated; each one must name a sink.

    Raises:
        ValueError: One names no known sink.
    """
    if isinstance(value, str):
        value = tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, tuple | list):
        for spec in value:
            try:
                sink_from_spec(str(spec))
            except ConfigurationError as exc:
                raise ValueError(str(exc)) from None
    return value
