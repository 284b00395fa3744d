"""Session replay as a timeline (issue 17) in Chromium: model calls, tool calls and approval waits
as bars that select their step, the cost so far along the axis, ids of any characters, steps at
4.5:1 contrast, shared formatters and no empty rows, and a phone-width page."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

from playwright.sync_api import Page, expect

from clearance._store import Database
from clearance._store import _events as events
from clearance._store._kinds import Kind

from ._a11y import contrast, unnamed
from .conftest import Dashboard

SECOND = 1_000_000
SESSION = "acme/ops 100%?#1 заказ"
HOSTILE_MODEL = "gpt\u202e-lave.exe"


def record(dashboard: Dashboard, session: str, steps: list[tuple[Kind, float, dict[str, Any]]]) -> None:
    """Records of `session` put in the running server's store: (kind, seconds after a start, fields)."""
    db = Database(str(dashboard.server.db))
    start = time.time_ns() // 1000 - 120 * SECOND
    base = {"agent": "refunds", "environment": "test", "session": session}
    with db.write() as cur:
        events.append(db, cur, [events.make_event(k, start + int(at * SECOND), {**base, **f}) for k, at, f in steps])
    db.close()


def llm(model: str, cost: str | None, latency_ms: float | None) -> dict[str, Any]:
    return {
        "model": model,
        "input_tokens": 18070,
        "output_tokens": 90,
        "cached_input_tokens": 0,
        "reasoning_tokens": 0,
        "tokens": 18160,
        "priced": cost is not None,
        "cost_usd": cost,
        "cost_nusd": None if cost is None else int(float(cost) * 1e9),
        "latency_ms": latency_ms,
    }


def call(tool: str, call_id: str, **more: Any) -> dict[str, Any]:
    return {"tool": tool, "call_id": call_id, **more}


def story(dashboard: Dashboard, session: str = SESSION) -> None:
    """A model call, a tool call, an approval wait then the approved call, an unpriced model with a
    hostile name, a blocked call: nine steps, six bars."""
    refund = {"order_id": "A-1", "amount": 355.08}
    record(
        dashboard,
        session,
        [
            ("llm.call", 1.4, llm("gpt-4o-mini", "0.0012", 1413.2156355699674)),
            ("tool_call.decided", 1.5, call("lookup_order", "c1", decision="allow", args={"order_id": "A-1"})),
            ("tool_call.finished", 1.8, call("lookup_order", "c1", decision="ok", duration_ms=250.5)),
            ("tool_call.decided", 2, call("issue_refund", "c2", decision="require_approval", args=refund)),
            ("approval.requested", 2, call("issue_refund", "c2", approval_id="apr_1")),
            (
                "approval.decided",
                32,
                call("issue_refund", "c2", approval_id="apr_1", decision="approved", by="alice", waited_ms=30000.0),
            ),
            ("tool_call.finished", 33, call("issue_refund", "c2", decision="ok", duration_ms=900)),
            ("llm.call", 40, llm(HOSTILE_MODEL, None, None)),  # no latency recorded
            ("tool_call.decided", 41, call("db.drop", "c3", decision="block", reason="never")),
        ],
    )


def open_replay(dashboard: Dashboard, session: str = SESSION) -> Page:
    page = dashboard.page
    page.get_by_role("link", name="Sessions").click()
    page.get_by_role("link", name=session, exact=True).click()
    expect(page.get_by_text(re.compile(r"^step 1 of 9$"))).to_be_visible()
    return page


