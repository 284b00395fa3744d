"""The Decisions page in a real browser: an approved call with its edit, a denial with its note, an
expired approval; a filter kept in the address; the export of that filter; a phone's width.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from playwright.sync_api import Browser, expect

from .._wait import until
from .conftest import POLICY, Dashboard

# The fixture's policy, a tool whose approvals time out at once (its decision is the timeout), and
# one whose approver may let similar calls through.
DECISIONS = POLICY.replace(
    "budgets:",
    "  crm/delete_contact:\n    rules:\n      - id: deletes\n        effect: require_approval\n"
    "        reason: Deleting a contact needs a person\n        approval: {timeout: 1s, on_timeout: deny}\n"
    "  crm/merge_contacts:\n    rules:\n      - id: merges\n        effect: require_approval\n"
    "        approval: {grants: {scopes: [session], max_duration: 1h, max_calls: 3}}\nbudgets:",
)
RLO = "\u202e"


def ask(dashboard: Dashboard, tool: str, args: dict[str, Any], session: str) -> str:
    body = {"tool": tool, "args": args, "session_id": session, "approval_mode": "async"}
    r = httpx.post(f"{dashboard.server.base}/v1/check", headers={"X-API-Key": dashboard.server.agent}, json=body)
    assert r.status_code == 200 and r.json()["decision"] == "require_approval", r.text
    return str(r.json()["approval_id"])


def decide(dashboard: Dashboard, approval_id: str, verb: str, **body: Any) -> None:
    r = httpx.post(
        f"{dashboard.server.base}/v1/approvals/{approval_id}/{verb}",
        headers={"X-API-Key": dashboard.server.approver},
        json=body,
    )
    assert r.status_code == 200, r.text


def status(dashboard: Dashboard, approval_id: str) -> str:
    r = httpx.get(
        f"{dashboard.server.base}/v1/approvals/{approval_id}", headers={"X-API-Key": dashboard.server.approver}
    )
    return str(r.json()["status"])  # looking at one past its time expires it


def seeded(dashboard: Dashboard) -> dict[str, str]:
    dashboard.server.publish(DECISIONS)
    refund = {"order_id": "A-1042", "amount": 355.08, "reason": "storm damage"}
    edited = ask(dashboard, "issue_refund", refund, "ses/north/1")
    decide(dashboard, edited, "approve", args={"amount": 150}, note="half now, the rest after the review")
    denied = ask(dashboard, "issue_refund", {**refund, "amount": 900}, "ses/north/1")
    decide(dashboard, denied, "deny", note=f"not without the receipt {RLO}gpj.exe")
    granted = ask(dashboard, "crm/merge_contacts", {"a": "c-1", "b": "c-2"}, "ses/south/2")
    decide(dashboard, granted, "approve", grant={"scope": "session", "duration": "1h", "max_calls": 3})
    expired = ask(dashboard, "crm/delete_contact", {"contact": "c-7"}, "ses/south/2")
    until(lambda: status(dashboard, expired) == "expired", "the approval times out")
    return {"edited": edited, "denied": denied, "granted": granted, "expired": expired}


def test_the_history_shows_edits_notes_and_timeouts_filters_and_exports(dashboard: Dashboard) -> None:
    made = seeded(dashboard)
    page = dashboard.page
    dashboard.login()
    nav = page.get_by_role("navigation", name="Pages").get_by_role("link")
    expect(nav.nth(1)).to_have_text("Decisions")  # right after Approvals
    nav.nth(1).click()
    expect(page).to_have_title("Decisions · Clearance")
    items = page.get_by_role("list", name="Decisions").get_by_role("article")
    expect(items).to_have_count(4)

    expired, granted, denied, edited = (items.nth(i) for i in range(4))  # newest first
    expect(expired).to_contain_text("expired")
    expect(expired).to_contain_text("crm/delete_contact")
    expect(expired).to_contain_text("by no one (timed out)")
    expect(expired).to_contain_text("ses/south/2")

    expect(granted.locator(".badge").first).to_have_text("granted")
    expect(granted.locator(".decision-grant")).to_contain_text(
        re.compile(r"^live Let similar calls of this session through until .+, at most 3 calls the grant →$")
    )
    grant_link = granted.get_by_role("link", name="the grant →")
    expect(grant_link).to_have_attribute("href", "#/grants?agent=refunds&session=ses%2Fsouth%2F2")

    expect(denied.locator(".badge").first).to_have_text("denied")
    expect(denied.locator(".decision-note")).to_have_text("not without the receipt ⟨U+202E RLO⟩gpj.exe")
    expect(denied.locator(".hz-bidi")).to_have_text("⟨U+202E RLO⟩")

    expect(edited.locator(".badge").first).to_have_text("approved")
    change = edited.get_by_role("list", name="Edited arguments").get_by_role("listitem")
    expect(change).to_have_count(1)
    expect(change).to_have_text(re.compile(r"^amount\s+355\.08\s+→\s+150$"))
    expect(edited.locator(".decision-note")).to_have_text("half now, the rest after the review")
    expect(edited).to_contain_text(re.compile(r"waited \d"))
    expect(edited.get_by_role("link", name="replay")).to_have_attribute("href", "#/sessions/ses%2Fnorth%2F1")
    dashboard.shot("decisions")

    # A filter: the address keeps it (a reload shows the same), the export takes it.
    page.get_by_label("Outcome").select_option("denied")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"#/decisions\?outcome=denied$"))
    expect(items).to_have_count(1)
    expect(items.first).to_contain_text("not without the receipt")
    page.reload()
    expect(items).to_have_count(1)
    csv_link = page.get_by_role("link", name="CSV")
    expect(csv_link).to_have_attribute("href", "/v1/decisions/export?outcome=denied&format=csv")
    exported = page.request.get(dashboard.url(csv_link.get_attribute("href").lstrip("/")))  # signed in: the cookie
    assert exported.ok and exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text())))
    assert [(r["approval_id"], r["outcome"], r["decided_by"]) for r in rows] == [
        (made["denied"], "denied", rows[0]["decided_by"])
    ]
    assert rows[0]["note"] == f"not without the receipt {RLO}gpj.exe"

    # A decider's link narrows the list to their decisions (the filter already set stays).
    page.goto(dashboard.url("#/decisions"))
    items.nth(3).get_by_role("link", name=re.compile("^key")).click()
    expect(page).to_have_url(re.compile(r"decider=key"))
    expect(items).to_have_count(3)  # the approval, the grant and the denial; the timeout was no one's

    page.get_by_role("link", name="Clear filters").click()
    expect(items).to_have_count(4)
    dashboard.shot("decisions-all")


def test_the_history_fits_a_phone(dashboard: Dashboard) -> None:
    seeded(dashboard)
    page = dashboard.page
    page.set_viewport_size({"width": 375, "height": 812})
    dashboard.login()
    page.goto(dashboard.url("#/decisions"))
    items = page.get_by_role("list", name="Decisions").get_by_role("article")
    expect(items).to_have_count(4)
    expect(items.nth(3).get_by_role("list", name="Edited arguments")).to_contain_text("355.08")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways at 375px ({width}px)"
    dashboard.shot("decisions-phone")


def test_times_are_the_browsers_local_time_with_utc_on_hover(dashboard: Dashboard, browser: Browser) -> None:
    """An approver in New York reads New York time (the defect: UTC only), UTC in the title."""
    dashboard.server.publish(DECISIONS)
    approved = ask(dashboard, "issue_refund", {"order_id": "A-7", "amount": 355.08}, "ses-ny")
    decide(dashboard, approved, "approve", note="fine")
    context = browser.new_context(viewport={"width": 1280, "height": 900}, timezone_id="America/New_York")
    try:
        ny = Dashboard(dashboard.server, context.new_page(), dashboard.tmp, "new_york")
        ny.login()
        ny.page.goto(ny.url("#/decisions"))
        shown = ny.page.get_by_role("list", name="Decisions").get_by_role("article").first.locator("time").first
        expect(shown).to_have_attribute("title", re.compile(r" UTC$"))
        at_utc = datetime.strptime(shown.get_attribute("title") or "", "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
        local = at_utc.astimezone(ZoneInfo("America/New_York"))
        assert local.utcoffset() != timedelta(0)  # the test would prove nothing in a zone at UTC
        expect(shown).to_contain_text(re.compile(rf"^{local:%Y-%m-%d %H:%M:%S} · \d+[smhd] ago$"))
    finally:
        context.close()
