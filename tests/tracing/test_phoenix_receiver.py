"""Spans exported with the OpenTelemetry SDK over OTLP/HTTP come back from a real Phoenix intact."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Link, Status, StatusCode, format_span_id, format_trace_id
from opentelemetry.util.types import AttributeValue

from ..conftest import IN_CI
from ._phoenix import CHROMIUM, Event, Phoenix, Span, screenshot_trace

REFUND: dict[str, AttributeValue] = {
    "clearance.tool": "issue_refund",
    "clearance.decision.effect": "require_approval",
    "clearance.args.amount": 250.5,
    "clearance.approval.quorum": 2,
    "clearance.redacted": True,
    "clearance.rule_ids": ["refund-needs-approval", "refund-daily-cap"],
}


@dataclass(frozen=True)
class Exported:
    """What the SDK sent: the project and the ids Phoenix should file the spans under."""

    project: str
    trace_id: str
    parent_id: str
    child_id: str
    linked_id: str


@pytest.fixture(scope="module")
def exported(phoenix: Phoenix) -> Exported:
    """A parent span and a child with attributes, an event and a link, exported once to Phoenix.

    The provider is an object of its own, never the global one, so nothing leaks into other tests.
    """
    project = f"phoenix-receiver-{uuid.uuid4().hex[:8]}"
    resource = Resource.create({"service.name": "clearance-tests", "openinference.project.name": project})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=phoenix.otlp_endpoint)))
    tracer = provider.get_tracer("clearance.tests")
    try:
        with tracer.start_as_current_span("earlier run") as linked:
            pass
        with tracer.start_as_current_span("agent run") as parent:
            with tracer.start_as_current_span(
                "issue_refund",
                attributes=REFUND,
                links=[Link(linked.get_span_context(), {"link.reason": "retry"})],
            ) as child:
                child.add_event("clearance.approval.requested", {"clearance.approval.id": "ap_1", "attempt": 1})
                child.set_status(Status(StatusCode.ERROR, "approval denied"))
    finally:
        provider.shutdown()  # flushes the batch processor
    return Exported(
        project,
        format_trace_id(parent.get_span_context().trace_id),
        format_span_id(parent.get_span_context().span_id),
        format_span_id(child.get_span_context().span_id),
        format_span_id(linked.get_span_context().span_id),
    )


def _by_name(spans: list[Span]) -> dict[str, Span]:
    return {span.name: span for span in spans}


def test_the_trace_tree_comes_back(phoenix: Phoenix, exported: Exported) -> None:
    spans = phoenix.wait_for_spans(exported.project, lambda spans: len(spans) == 2, trace_id=exported.trace_id)
    parent, child = _by_name(spans)["agent run"], _by_name(spans)["issue_refund"]

    assert (parent.trace_id, parent.span_id, parent.parent_id) == (exported.trace_id, exported.parent_id, None)
    assert (child.trace_id, child.span_id, child.parent_id) == (exported.trace_id, exported.child_id, parent.span_id)
    assert parent.start_time <= child.start_time <= child.end_time <= parent.end_time
    assert child.attributes == REFUND
    assert [(e.name, e.attributes) for e in child.events] == [
        ("clearance.approval.requested", {"clearance.approval.id": "ap_1", "attempt": 1})
    ]
    assert isinstance(child.events[0], Event) and child.start_time <= child.events[0].timestamp <= child.end_time
    assert (child.status_code, child.status_message) == ("ERROR", "approval denied")
    assert (parent.status_code, parent.attributes, parent.events) == ("UNSET", {}, ())


def test_the_project_is_the_resource_attribute(phoenix: Phoenix, exported: Exported) -> None:
    spans = phoenix.wait_for_spans(exported.project, lambda spans: len(spans) == 3)

    assert _by_name(spans)["earlier run"].span_id == exported.linked_id
    assert phoenix.spans("default", trace_id=exported.trace_id) == []  # `service.name` names no project


def test_phoenix_drops_span_links(phoenix: Phoenix, exported: Exported) -> None:
    """Phoenix 20.x does not store links: assert on links elsewhere (an in-memory exporter), not here."""
    phoenix.wait_for_spans(exported.project, lambda spans: len(spans) == 2, trace_id=exported.trace_id)
    response = httpx.get(
        f"{phoenix.base}/v1/projects/{exported.project}/spans/otlpv1", params={"span_id": exported.child_id}
    )
    [child] = response.json()["data"]

    assert child["links"] is None, "Phoenix keeps links now: read them into _phoenix.Span"


def test_waiting_for_spans_that_never_come_says_what_it_saw(phoenix: Phoenix, exported: Exported) -> None:
    phoenix.wait_for_spans(exported.project, lambda spans: len(spans) == 3)

    with pytest.raises(AssertionError, match=r"holds 3 spans:\n.*earlier run") as failure:
        phoenix.wait_for_spans(exported.project, lambda spans: len(spans) > 3, timeout=0.2)
    assert exported.project in str(failure.value)


def test_a_project_no_span_has_reached_holds_none(phoenix: Phoenix, phoenix_project: str) -> None:
    assert phoenix.spans(phoenix_project) == []
    with pytest.raises(AssertionError, match=r"holds 0 spans") as failure:
        phoenix.wait_for_spans(phoenix_project, bool, timeout=0.2)
    assert f"project {phoenix_project!r} (projects: [" in str(failure.value)


def test_a_screenshot_of_the_trace(phoenix: Phoenix, exported: Exported, tmp_path: Path) -> None:
    pytest.importorskip("playwright", reason='the screenshot needs Playwright: pip install -e ".[dev]"')
    if not os.path.exists(CHROMIUM):
        (pytest.fail if IN_CI else pytest.skip)(f"no Chromium at {CHROMIUM}: make browser")
    phoenix.wait_for_spans(exported.project, lambda spans: len(spans) == 2, trace_id=exported.trace_id)

    png = screenshot_trace(phoenix, exported.project, exported.trace_id, tmp_path / "trace.png")

    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
