"""Make docs/images/phoenix-trace.png: a LangGraph run with Clearance's spans, in Phoenix's trace view.

    .venv/bin/python -m tests.tracing.phoenix_screenshot [PATH]

Starts a Phoenix of its own (`make phoenix`), runs the LangGraph agent of test_phoenix_frameworks
(an allowed refund, a blocked one, one a lead approves from another thread) traced by
OpenInference, and screenshots the trace with the blocked call selected, so its error shows.
Needs Playwright and Chromium (`make browser`).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

import clearance
from clearance._guard import _runtime
from clearance._sinks._otel import OtelSink
from clearance.integrations.langchain import ClearanceMiddleware

from ..conftest import REPO
from ..integrations._shared import POLICY, while_deciding
from ._phoenix import CHROMIUM, CHROMIUM_ARGS, Phoenix
from ._runs import langchain_traced, langgraph_agent
from .conftest import PHOENIX, _free_ports
from .test_phoenix_frameworks import ASK, exported, phoenix_provider, read_back

PROJECT = "refund-agent"
OUT = REPO / "docs" / "images" / "phoenix-trace.png"


def traced_run(phoenix: Phoenix, workdir: Path) -> str:
    """Run the LangGraph agent into Phoenix's project; the trace's id once Phoenix holds all of it."""
    provider = phoenix_provider(phoenix, PROJECT)
    policy = workdir / "policy.yaml"
    policy.write_text(POLICY)
    clearance.configure(
        policy=str(policy),
        database_url=str(workdir / "audit.db"),
        agent="support-agent",
        otel=True,
        exporters=[OtelSink(tracer_provider=provider)],
    )
    agent = langgraph_agent([], middleware=ClearanceMiddleware())
    try:
        with langchain_traced(provider):
            while_deciding(_runtime.current(), lambda: agent.invoke(ASK), approve=True)
        exported(provider)
    finally:
        provider.shutdown()
    calls, _ = read_back(phoenix, PROJECT, 3)
    return calls["block"].trace_id


def screenshot(phoenix: Phoenix, trace_id: str, path: Path) -> None:
    """The trace's page at 1280x800, every span shown, the blocked call selected."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(phoenix.trace_url(PROJECT, trace_id))
            calls = page.get_by_text("execute_tool issue_refund", exact=True)
            calls.nth(2).wait_for(state="visible", timeout=30_000)
            page.get_by_text("clearance.approval", exact=True).first.wait_for(state="visible")
            calls.nth(1).click()  # the blocked call: the second, in time order
            page.get_by_text("blocked: Refunds over $5000", exact=False).first.wait_for(state="visible")
            page.screenshot(path=path)
        finally:
            browser.close()


def main(path: Path = OUT) -> None:
    """Start Phoenix, make the trace, save its screenshot at `path`."""
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        port, grpc_port = _free_ports(2)
        phoenix = Phoenix(PHOENIX, workdir, port=port, grpc_port=grpc_port)
        phoenix.start()
        try:
            screenshot(phoenix, traced_run(phoenix, workdir), path)
        finally:
            phoenix.stop()
    print(f"{path}: {path.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
