"""Kinds of sink are found, not listed: the package's own modules and the `clearance.sinks` entry points."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearance._sinks import JsonLinesSink
from clearance._sinks._spec import kinds, sink_from_spec
from clearance.errors import ConfigurationError

PLUGIN = """
class MemorySink:
    SCHEMES = ("memory",)

    def __init__(self, target):
        self.name = f"memory:{target}"
        self.batches = []

    @classmethod
    def from_spec(cls, scheme, target):
        return cls(target)

    def deliver(self, batch):
        self.batches.append(list(batch))
"""


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[None]:
    """An installed distribution (a dist-info on sys.path) whose entry point names a sink class."""
    (tmp_path / "memory_sink.py").write_text(PLUGIN)
    info = tmp_path / "memory_sink-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: memory-sink\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[clearance.sinks]\nmemory = memory_sink:MemorySink\n")
    sys.path.insert(0, str(tmp_path))
    kinds.cache_clear()
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("memory_sink", None)
        kinds.cache_clear()


def test_the_built_in_sinks_are_found_in_their_own_module() -> None:
    assert {"jsonl", "jsonl+fsync"} <= set(kinds())
    sink = sink_from_spec("jsonl+fsync:/tmp/x.jsonl")
    assert isinstance(sink, JsonLinesSink) and sink.fsync and sink.path == "/tmp/x.jsonl"


def test_a_sink_from_another_package_is_named_in_settings_through_its_entry_point(plugin: None) -> None:
    sink = sink_from_spec("memory:audit")
    assert type(sink).__name__ == "MemorySink" and sink.name == "memory:audit"


def test_an_unknown_scheme_names_the_known_ones() -> None:
    with pytest.raises(ConfigurationError, match=r"unknown exporter 'kafka:x': use one of jsonl:<target>"):
        sink_from_spec("kafka:x")
