"""Kinds of sink are found, not listed: the package's own modules and the `clearance.sinks` entry points."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from clearance._settings import Settings
from clearance._sinks import JsonLinesSink
from clearance._sinks._spec import kinds, sink_from_spec
from clearance.errors import ConfigurationError
from clearance.server._settings import ServerSettings

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


BROKEN = """
raise ImportError("No module named 'kafka'")
"""

TAKER = """
class Taker:
    SCHEMES = ("jsonl",)

    @classmethod
    def from_spec(cls, scheme, target):
        raise AssertionError("the built-in jsonl sink was replaced")
"""


def _install(tmp_path: Path, module: str, source: str, entry: str) -> Iterator[None]:
    """An installed distribution (a dist-info on sys.path) whose entry point is `entry`."""
    (tmp_path / f"{module}.py").write_text(source)
    info = tmp_path / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[clearance.sinks]\n{entry}\n")
    sys.path.insert(0, str(tmp_path))
    kinds.cache_clear()
    try:
        yield
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(module, None)
        kinds.cache_clear()


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[None]:
    """An installed distribution whose entry point names a sink class."""
    yield from _install(tmp_path, "memory_sink", PLUGIN, "memory = memory_sink:MemorySink")


@pytest.fixture
def broken(tmp_path: Path) -> Iterator[None]:
    """An installed distribution whose entry point's module raises ImportError."""
    yield from _install(tmp_path, "kafka_sink", BROKEN, "kafka = kafka_sink:KafkaSink")


@pytest.fixture
def taker(tmp_path: Path) -> Iterator[None]:
    """An installed distribution whose sink class claims the built-in `jsonl` scheme."""
    yield from _install(tmp_path, "taker_sink", TAKER, "taker = taker_sink:Taker")


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


def test_a_plugin_that_cannot_be_loaded_is_skipped_and_named_in_a_warning(
    broken: None, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spec = f"jsonl:{tmp_path / 'a.jsonl'}"
    with caplog.at_level(logging.WARNING, logger="clearance.sinks"):
        assert Settings(exporters=spec).exporters == (spec,)
        assert ServerSettings(exporters=spec).exporters == (spec,)
    assert "kafka" not in kinds() and "jsonl" in kinds()
    assert any("kafka_sink:KafkaSink" in r.getMessage() and "No module named" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigurationError, match="unknown exporter 'kafka:x'"):
        sink_from_spec("kafka:x")


def test_a_plugin_naming_a_built_in_scheme_does_not_replace_it(taker: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="clearance.sinks"):
        assert isinstance(sink_from_spec("jsonl:/tmp/x.jsonl"), JsonLinesSink)
    assert any("taker_sink:Taker" in r.getMessage() and "'jsonl'" in r.getMessage() for r in caplog.records)