def test_bars_on_a_time_axis_select_their_steps(dashboard: Dashboard) -> None:
    story(dashboard)
    dashboard.login()
    page = open_replay(dashboard)
    timeline = page.get_by_role("figure", name=re.compile("Timeline"))
    expect(timeline).to_contain_text("2 model calls, 3 tool calls, 1 approval wait over")
    bars = timeline.locator(".tl-rows button")
    expect(bars).to_have_count(6)
    assert timeline.locator("rect.tl-bar-model").count() == 2 and timeline.locator("rect.tl-bar-wait").count() == 1
    # the wait is drawn from its request to its decision: about 30 s of the 40 s axis
    widths = page.evaluate(
        """() => [...document.querySelectorAll('.tl-rows rect')].map(r =>
             [r.classList[1], r.getBoundingClientRect().width / r.ownerSVGElement.getBoundingClientRect().width])"""
    )
    wait = next(w for kind, w in widths if kind == "tl-bar-wait")
    assert 0.65 < wait < 0.8, widths
    expect(bars.first).to_have_attribute("aria-current", "step")  # step 1 is the first model call
    expect(bars.first).to_contain_text("1.41 s · $0.0012")
    dashboard.shot("replay-timeline")

    bars.filter(has_text="approval").click()  # a bar selects its step
    expect(page.get_by_text(re.compile(r"^step 6 of 9$"))).to_be_visible()
    step = page.get_by_role("article", name="This step")
    expect(step).to_contain_text("approval.decided")
    expect(step.locator("dd", has_text="30.00 s")).to_be_visible()  # the agent waited, by the shared formatter
    expect(bars.filter(has_text="approval")).to_have_attribute("aria-current", "step")
    expect(timeline).to_contain_text("cost so far $0.0012 of $0.0012")

    page.keyboard.press("ArrowRight")  # the step-by-step replay keeps working, and moves the bar
    expect(page.get_by_text(re.compile(r"^step 7 of 9$"))).to_be_visible()
    expect(bars.filter(has_text="issue_refund").filter(has_text="900 ms")).to_have_attribute("aria-current", "step")
    page.keyboard.press("End")
    expect(bars.last).to_have_attribute("aria-current", "step")
    expect(bars.last).to_contain_text("blocked")
    page.keyboard.press("Home")
    expect(bars.first).to_have_attribute("aria-current", "step")
    page.get_by_role("button", name="Next →").click()
    expect(bars.nth(1)).to_have_attribute("aria-current", "step")  # the tool call's decision is its step too
    bars.nth(1).focus()
    page.keyboard.press("Enter")  # a bar is a button: the keyboard reaches and presses it
    expect(page.get_by_text(re.compile(r"^step 3 of 9$"))).to_be_visible()


def test_names_are_text_with_hidden_characters_shown(dashboard: Dashboard) -> None:
    story(dashboard)
    dashboard.login()
    page = open_replay(dashboard)
    timeline = page.get_by_role("figure", name=re.compile("Timeline"))
    hostile = timeline.locator(".tl-rows button", has_text="⟨U+202E RLO⟩")
    expect(hostile).to_contain_text("unpriced")
    text = timeline.evaluate("f => f.textContent")
    assert "\u202e" not in text and "⟨U+202E RLO⟩" in text
    hostile.click()
    step = page.get_by_role("article", name="This step")
    expect(step.locator("dd").first).to_contain_text("⟨U+202E RLO⟩")
    assert "\u202e" not in step.evaluate("a => a.querySelector('dl').textContent")


def test_step_details_use_the_shared_formatters_and_show_no_empty_rows(dashboard: Dashboard) -> None:
    story(dashboard)
    dashboard.login()
    page = open_replay(dashboard)
    step = page.get_by_role("article", name="This step")
    facts = step.locator("dl.facts")
    expect(facts).to_contain_text("1.41 s")  # latency, not "1413.2156355699674 ms"
    expect(facts).to_contain_text("18,070 tokens in")
    expect(facts).to_contain_text("$0.0012")
    assert "1413.2" not in step.inner_text()
    for n in range(9):
        page.goto(dashboard.url(f"#/sessions/{quote(SESSION, safe='')}?step={n}"))
        expect(page.get_by_text(re.compile(rf"^step {n + 1} of 9$"))).to_be_visible()
        terms = step.locator("dt").all_inner_texts()
        values = step.locator("dd").all_inner_texts()
        assert all(v.strip() not in ("", "—", "undefined", "null") for v in values), (n, terms, values)
        assert not {"Rules", "Note", "Policy revision"} & set(terms), (n, terms)  # none was recorded
        assert ("Decided by" in terms) == (n == 5), (n, terms)
        assert "Latency" not in terms or n == 0, (n, terms)  # the second model call recorded none
        assert "undefined" not in step.inner_text() and "NaN" not in step.inner_text()
    page.goto(dashboard.url(f"#/sessions/{quote(SESSION, safe='')}?step=2"))
    expect(step.locator("dd", has_text="251 ms")).to_be_visible()  # ran for 250.5 ms


