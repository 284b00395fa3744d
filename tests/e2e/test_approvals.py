"""The approvals inbox in a real browser: live, approve with an edit, deny with a note, escaping."""

from __future__ import annotations

import re
import time

import httpx
from playwright.sync_api import expect

from clearance._store._events import new_id

from .conftest import Dashboard


def test_an_approval_appears_live_and_an_edited_approval_resumes_the_agent(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.login()
    expect(page.get_by_text("Nothing is waiting for a decision.")).to_be_visible()
    dashboard.shot("inbox-empty")

    agent = dashboard.agent(850)  # waits for a decision
    item = page.get_by_role("link", name=re.compile("issue_refund by refunds"))
    expect(item).to_be_visible()  # no reload: the stream brought it
    item.click()
    detail = page.get_by_role("region", name="Approval", exact=True)  # not "Pending approvals"
    expect(detail.get_by_text("Refunds over $200 need a support lead")).to_be_visible()
    expect(detail.get_by_text(re.compile(r"\d+m \d+s left"))).to_be_visible()
    dashboard.shot("approval-detail")

    page.get_by_role("button", name="Edit arguments…").click()
    amount = page.get_by_label("amount")
    amount.fill("")
    expect(page.get_by_text("must be a number")).to_be_visible()
    expect(page.get_by_role("button", name="Review changes")).to_be_disabled()
    amount.fill("500")
    page.get_by_role("button", name="Review changes").click()
    review = page.get_by_role("region", name="Review the edit")
    expect(review.locator("td.old")).to_have_text("850")
    expect(review.locator("td.new")).to_have_text("500")
    dashboard.shot("approval-edit-review")
    page.get_by_role("button", name="Confirm and approve").click()

    outcome = dashboard.outcome(agent)
    assert outcome == {"outcome": "ran", "result": "refund of $500.00 for A-1003 issued"}
    expect(page.get_by_text("refund of $500.00 for A-1003 issued")).to_be_visible()  # the result arrived
    expect(detail.locator(".badge-executed").first).to_be_visible()
    expect(page.get_by_text("Nothing is waiting for a decision.")).to_be_visible()  # gone from the inbox, live
    dashboard.shot("approval-executed")


def test_a_denial_with_a_note_reaches_the_agent(dashboard: Dashboard) -> None:
    page = dashboard.page
    agent = dashboard.agent(300)
    dashboard.login()
    page.get_by_role("link", name=re.compile("issue_refund by refunds")).click()
    page.get_by_role("button", name="Deny…").click()
    page.get_by_label("Note for the agent (why not)").fill("Offer store credit instead")
    dashboard.shot("approval-deny")
    page.get_by_role("button", name="Deny", exact=True).click()
    assert dashboard.outcome(agent) == {"outcome": "denied", "note": "Offer store credit instead", "by": "user:alice"}
    expect(page.get_by_role("region", name="Approval").locator(".badge-denied").first).to_be_visible()
    expect(page.get_by_text("Offer store credit instead")).to_be_visible()


def test_hostile_arguments_are_shown_as_text_never_run(dashboard: Dashboard) -> None:
    page = dashboard.page
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    dashboard.agent(999)  # its reason argument is an <img onerror=…> payload
    dashboard.login()
    page.get_by_role("link", name=re.compile("issue_refund by refunds")).click()
    cell = page.locator("table.args td", has_text="onerror")
    expect(cell).to_have_text('<img src=x onerror="alert(1)">')
    assert page.locator("table.args img").count() == 0
    page.goto(dashboard.url("#/audit?q=onerror"))
    expect(page.locator("ol.calls .call-detail").first).to_contain_text("<img src=x")
    assert page.locator("ol.calls img").count() == 0
    assert dialogs == []


def test_the_inbox_works_from_the_keyboard_and_at_phone_width(dashboard: Dashboard) -> None:
    page = dashboard.page
    first, second = dashboard.agent(300), dashboard.agent(400)
    page.set_viewport_size({"width": 390, "height": 844})
    dashboard.login()
    items = page.locator("ul.items a")
    expect(items).to_have_count(2)
    dashboard.shot("inbox-phone")
    items.first.focus()
    page.keyboard.press("ArrowDown")
    expect(items.nth(1)).to_be_focused()
    page.keyboard.press("ArrowUp")
    expect(items.first).to_be_focused()
    page.keyboard.press("Enter")
    detail = page.get_by_role("region", name="Approval")
    expect(detail).to_be_visible()
    expect(page.get_by_role("region", name="Pending approvals")).to_be_hidden()  # one column on a phone
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways at phone width ({width}px)"
    dashboard.shot("approval-phone")
    approve = page.get_by_role("button", name="Approve", exact=True)
    approve.focus()
    page.keyboard.press("Enter")
    # Nearest expiry first: the first request, which ran; the second opens next, its title focused.
    assert dashboard.outcome(first) == {"outcome": "ran", "result": "refund of $300.00 for A-1003 issued"}
    expect(detail.get_by_role("cell", name="400")).to_be_visible()
    expect(page.locator("#approval-title")).to_be_focused()
    page.get_by_role("link", name="← All pending").click()
    expect(items).to_have_count(1)
    expect(page.locator(".last-decided")).to_have_text("Approved issue_refund by refunds in test")
    assert second.poll() is None


def test_an_approval_shows_the_last_records_of_its_session_before_it(dashboard: Dashboard) -> None:
    """Fifteen records before the approval, asked for as such (not the whole session); names shown safely."""
    now = time.time_ns() // 1000
    earlier = [
        {"id": new_id("evt"), "at_us": now - 1_000_000 + i, "kind": "llm.call", "session": "ses/earlier"}
        | {"model": f"model-{i:02d}\u202e", "input_tokens": 1, "output_tokens": 1, "tokens": 2}
        for i in range(40)
    ]
    headers = {"X-API-Key": dashboard.server.agent}
    sent = httpx.post(f"{dashboard.server.base}/v1/events", headers=headers, json={"events": earlier})
    assert sent.status_code == 200 and not sent.json()["refused"], sent.text
    asked = httpx.post(
        f"{dashboard.server.base}/v1/check",
        headers=headers,
        json={"tool": "issue_refund", "args": {"order_id": "E-1", "amount": 900, "reason": "late"}}
        | {"session_id": "ses/earlier", "approval_mode": "async"},
    )
    assert asked.status_code == 200 and asked.json()["approval_id"], asked.text
    dashboard.login()
    dashboard.page.goto(dashboard.url(f"#/approvals/{asked.json()['approval_id']}"))
    shown = dashboard.page.locator("section.earlier li")
    expect(shown).to_have_count(15)
    expect(shown.first).to_contain_text("model-25⟨U+202E RLO⟩")
    expect(shown.last).to_contain_text("model-39⟨U+202E RLO⟩")
