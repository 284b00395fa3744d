"""Links to a record's trace in the user's tracing UI (issue 15), in Chromium: beside a record in
the audit log and in a session's replay, and in an approval's detail, built from the server's
`CLEARANCE_TRACE_URL` template and a record's `trace` only when that is a well-formed
traceparent; a malformed one, or no template, shows no link and no empty row.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Route, expect

from clearance import _trace
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store import _events as events

from ..conftest import REPO
from ..server.test_trace_link import HOSTILE, NOT_STRINGS, TEMPLATE, VALID
from .conftest import Dashboard, _need

TRACE_ID, SPAN_ID = VALID[3:35], VALID[36:52]
HREF = f"https://langfuse.example/project/p1/traces/{TRACE_ID}?observation={SPAN_ID}"
MALFORMED = HOSTILE["markup"]


@pytest.fixture
def template() -> str | None:
    """The server's trace URL template; a test parametrizes it to None for a server without one."""
    return TEMPLATE


@pytest.fixture(autouse=True)
def _trace_url(template: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    # Autouse: set before the `dashboard` fixture starts `clearance serve`, which inherits it.
    if template is None:
        monkeypatch.delenv("CLEARANCE_TRACE_URL", raising=False)
    else:
        monkeypatch.setenv("CLEARANCE_TRACE_URL", template)


def _record(db: Database, session: str, trace: Any) -> int:
    """A decided call in its own session, with `trace`, written to the store: its position."""
    now = time.time_ns() // 1000
    fields = {"agent": "refunds", "environment": "test", "session": session, "tool": "issue_refund"}
    event = events.make_event("tool_call.decided", now, {**fields, "decision": "allow", "trace": trace})
    with db.write() as cur:
        events.append(db, cur, [event])
    return next(e.seq for e in events.query(db, events.EventFilter(session=session)))


def _approval(db: Database, session: str, trace: str) -> str:
    """A pending approval asked in the span `trace`: its id."""
    now = time.time_ns() // 1000
    approval_id = events.new_id("apr")
    with db.write() as cur:
        approvals.insert(
            db,
            cur,
            {
                "id": approval_id,
                "call_id": events.new_id("call"),
                "status": "pending",
                "tool": "issue_refund",
                "agent": "refunds",
                "environment": "test",
                "session": session,
                "args_json": '{"amount": 300}',
                "args_hash": "0" * 64,
                "shown_args_json": '{"amount": 300}',
                "rule_ids": '["refund-needs-approval"]',
                "reason": "Refunds over $200 need a support lead",
                "policy_revision": "rev",
                "approvers": "[]",
                "on_timeout": "deny",
                "created_at_us": now,
                "expires_at_us": now + 600_000_000,
                "trace_context": trace,
            },
        )
    return approval_id


@pytest.fixture
def seeded(dashboard: Dashboard) -> Iterator[dict[str, Any]]:
    db = Database(str(dashboard.server.db))
    try:
        yield {
            "traced": _record(db, "ses-traced", VALID),
            "malformed": _record(db, "ses-malformed", MALFORMED),
            "approval": _approval(db, "ses-traced", VALID),
            "bad-approval": _approval(db, "ses-malformed", MALFORMED),
        }
    finally:
        db.close()


def _trace_links(page: Page) -> Any:
    return page.get_by_role("link", name="Trace (opens in a new tab)", exact=True)


def _linked(page: Page) -> None:
    """The page shows one trace link, to the right place, opening a new tab without an opener."""
    link = _trace_links(page)
    expect(link).to_have_count(1)
    expect(link).to_have_attribute("href", HREF)
    expect(link).to_have_attribute("target", "_blank")
    expect(link).to_have_attribute("rel", "noopener noreferrer")
    expect(link).to_have_accessible_name("Trace (opens in a new tab)")


def _unlinked(page: Page, loaded: str) -> None:
    """Once `loaded` is shown, no trace link and no Trace row."""
    expect(page.get_by_text(loaded).first).to_be_visible()
    expect(_trace_links(page)).to_have_count(0)
    expect(page.locator("dt", has_text="Trace")).to_have_count(0)
    assert "langfuse.example" not in page.content()


def test_a_record_with_a_trace_links_to_it_and_a_malformed_one_does_not(
    dashboard: Dashboard, seeded: dict[str, Any]
) -> None:
    dashboard.login()
    page = dashboard.page

    page.goto(dashboard.url(f"#/audit/{seeded['traced']}"))
    expect(page.get_by_role("heading", name=f"Record {seeded['traced']}")).to_be_visible()
    _linked(page)
    expect(page.locator("dd", has=_trace_links(page))).to_contain_text(f"in span {SPAN_ID}")
    dashboard.shot("audit-record-trace")

    page.goto(dashboard.url(f"#/audit/{seeded['malformed']}"))
    expect(page.get_by_role("heading", name=f"Record {seeded['malformed']}")).to_be_visible()
    _unlinked(page, "Whole record")

    page.goto(dashboard.url("#/sessions/ses-traced"))
    expect(page.get_by_role("link", name=f"Record {seeded['traced']} in the audit log")).to_be_visible()
    _linked(page)
    dashboard.shot("session-step-trace")

    page.goto(dashboard.url("#/sessions/ses-malformed"))
    expect(page.get_by_role("link", name=f"Record {seeded['malformed']} in the audit log")).to_be_visible()
    _unlinked(page, "in the audit log")

    page.goto(dashboard.url(f"#/approvals/{seeded['approval']}"))
    expect(page.get_by_role("heading", name="issue_refund")).to_be_visible()
    _linked(page)
    dashboard.shot("approval-trace")

    page.goto(dashboard.url(f"#/approvals/{seeded['bad-approval']}"))
    expect(page.get_by_role("heading", name="issue_refund")).to_be_visible()
    _unlinked(page, "Refunds over $200 need a support lead")

    # The link opens the tracing UI in a new tab that cannot reach back (no opener) and is not
    # told where it came from (no Referer); the test's network has no such host, so it is answered here.
    asked: list[dict[str, str]] = []

    def tracing_ui(route: Route) -> None:
        asked.append(route.request.headers)
        route.fulfill(status=200, content_type="text/html", body="<title>tracing UI</title>")

    page.context.route("https://langfuse.example/**", tracing_ui)
    page.goto(dashboard.url(f"#/audit/{seeded['traced']}"))
    with page.context.expect_page() as opened:
        _trace_links(page).click()
    tab = opened.value
    tab.wait_for_load_state()
    assert tab.url == HREF and tab.title() == "tracing UI"
    assert tab.evaluate("window.opener") is None
    assert len(asked) == 1 and "referer" not in asked[0]
    tab.close()


@pytest.mark.parametrize("template", [None])
def test_without_a_template_no_record_shows_a_link(dashboard: Dashboard, seeded: dict[str, Any]) -> None:
    dashboard.login()
    page = dashboard.page
    page.goto(dashboard.url(f"#/audit/{seeded['traced']}"))
    expect(page.get_by_role("heading", name=f"Record {seeded['traced']}")).to_be_visible()
    _unlinked(page, "Whole record")
    page.goto(dashboard.url("#/sessions/ses-traced"))
    _unlinked(page, "in the audit log")
    page.goto(dashboard.url(f"#/approvals/{seeded['approval']}"))
    _unlinked(page, "Refunds over $200 need a support lead")


@pytest.fixture(scope="module")
def trace_ts() -> str:
    """dashboard/src/trace.ts as plain JavaScript, by the TypeScript compiler the dashboard builds with."""
    node = shutil.which("node")
    _need(node is not None and (REPO / "dashboard" / "node_modules" / "typescript").exists(), "make dashboard")
    assert node is not None
    script = (
        "const ts = require('typescript'); const fs = require('fs');"
        "process.stdout.write(ts.transpileModule(fs.readFileSync('src/trace.ts', 'utf8'),"
        " {compilerOptions: {target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS}}).outputText);"
    )
    done = subprocess.run([node, "-e", script], cwd=REPO / "dashboard", capture_output=True, text=True, check=True)
    return done.stdout


def test_the_dashboard_checks_a_trace_as_python_does(browser: Browser, trace_ts: str) -> None:
    """trace.ts's check, run by Chromium, answers as `_trace.checked` on every case; templates fill as expected."""
    values: list[Any] = [VALID, *HOSTILE.values(), *NOT_STRINGS.values()]
    templates = [
        TEMPLATE,
        "http://127.0.0.1:6006/projects/p/traces/{trace_id}",
        "https://langfuse.example/trace/{trace_id}#{trace_id}",
        "javascript:alert(1)//{trace_id}",
        "https://langfuse.example/trace/",
        "",
        None,
    ]
    page = browser.new_page()
    try:
        answers = page.evaluate(
            """([source, values, templates]) => {
              const exports = {};
              new Function("exports", source)(exports);
              return templates.map((t) => values.map((v) => exports.traceLink(t, v)));
            }""",
            [trace_ts, values, templates],
        )
    finally:
        page.close()

    def expected(template: str | None, value: Any) -> str | None:
        ok = _trace.checked(value)
        if ok is None or not template or not template.startswith(("http://", "https://")):
            return None
        if "{trace_id}" not in template:
            return None
        return template.replace("{trace_id}", ok[3:35]).replace("{span_id}", ok[36:52])

    assert answers == [[expected(t, v) for v in values] for t in templates]
    assert answers[0][0] == HREF
