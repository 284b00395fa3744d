"""The audit explorer as traces, in Chromium: a row per call (decided → approval → outcome) with who
decided, their note and edits; opened into its steps; local times with UTC on hover; every
record on its own; a record in full with no empty rows; filters, paging and export; 375 px.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from playwright.sync_api import Locator, Page, expect

from clearance._store._events import new_id
from clearance._store._kinds import KINDS

from .conftest import PASSWORD, Dashboard

NOTE = "Half now, half after the return"
PHONE = {"width": 375, "height": 812}
LATENCY = 1413.2156355699674
RLO = "\u202e"


def check(dashboard: Dashboard, amount: float, order: str, reason: str = "late") -> dict[str, Any]:
    body = {"tool": "issue_refund", "args": {"order_id": order, "amount": amount, "reason": reason}}
    body |= {"session_id": "ses-audit", "approval_mode": "async"}
    r = httpx.post(f"{dashboard.server.base}/v1/check", headers={"X-API-Key": dashboard.server.agent}, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def ingest(dashboard: Dashboard, *records: dict[str, Any]) -> None:
    now = time.time_ns() // 1000
    batch = [{"id": new_id("evt"), "at_us": now, "session": "ses-audit", **r} for r in records]
    r = httpx.post(
        f"{dashboard.server.base}/v1/events", headers={"X-API-Key": dashboard.server.agent}, json={"events": batch}
    )
    assert r.status_code == 200 and not r.json()["refused"], r.text


def as_bob(dashboard: Dashboard, approval_id: str, verb: str, decision: dict[str, Any]) -> None:
    """Bob, an approver, signs in and decides."""
    with httpx.Client(base_url=dashboard.server.base) as bob:
        r = bob.post("/v1/login", json={"username": "bob", "password": PASSWORD})
        assert r.status_code == 200, r.text
        csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
        r = bob.post(f"/v1/approvals/{approval_id}/{verb}", headers=csrf, json=decision)
        assert r.status_code == 200, r.text


def history(dashboard: Dashboard, between: Callable[[], None] = lambda: None) -> dict[str, dict[str, Any]]:
    """An edited approval approved by bob with a note and run; a denied one; a blocked call; an
    allowed call with no outcome; a model call of 18,070 tokens. `between` runs after the calls
    are asked and before they are decided."""
    calls = {"edited": check(dashboard, 355.08, "R-1")}
    calls["denied"] = check(dashboard, 900, "R-2")
    calls["blocked"] = check(dashboard, 6000, "R-3")
    calls["open"] = check(dashboard, 40, "R-4")
    ingest(
        dashboard,
        {"kind": "llm.call", "model": "gpt-4o-mini", "tokens": 18070, "input_tokens": 18000, "output_tokens": 70}
        | {"latency_ms": LATENCY, "priced": True, "cost_usd": "0.0029676", "cost_nusd": 2_967_600},
    )
    between()
    as_bob(dashboard, calls["edited"]["approval_id"], "approve", {"note": NOTE, "args": {"amount": 150}})
    as_bob(dashboard, calls["denied"]["approval_id"], "deny", {"note": "Already refunded"})
    agent = {"X-API-Key": dashboard.server.agent}
    claim = httpx.post(
        f"{dashboard.server.base}/v1/approvals/{calls['edited']['approval_id']}/claim",
        headers=agent,
        json={"by": "worker-7"},
    )
    assert claim.status_code == 200, claim.text
    ingest(
        dashboard,
        {"kind": "tool_call.finished", "tool": "issue_refund", "call_id": calls["edited"]["call_id"]}
        | {"approval_id": calls["edited"]["approval_id"], "decision": "ok", "duration_ms": LATENCY},
    )
    return calls


def open_audit(dashboard: Dashboard, fragment: str = "#/audit") -> None:
    dashboard.login()
    dashboard.page.goto(dashboard.url(fragment))


def call_row(page: Page, order: str) -> Locator:
    return page.locator("ol.calls > li", has_text=f"order_id={order}")


def fits(page: Page, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"the page scrolls sideways at {width}px ({scroll}px)"


def within(page: Page, target: Locator, width: int) -> None:
    box = target.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width + 0.5, box


def no_empty_rows(page: Page) -> None:
    for text in page.locator("dl.facts > dd").all_inner_texts():
        assert text.strip() and text.strip() not in ("—", "undefined", "null"), page.locator("dl.facts").inner_text()
    assert "undefined" not in page.locator("dl.facts").inner_text()


def test_a_row_per_call_with_decider_note_and_edits_opens_into_its_steps(dashboard: Dashboard) -> None:
    calls = history(dashboard)
    page = dashboard.page
    open_audit(dashboard)
    row = call_row(page, "R-1")
    expect(row).to_have_count(1)  # one row for its five records
    expect(row.locator(".chain .badge")).to_have_text(["require_approval", "approved", "executed"])
    expect(row.locator(".decider")).to_have_text("by user:bob")
    expect(row.locator("q.note")).to_have_text(NOTE)
    expect(row.locator(".edit")).to_have_text("amount 355.08 → 150")
    first = page.locator("ol.calls > li").first
    expect(first).to_contain_text("order_id=R-1")  # run last: the newest call, though decided first
    denied = call_row(page, "R-2")
    expect(denied.locator(".chain .badge")).to_have_text(["require_approval", "denied"])
    expect(denied.locator("q.note")).to_have_text("Already refunded")
    blocked = call_row(page, "R-3")
    expect(blocked.locator(".chain .badge")).to_have_text(["block"])
    expect(blocked).to_contain_text("Refunds over $5000 are never made by the bot")
    expect(call_row(page, "R-4").locator(".chain .badge")).to_have_text(["allow", "no outcome yet"])
    llm = page.locator("ol.calls > li", has_text="gpt-4o-mini")
    expect(llm).to_contain_text("18,070 tokens")
    expect(llm).to_contain_text("1.41 s")

    when = row.locator(".call-head time")
    expect(when).to_have_attribute("title", re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$"))
    expect(when).to_contain_text("ago")
    dashboard.shot("audit-calls")

    button = row.get_by_role("button", name=re.compile("5 steps"))
    expect(button).to_have_attribute("aria-expanded", "false")
    button.focus()
    page.keyboard.press("Enter")  # from the keyboard
    expect(button).to_have_attribute("aria-expanded", "true")
    steps = row.locator("ol.steps > li")
    expect(steps).to_have_count(5)
    expect(steps.locator(".step-title")).to_have_text(
        [
            "decided: require_approval",
            "approval requested",
            "approval approved",
            "ran: ok",
            "approval executed",
        ]
    )
    expect(steps.nth(2)).to_contain_text("by user:bob")
    expect(steps.nth(2)).to_contain_text("amount 355.08 → 150")
    expect(steps.nth(3)).to_contain_text("ran for 1.41 s")
    expect(steps.nth(4)).to_contain_text("run by")  # the process that ran it, not the approver
    expect(steps.first.locator("time")).to_have_attribute("title", re.compile(" UTC$"))
    dashboard.shot("audit-call-open")
    steps.nth(2).get_by_role("link", name=re.compile(r"^Record \d+$")).click()
    expect(page.get_by_role("heading", name=re.compile("approval.decided"))).to_be_visible()
    assert calls["edited"]["call_id"] in page.locator("dl.facts").inner_text()


def test_every_record_shows_who_decided_and_formatted_numbers(dashboard: Dashboard) -> None:
    history(dashboard)
    page = dashboard.page
    open_audit(dashboard, "#/audit?view=records&kind=approval.decided")
    rows = page.locator("table.events tbody tr")
    expect(rows).to_have_count(2)
    approved = rows.filter(has_text="approved")
    expect(approved.locator("td.clip")).to_contain_text("by user:bob")
    expect(approved.locator("td.clip")).to_contain_text(NOTE)
    expect(approved.locator("td.clip")).to_contain_text("amount 355.08 → 150")
    expect(rows.filter(has_text="denied").locator("td.clip")).to_contain_text("by user:bob")
    page.goto(dashboard.url("#/audit?view=records&kind=llm.call"))
    expect(page.locator("table.events tbody tr")).to_have_count(1)
    expect(page.locator("table.events td.clip")).to_have_text("gpt-4o-mini · 18,070 tokens · $0.0030 · 1.41 s")
    page.goto(dashboard.url("#/audit?view=records&kind=approval.executed"))
    expect(page.locator("table.events td.clip")).to_contain_text("run by")
    expect(page.locator("table.events time").first).to_have_attribute("title", re.compile(" UTC$"))
    dashboard.shot("audit-records")


def test_a_record_in_full_has_no_empty_rows_and_reads_as_fields(dashboard: Dashboard) -> None:
    calls = history(dashboard)
    page = dashboard.page
    dashboard.login()
    events = dashboard.server.events()
    edited = [e for e in events if e.get("call_id") == calls["edited"]["call_id"]]
    seq = {e["kind"]: e["seq"] for e in edited} | {
        e["kind"]: e["seq"] for e in events if e["kind"] in ("llm.call", "policy.activated")
    }
    seq["approval.decided:approved"] = seq["approval.decided"]

    page.goto(dashboard.url(f"#/audit/{seq['approval.decided:approved']}"))
    facts = page.locator("dl.facts")
    expect(facts.locator("dt")).to_contain_text(["Decided by", "Note", "Changed", "Agent waited"])
    expect(facts.locator("dt", has_text="Decided by").locator("+ dd")).to_have_text("user:bob")
    expect(facts.locator("dt", has_text="Note").locator("+ dd")).to_have_text(NOTE)
    expect(facts.locator("dt", has_text="Changed").locator("+ dd")).to_have_text("amount 355.08 → 150")
    expect(facts.get_by_role("link", name=calls["edited"]["approval_id"])).to_be_visible()
    expect(facts.locator("time")).to_have_attribute("title", re.compile(" UTC$"))
    no_empty_rows(page)
    dashboard.shot("audit-record-approval")

    page.goto(dashboard.url(f"#/audit/{seq['llm.call']}"))
    expect(facts.locator("dt", has_text="Latency").locator("+ dd")).to_have_text("1.41 s")
    expect(facts.locator("dt", has_text="Tokens").locator("+ dd")).to_contain_text("18,070 tokens")
    no_empty_rows(page)

    page.goto(dashboard.url(f"#/audit/{seq['approval.executed']}"))
    expect(facts.locator("dt", has_text="Run by")).to_be_visible()  # who ran it, not who approved it
    expect(facts.locator("dt", has_text="Ran for").locator("+ dd")).to_have_text("1.41 s")
    no_empty_rows(page)

    page.goto(dashboard.url(f"#/audit/{seq['policy.activated']}"))  # no session, tool, rules or decider
    expect(facts.locator("dt", has_text="Policy revision")).to_be_visible()
    expect(facts.locator("dt", has_text="Session")).to_have_count(0)
    no_empty_rows(page)

    page.goto(dashboard.url(f"#/audit/{seq['tool_call.decided']}"))
    expect(facts.locator("dt", has_text="Rules").locator("+ dd")).to_have_text("refund-needs-approval")
    no_empty_rows(page)

    page.goto(dashboard.url("#/audit/999999"))
    expect(page.get_by_role("alert")).to_have_text("no record at position 999999 is visible to you")


def test_filters_paging_and_export_by_call(dashboard: Dashboard) -> None:

    def more_calls() -> None:  # between the refunds being asked and decided: their records straddle the pages
        for n in range(55):
            check(dashboard, 10 + n, f"P-{n}")

    calls = history(dashboard, between=more_calls)
    page = dashboard.page
    open_audit(dashboard)
    rows = page.locator("ol.calls > li")
    expect(rows).to_have_count(50)
    expect(page.get_by_role("status")).to_contain_text("50 calls shown")
    expect(rows.nth(0)).to_contain_text("order_id=R-1")  # run last
    expect(rows.nth(1)).to_contain_text("order_id=R-2")  # denied after the 55
    expect(rows.nth(2)).to_contain_text("order_id=P-54")
    page.get_by_role("button", name="Older →").click()
    expect(rows.first).to_contain_text("order_id=P-6")
    seen = rows.all_inner_texts()
    assert not any("order_id=R-1" in t or "order_id=R-2" in t for t in seen)  # shown once, on page 1
    assert any("order_id=R-3" in t for t in seen) and any("order_id=R-4" in t for t in seen)
    page.get_by_role("button", name="← Newer").click()
    expect(rows.first).to_contain_text("order_id=R-1")

    page.get_by_label("Decision / status").select_option("approved")
    page.get_by_label("Tool", exact=True).fill("issue_refund")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".chain .badge")).to_have_text(["require_approval", "approved", "executed"])
    assert "decision=approved" in page.url and "tool=issue_refund" in page.url  # a search can be shared
    csv = page.get_by_role("link", name="CSV").get_attribute("href") or ""
    assert "decision=approved" in csv and "tool=issue_refund" in csv
    page.reload()
    expect(rows).to_have_count(1)
    expect(page.get_by_label("Decision / status")).to_have_value("approved")

    page.get_by_role("link", name="Every record").click()
    expect(page.locator("table.events tbody tr")).to_have_count(1)  # the one approval.decided record
    assert "view=records" in page.url and "decision=approved" in page.url
    page.get_by_role("link", name="By call").click()
    expect(rows).to_have_count(1)

    page.goto(dashboard.url(f"#/audit?call_id={calls['denied']['call_id']}"))
    expect(rows).to_have_count(1)
    page.goto(dashboard.url("#/audit?q=R-3"))
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".chain .badge")).to_have_text(["block"])
    page.goto(dashboard.url("#/audit?kind=llm.call"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("gpt-4o-mini")


def test_every_kind_of_record_can_be_found(dashboard: Dashboard) -> None:
    open_audit(dashboard)
    offered = dashboard.page.get_by_label("Kind").locator("option").all_inner_texts()
    assert sorted(offered) == sorted(["any", *KINDS])


def test_hostile_values_read_as_text(dashboard: Dashboard) -> None:
    page = dashboard.page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    check(dashboard, 20, f"{RLO}evil", reason='<img src=x onerror="alert(1)">')
    ingest(
        dashboard,
        {"kind": "tool_call.decided", "tool": "t", "call_id": f"c{RLO}1", "decision": "allow"}
        | {"args": {"x": "<script>alert(2)</script>" + "y" * 5000}},
    )
    open_audit(dashboard)
    row = page.locator("ol.calls > li", has_text="onerror")
    expect(row).to_contain_text('<img src=x onerror="alert(1)">')
    expect(row).to_contain_text("⟨U+202E RLO⟩evil")
    expect(row.locator(".badge-hazard")).to_be_visible()
    assert page.locator("ol.calls img, ol.calls script").count() == 0
    assert RLO not in page.locator("ol.calls").inner_text()
    odd = page.locator("ol.calls > li", has_text="<script>")
    odd.get_by_role("button", name=re.compile("1 step")).click()
    expect(odd.locator("ol.steps > li")).to_have_count(1)
    page.set_viewport_size(PHONE)
    fits(page, PHONE["width"])
    assert dialogs == []


def test_the_audit_pages_fit_a_phone(dashboard: Dashboard) -> None:
    history(dashboard)
    page = dashboard.page
    page.set_viewport_size(PHONE)
    open_audit(dashboard)
    row = call_row(page, "R-1")
    expect(row.locator(".decider")).to_be_visible()
    within(page, row.locator(".decider"), PHONE["width"])
    within(page, row.locator(".edit"), PHONE["width"])
    fits(page, PHONE["width"])
    row.get_by_role("button", name=re.compile("steps")).click()
    expect(row.locator("ol.steps > li")).to_have_count(5)
    fits(page, PHONE["width"])
    dashboard.shot("audit-phone")

    page.get_by_role("link", name="Every record").click()
    details = page.locator("table.events td.clip", has_text="by user:bob").first
    expect(details).to_be_visible()
    within(page, details, PHONE["width"])
    fits(page, PHONE["width"])
    dashboard.shot("audit-records-phone")

    page.locator("table.events tbody tr").first.get_by_role("link").first.click()
    expect(page.locator("dl.facts")).to_be_visible()
    fits(page, PHONE["width"])
    dashboard.shot("audit-record-phone")
