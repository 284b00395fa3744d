"""`otel=True` and no tracer provider: spans go where `OTEL_*` says, or a warning says they go nowhere."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clearance._guard._governor import Governor
from clearance.sinks import status

from .._otlp import Receiver
from .._wait import until
from ..conftest import REPO

AGENT = """
import clearance
clearance.configure(policy={policy!r}, database_url={db!r}, agent="env-agent", otel=True)

@clearance.guard
def issue_refund(order_id: str, amount: float) -> str:
    return "ok"

issue_refund("A-1", 5)
clearance.shutdown()
from opentelemetry import trace
provider = trace.get_tracer_provider()
getattr(provider, "shutdown", lambda: None)()
print(type(provider).__name__)
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def run_agent(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\ndefault: allow\n")
    script = textwrap.dedent(AGENT).format(policy=str(policy), db=str(tmp_path / "a.db"))
    keep = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**keep, "PYTHONPATH": str(REPO / "src"), **env},
    )


def test_the_otlp_endpoint_is_all_an_agent_needs(tmp_path: Path, receiver: Receiver) -> None:
    ran = run_agent(tmp_path, {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "TracerProvider"
    (span,) = receiver.wait_for("execute_tool issue_refund")
    assert span.resource["service.name"] == "env-agent"  # the agent's name, unless OTEL_SERVICE_NAME says
    assert span.attributes["clearance.decision"] == "allow"


def test_without_a_provider_or_an_endpoint_a_warning_says_spans_go_nowhere(tmp_path: Path) -> None:
    ran = run_agent(tmp_path, {})
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ProxyTracerProvider"  # nothing was set up behind the application's back
    assert "OTEL_EXPORTER_OTLP_ENDPOINT is not set" in ran.stderr


def test_with_nowhere_to_send_spans_the_process_stands_by(configure: Callable[..., Governor]) -> None:
    configure("version: 1\ndefault: allow\n", otel=True)  # no provider here, no OTEL_* endpoint
    (otel,) = [s for s in status() if s.name == "otel"]
    until(lambda: next(s for s in status() if s.name == "otel").standby, "the otel sink standing by")
    assert otel.delivered == 0


def test_an_exporter_named_but_not_installed_is_a_configuration_error(tmp_path: Path) -> None:
    ran = run_agent(tmp_path, {"OTEL_TRACES_EXPORTER": "zipkin_json"})
    assert ran.returncode == 1
    assert "ConfigurationError" in ran.stderr and "zipkin_json" in ran.stderr
