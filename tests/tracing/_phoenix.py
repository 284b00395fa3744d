"""Arize Phoenix as a real OTLP receiver: start it, read back the spans it stored, screenshot its UI.

Phoenix runs from a virtualenv of its own (`make phoenix` fills `.venv-phoenix`); the `phoenix`
fixture in conftest.py starts one per test session. What Phoenix 20.x keeps of an OTLP span:

- The project is the resource attribute `openinference.project.name` (else the project
  "default"); other resource attributes, `service.name` among them, are not stored.
- Span links are dropped on ingest (test_phoenix_receiver pins this).
- Times are kept to the microsecond; the OTLP span kind is not kept (`kind` is OpenInference's,
  `UNKNOWN` unless the span sets `openinference.span.kind`).
- A string attribute whose key ends in `metadata` or `tool.parameters` is parsed as JSON and
  flattened: `x.metadata = '{"a": 1}'` comes back as `x.metadata.a = 1`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from .._chromium import CHROMIUM, CHROMIUM_ARGS


@dataclass(frozen=True)
class Event:
    """A span event as Phoenix stored it."""

    name: str
    timestamp: datetime
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Span:
    """A span as Phoenix stored it; ids are lowercase hex, attributes keyed by dotted OTLP keys."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start_time: datetime
    end_time: datetime
    status_code: str  # UNSET, OK or ERROR
    status_message: str
    kind: str  # OpenInference's span kind (LLM, TOOL, …), not OTLP's
    attributes: dict[str, Any]
    events: tuple[Event, ...]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Span:
        """Read one item of `GET /v1/projects/{project}/spans`."""
        return cls(
            name=data["name"],
            trace_id=data["context"]["trace_id"],
            span_id=data["context"]["span_id"],
            parent_id=data["parent_id"],
            start_time=datetime.fromisoformat(data["start_time"]),
            end_time=datetime.fromisoformat(data["end_time"]),
            status_code=data["status_code"],
            status_message=data["status_message"],
            kind=data["span_kind"],
            attributes=data["attributes"],
            events=tuple(
                Event(e["name"], datetime.fromisoformat(e["timestamp"]), e.get("attributes") or {})
                for e in data["events"]
            ),
        )


class Phoenix:
    """A `phoenix serve` subprocess on 127.0.0.1 with its own working directory (SQLite)."""

    def __init__(self, executable: Path, workdir: Path, *, port: int, grpc_port: int) -> None:
        self.executable, self.workdir, self.port, self.grpc_port = executable, workdir, port, grpc_port
        self.base = f"http://127.0.0.1:{port}"
        self.otlp_endpoint = f"{self.base}/v1/traces"  # OTLP over HTTP (protobuf or JSON)
        self.log = workdir / "phoenix.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> None:
        """Start Phoenix and wait until it answers `/healthz`; fail with its log's tail if it does not."""
        env = {name: value for name, value in os.environ.items() if not name.startswith("PHOENIX_")}
        env.update(
            PHOENIX_HOST="127.0.0.1",
            PHOENIX_PORT=str(self.port),
            PHOENIX_GRPC_PORT=str(self.grpc_port),
            PHOENIX_WORKING_DIR=str(self.workdir),
            # No telemetry, web fonts, docs server or sandbox download from the internet.
            PHOENIX_TELEMETRY_ENABLED="false",
            PHOENIX_ALLOW_EXTERNAL_RESOURCES="false",
        )
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(self.executable), "serve"], env=env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while not self._healthy():
            if self.proc.poll() is not None:
                raise AssertionError(f"Phoenix exited with {self.proc.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(
                    f"Phoenix did not answer {self.base}/healthz in {timeout:.0f} s:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        """Stop Phoenix (SIGINT, then SIGKILL after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, lines: int = 40) -> str:
        """The last lines Phoenix wrote to its log."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def project_id(self, project: str) -> str | None:
        """Phoenix's id for a project name, or None while no span has created the project."""
        response = httpx.get(f"{self.base}/v1/projects/{project}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        return str(response.json()["data"]["id"])

    def spans(self, project: str, *, trace_id: str | None = None) -> list[Span]:
        """Every span of `project` (of one trace, when given), oldest start first; [] before the first."""
        params: dict[str, Any] = {"limit": 1000, "sort": "start_time", "order": "asc"}
        if trace_id is not None:
            params["trace_id"] = trace_id
        spans: list[Span] = []
        while True:
            response = httpx.get(f"{self.base}/v1/projects/{project}/spans", params=params)
            if response.status_code == 404:  # the project is created by its first span
                return []
            response.raise_for_status()
            body = response.json()
            spans += [Span.from_json(item) for item in body["data"]]
            if not body["next_cursor"]:
                return spans
            params["cursor"] = body["next_cursor"]

    def wait_for_spans(
        self,
        project: str,
        predicate: Callable[[list[Span]], bool],
        *,
        timeout: float = 15,
        trace_id: str | None = None,
    ) -> list[Span]:
        """Poll `spans(project, trace_id=…)` until `predicate` holds of them, and return them.

        Phoenix stores what it receives in the background, so spans become readable a little
        after the exporter's request returns. Fails after `timeout` seconds, listing what it saw.
        """
        deadline = time.monotonic() + timeout
        while not predicate(spans := self.spans(project, trace_id=trace_id)):
            if time.monotonic() > deadline:
                seen = "\n".join(f"  {s.name} {s.span_id} parent={s.parent_id} {s.attributes}" for s in spans)
                projects = [p["name"] for p in httpx.get(f"{self.base}/v1/projects").json()["data"]]
                raise AssertionError(
                    f"after {timeout} s Phoenix's project {project!r} (projects: {projects}) still fails"
                    f" the predicate; it holds {len(spans)} spans:\n{seen}"
                )
            time.sleep(0.05)
        return spans

    def trace_url(self, project: str, trace_id: str) -> str:
        """The address of a trace's page in Phoenix's UI."""
        project_id = self.project_id(project)
        assert project_id is not None, f"Phoenix has no project {project!r}"
        return f"{self.base}/projects/{project_id}/traces/{trace_id}"


def screenshot_trace(phoenix: Phoenix, project: str, trace_id: str, path: Path) -> Path:
    """Save a PNG of the trace's page in Phoenix's UI, once its span tree shows every span's name.

    Drives Debian's Chromium through Playwright (`pip install -e ".[dev]"`, `make browser`).
    """
    from playwright.sync_api import sync_playwright

    names = {span.name for span in phoenix.spans(project, trace_id=trace_id)}
    assert names, f"Phoenix has no spans of trace {trace_id} in project {project!r}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.goto(phoenix.trace_url(project, trace_id))
            for name in sorted(names):
                page.get_by_text(name, exact=True).first.wait_for(state="visible", timeout=20_000)
            page.screenshot(path=path, full_page=True)
        finally:
            browser.close()
    return path