def test_every_step_reads_at_4_5_to_1(dashboard: Dashboard) -> None:
    story(dashboard)
    dashboard.login()
    page = open_replay(dashboard)
    page.keyboard.press("ArrowRight")
    expect(page.get_by_text(re.compile(r"^step 2 of 9$"))).to_be_visible()
    assert contrast(page) == []  # greyed (later) steps were 2.2:1
    assert unnamed(page) == []


def test_any_session_id_replays(dashboard: Dashboard) -> None:
    ids = ["tenant/a/b", "..", "100%", "#frag?x=1", "a b", "заказ 🧾", "tab\there\x01", "x" * 1000]
    for session in ids:
        record(dashboard, session, [("tool_call.decided", 1, call("lookup", "c", decision="allow"))])
    dashboard.login()
    page = dashboard.page
    page.get_by_role("link", name="Sessions").click()
    for session in ids:
        page.goto(dashboard.url(f"#/sessions/{quote(session, safe='')}"))
        expect(page.get_by_text(re.compile(r"^step 1 of 1$"))).to_be_visible()
        expect(page.get_by_role("article", name="This step")).to_contain_text("lookup")
    expect(page.get_by_role("heading", level=1)).to_contain_text("x" * 1000)
    page.goto(dashboard.url("#/sessions/" + quote("tab\there\x01", safe="")))
    expect(page.get_by_role("heading", level=1)).to_contain_text("here⟨U+0001 SOH⟩")  # a control character as a token
    page.goto(dashboard.url("#/sessions/100%"))  # typed by hand, not percent-encoded: still that session
    expect(page.get_by_text(re.compile(r"^step 1 of 1$"))).to_be_visible()
    page.goto(dashboard.url("#/sessions"))
    page.get_by_role("link", name="tenant/a/b", exact=True).click()  # the list links there too
    expect(page.get_by_text(re.compile(r"^step 1 of 1$"))).to_be_visible()
    assert "/v1/sessions" not in page.url
    page.goto(dashboard.url("#/sessions/no-such-session"))
    expect(page.get_by_role("alert")).to_contain_text("no session 'no-such-session' is visible to you")


def test_a_time_no_calendar_holds_replays(dashboard: Dashboard) -> None:
    far = 9_000_000_000_000_000_000  # within 64 bits, past JavaScript's dates
    record(dashboard, "s-far", [("tool_call.decided", 1, call("lookup", "c1", decision="allow"))])
    db = Database(str(dashboard.server.db))
    fields = {"agent": "refunds", "environment": "test", "session": "s-far", **call("lookup", "c2", decision="allow")}
    with db.write() as cur:
        events.append(db, cur, [events.make_event("tool_call.decided", far, fields)])
    db.close()
    dashboard.login()
    page = dashboard.page
    page.goto(dashboard.url("#/sessions/s-far"))
    expect(page.get_by_text(re.compile(r"^step 1 of 2$"))).to_be_visible()
    expect(page.get_by_role("figure", name=re.compile("Timeline")).locator(".tl-rows button")).to_have_count(2)
    page.keyboard.press("End")
    expect(page.get_by_role("list", name="Steps")).to_contain_text(f"{far} µs (not a date)")


def test_the_replay_fits_a_phone(dashboard: Dashboard) -> None:
    story(dashboard)
    dashboard.login()
    page = dashboard.page
    page.set_viewport_size({"width": 375, "height": 812})
    page.goto(dashboard.url(f"#/sessions/{quote(SESSION, safe='')}"))
    expect(page.get_by_role("figure", name=re.compile("Timeline")).locator(".tl-rows button")).to_have_count(6)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.get_by_role("figure", name=re.compile("Timeline")).locator(".tl-rows button").nth(2).click()
    expect(page.get_by_text(re.compile(r"^step 6 of 9$"))).to_be_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    dashboard.shot("replay-timeline-phone")
