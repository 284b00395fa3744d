"""Grants and shadow policies in a real browser: approve with a grant, a refused grant, revoke, the shadow report.

Each runs at a desktop width and at a phone's (375x667), where the page must not scroll sideways.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import pytest
from playwright.sync_api import Page, expect

from .conftest import Dashboard

GRANTS = """\
version: 1
default: allow
tools:
  issue_refund:
    params: {order_id: string, amount: number, reason: string}
    rules:
      - id: refund-needs-approval
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval:
          timeout: 10m
          grants: {scopes: [session, agent], max_duration: 8h, max_calls: 5, max_total: {amount: 3000}}
      - id: refund-cap
        when: args.amount > 5000
        effect: block
        reason: Refunds over $5000 are never made by the bot
"""
# Enforced: refunds over $200 ask. In shadow: over $100 ask too, and a monitor rule watches over $50.
SHADOW = GRANTS.replace("args.amount > 200", "args.amount > 100").replace("Refunds over $200", "Refunds over $100")
SHADOW = SHADOW.replace(
    "      - id: refund-cap\n",
    "      - id: trial-watch\n        when: args.amount > 50\n        effect: block\n        mode: monitor\n"
    "        reason: Would stop refunds over $50\n      - id: refund-cap\n",
)
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 375, "height": 667}}
RLO = "\u202e"
GRANT = re.compile(r"^Grant grt_")  # a grant's card, not the constraints listed in it


def check(dashboard: Dashboard, amount: float, *, session: str = "ses-grant", order: str = "A-1") -> dict[str, Any]:
    body = {
        "tool": "issue_refund",
        "args": {"order_id": order, "amount": amount, "reason": "storm damage"},
        "session_id": session,
        "approval_mode": "async",
    }
    r = httpx.post(f"{dashboard.server.base}/v1/check", headers={"X-API-Key": dashboard.server.agent}, json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def api(dashboard: Dashboard, method: str, path: str, **kwargs: Any) -> Any:
    r = httpx.request(method, f"{dashboard.server.base}{path}", headers={"X-API-Key": dashboard.server.admin}, **kwargs)
    assert r.status_code < 300, r.text
    return r.json()


def approver(dashboard: Dashboard, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(
        method, f"{dashboard.server.base}{path}", headers={"X-API-Key": dashboard.server.approver}, **kwargs
    )


def fits(page: Page, size: dict[str, int]) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= size["width"], f"the page scrolls sideways at {size['width']}px ({width}px)"


def open_approval(dashboard: Dashboard, approval_id: str) -> None:
    dashboard.page.goto(dashboard.url(f"#/approvals/{approval_id}"))
    expect(dashboard.page.get_by_role("region", name="Approval", exact=True)).to_be_visible()


@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_approve_with_a_grant_then_covered_calls_pass_without_asking(dashboard: Dashboard, size: str) -> None:
    page = dashboard.page
    page.set_viewport_size(VIEWPORTS[size])
    dashboard.server.publish(GRANTS)
    asked = check(dashboard, 850)
    assert asked["decision"] == "require_approval"
    dashboard.login()
    open_approval(dashboard, asked["approval_id"])
    detail = page.get_by_role("region", name="Approval", exact=True)
    expect(
        detail.get_by_text("session or agent, up to 8 hours, at most 5 calls, amount totalling at most 3000")
    ).to_be_visible()
    page.get_by_role("button", name="Approve and grant…").click()
    form = page.get_by_role("form", name="Approve and grant similar calls")
    expect(form.get_by_role("radio", name=re.compile("this session"))).to_be_checked()
    expect(form.get_by_role("combobox", name=re.compile("For how long"))).to_have_value("3600")
    calls = form.get_by_label(re.compile("At most this many calls"))
    expect(calls).to_have_value("5")  # prefilled with the rule's limit…
    calls.fill("6")  # …and bounded by it
    expect(form.get_by_text("at most 5", exact=True)).to_be_visible()
    expect(form.get_by_role("button", name="Approve and grant")).to_be_disabled()
    calls.fill("4")
    form.get_by_label(re.compile("amount may total at most")).fill("2000")
    form.get_by_role("checkbox", name=re.compile("order_id as this call")).check()
    form.get_by_label(re.compile("amount at most")).fill("900")
    fits(page, VIEWPORTS[size])
    dashboard.shot(f"grant-form-{size}")
    submit = form.get_by_role("button", name="Approve and grant")
    expect(submit).to_be_in_viewport()  # the sticky bar keeps it in reach
    submit.click()
    expect(detail.locator(".badge-approved").first).to_be_visible()
    expect(page.get_by_role("status").filter(has_text="Similar calls are granted")).to_be_visible()
    dashboard.shot(f"grant-approved-{size}")

    [grant] = api(dashboard, "GET", "/v1/grants", params={"live": "true"})
    assert (grant["scope"], grant["session"], grant["max_calls"], grant["max_total"]) == (
        "session",
        "ses-grant",
        4,
        "2000",
    )
    assert grant["constraints"] == {
        "amount": {"maximum": 900, "required": True},
        "order_id": {"enum": ["A-1"], "required": True},
    }
    assert grant["approval_id"] == asked["approval_id"] and grant["granted_by"] == "user:alice"
    covered = check(dashboard, 850)
    assert covered["decision"] == "allow" and grant["id"] in covered["reason"]
    assert check(dashboard, 850, order="A-2")["decision"] == "require_approval"  # not the same order
    assert check(dashboard, 950)["decision"] == "require_approval"  # above the grant's maximum
    assert check(dashboard, 850, session="ses-other")["decision"] == "require_approval"  # another session
    assert check(dashboard, 6000)["decision"] == "block"  # a grant never answers a blocking rule


def test_a_refused_grant_shows_each_problem_and_the_approval_stays_pending(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.server.publish(GRANTS)
    asked = check(dashboard, 850)
    dashboard.login()
    open_approval(dashboard, asked["approval_id"])
    page.get_by_role("button", name="Approve and grant…").click()
    form = page.get_by_role("form", name="Approve and grant similar calls")
    other = form.get_by_label(re.compile("Other constraints"))
    other.fill("{not json")
    expect(form.get_by_text("not valid JSON")).to_be_visible()
    expect(form.get_by_role("button", name="Approve and grant")).to_be_disabled()
    # What only the server knows: the tool has no such argument, and the pattern does not compile.
    other.fill('{"colour": {"maximum": 3}, "order_id": {"pattern": "("}}')
    form.get_by_role("button", name="Approve and grant").click()
    constraints = form.get_by_role("group", name="Constraints (optional)")
    expect(constraints.get_by_text("constraints.colour: the tool has no argument 'colour'")).to_be_visible()
    expect(constraints.locator(".problems li")).to_have_count(2)
    expect(form.get_by_role("alert").filter(has_text="Not approved")).to_contain_text("still pending")
    dashboard.shot("grant-refused")
    shown = approver(dashboard, "GET", f"/v1/approvals/{asked['approval_id']}").json()
    assert shown["status"] == "pending"
    assert api(dashboard, "GET", "/v1/grants") == []
    page.set_viewport_size(VIEWPORTS["phone"])
    fits(page, VIEWPORTS["phone"])
    dashboard.shot("grant-refused-phone")
    other.fill('{"order_id": {"pattern": "^A-"}}')
    form.get_by_role("button", name="Approve and grant").click()
    expect(page.get_by_role("region", name="Approval", exact=True).locator(".badge-approved").first).to_be_visible()
    [grant] = api(dashboard, "GET", "/v1/grants")
    assert grant["constraints"] == {"order_id": {"pattern": "^A-", "required": True}}


def test_revoke_a_grant_from_the_grants_page(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.server.publish(GRANTS)
    session, order = "ses-revoke", f"A-{RLO}1"  # an argument with a direction control: shown as a token
    asked = check(dashboard, 850, session=session, order=order)
    given = {"scope": "session", "duration": "2h", "max_calls": 3, "same": ["order_id"]}
    r = approver(dashboard, "POST", f"/v1/approvals/{asked['approval_id']}/approve", json={"grant": given})
    assert r.status_code == 200, r.text
    other = check(dashboard, 900, session="ses-quiet")
    assert approver(
        dashboard, "POST", f"/v1/approvals/{other['approval_id']}/approve", json={"grant": given}
    ).is_success
    assert check(dashboard, 400, session=session, order=order)["decision"] == "allow"  # one use
    dashboard.login()
    page.get_by_role("link", name="Grants").click()
    live = page.get_by_role("list", name="Live grants")
    expect(live.get_by_role("listitem", name=GRANT)).to_have_count(2)
    card = live.get_by_role("listitem", name=GRANT).filter(has_text="U+202E RLO")
    expect(card.get_by_text("1 of 3 calls")).to_be_visible()
    [given_by] = {g["granted_by"] for g in api(dashboard, "GET", "/v1/grants")}
    expect(card).to_contain_text(f"by {given_by}")
    expect(card.get_by_role("link", name=re.compile("approval apr_"))).to_have_attribute(
        "href", f"#/approvals/{asked['approval_id']}"
    )
    assert RLO not in (card.text_content() or "")  # never the raw character
    dashboard.shot("grants-live")

    page.get_by_label("Session").fill("ses-quiet")
    page.get_by_role("button", name="Filter").click()
    expect(live.get_by_role("listitem", name=GRANT)).to_have_count(1)
    assert "session=ses-quiet" in page.url
    page.get_by_role("link", name="Show all").click()
    expect(live.get_by_role("listitem", name=GRANT)).to_have_count(2)

    card.get_by_role("button", name="Revoke…").click()
    card.get_by_label(re.compile("Why")).fill("the customer disputes it")
    card.get_by_role("button", name="Revoke", exact=True).click()
    ended = page.get_by_role("list", name="Ended grants")
    revoked = ended.get_by_role("listitem", name=GRANT)
    expect(revoked).to_have_count(1)
    expect(revoked.locator(".badge-revoked")).to_be_visible()
    expect(revoked.get_by_text("the customer disputes it")).to_be_visible()
    expect(live.get_by_role("listitem", name=GRANT)).to_have_count(1)
    dashboard.shot("grants-revoked")
    assert check(dashboard, 400, session=session, order=order)["decision"] == "require_approval"  # not covered now
    page.set_viewport_size(VIEWPORTS["phone"])
    fits(page, VIEWPORTS["phone"])
    dashboard.shot("grants-phone")
    revoked.get_by_role("link", name="calls it let through →").click()  # its one use, from the audit log
    rows = page.locator("ol.calls > li")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("amount=400")


def test_the_shadow_report_shows_a_difference_and_promotes(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.server.publish(GRANTS)
    shadow = str(api(dashboard, "POST", "/v1/policies", json={"text": SHADOW})["id"])
    api(dashboard, "POST", f"/v1/policies/{shadow}/shadow", json={})
    decided = [check(dashboard, 150, session="ses-shadow", order=f"S-{n}") for n in range(3)]
    assert all(d["decision"] == "allow" for d in decided)  # the shadow is never enforced
    assert check(dashboard, 30, session="ses-shadow")["decision"] == "allow"
    dashboard.login()
    page.get_by_role("link", name="Shadow").click()
    expect(page.get_by_role("combobox", name="Window")).to_have_value("24h")
    expect(page.get_by_label("Shadow for default")).to_contain_text(shadow)
    group = page.get_by_role("article", name="allow to require_approval by refund-needs-approval")
    expect(group.locator(".count")).to_have_text("3 calls")
    example = group.locator("tbody tr").first
    expect(example).to_contain_text("order_id=S-2")  # the newest first
    expect(example).to_contain_text("Refunds over $100 need a support lead")
    monitor = page.get_by_role("region", name="Monitor rules")
    expect(monitor.get_by_text("trial-watch")).to_be_visible()
    expect(monitor.locator(".count")).to_have_text("3 calls")
    dashboard.shot("shadow-report")
    page.set_viewport_size(VIEWPORTS["phone"])
    fits(page, VIEWPORTS["phone"])
    dashboard.shot("shadow-report-phone")
    page.set_viewport_size(VIEWPORTS["desktop"])

    example.get_by_role("link", name="record").click()
    assert f"call_id={decided[2]['call_id']}" in page.url
    rows = page.locator("ol.calls > li")
    expect(rows.first).to_contain_text("order_id=S-2")
    page.go_back()

    opener = page.get_by_role("button", name="Promote…")
    opener.click()  # the shared confirmation: a modal dialog, Cancel first, Escape cancels, focus goes back
    dialog = page.get_by_role("dialog", name="Promote the shadow of default?")
    expect(dialog).to_contain_text(shadow)
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(opener).to_be_focused()
    enforced = {a["scope"]: a["revision_id"] for a in api(dashboard, "GET", "/v1/policies/assignments")}
    assert enforced.get("default") != shadow  # cancelled: nothing promoted
    page.keyboard.press("Enter")
    dialog.get_by_role("button", name="Promote", exact=True).click()
    expect(page.get_by_text(f"{shadow} is enforced for default now.")).to_be_visible()
    expect(page.get_by_text("No revision decides in shadow now.")).to_be_visible()
    assert check(dashboard, 150)["decision"] == "require_approval"  # the promoted revision decides
    active = {a["scope"]: a["revision_id"] for a in api(dashboard, "GET", "/v1/policies/assignments")}
    assert active["default"] == shadow


def test_clear_a_shadow_and_decide_a_revision_in_shadow_from_its_page(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.server.publish(GRANTS)
    shadow = str(api(dashboard, "POST", "/v1/policies", json={"text": SHADOW})["id"])
    dashboard.login()
    page.goto(dashboard.url(f"#/policies/{shadow}"))
    form = page.get_by_role("form", name="Decide in shadow")
    form.get_by_role("combobox").select_option("agent")
    form.get_by_label("agent name").fill("refunds")
    form.get_by_role("button", name="Decide in shadow").click()
    expect(page.get_by_text("Deciding in shadow for agent:refunds now")).to_be_visible()
    assert check(dashboard, 150)["decision"] == "allow"
    page.get_by_role("link", name="shadow report").click()
    active = page.get_by_label("Shadow for agent:refunds")
    expect(active).to_contain_text(shadow)
    expect(page.get_by_role("article", name=re.compile("allow to require_approval"))).to_be_visible()
    opener = active.get_by_role("button", name="Clear shadow…")
    opener.click()  # asks first, like every other action that changes what decides
    dialog = page.get_by_role("dialog", name="Clear the shadow of agent:refunds?")
    expect(dialog).to_contain_text(shadow)
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    expect(opener).to_be_focused()
    assert api(dashboard, "GET", "/v1/policies/shadow")["active"] != []  # cancelled: still in shadow
    opener.click()
    dialog.get_by_role("button", name="Clear shadow", exact=True).click()
    expect(page.get_by_text("No revision decides in shadow now.")).to_be_visible()
    report = api(dashboard, "GET", "/v1/policies/shadow")
    assert report["active"] == [] and report["differing"] == 1  # the record of what it decided stays


def spend(dashboard: Dashboard, session: str, usd: float) -> None:
    """An LLM call of the session costing `usd`, as a remote agent reports it."""
    event = {"id": f"evt_{uuid.uuid4().hex}", "kind": "llm.call", "session": session, "model": "gpt-x"}
    event.update(cost_nusd=int(usd * 1e9), tokens=100, at_us=time.time_ns() // 1000)  # the server's real clock
    r = httpx.post(
        f"{dashboard.server.base}/v1/events", headers={"X-API-Key": dashboard.server.agent}, json={"events": [event]}
    )
    assert r.status_code == 200 and r.json()["appended"] == 1, r.text


def test_approve_and_extend_a_spent_budget(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.server.publish(GRANTS + "budgets:\n  session: {max_cost_usd: 1, on_exceed: require_approval}\n")
    spend(dashboard, "ses-budget", 1.5)
    asked = check(dashboard, 20, session="ses-budget")
    assert asked["decision"] == "require_approval" and asked["rule_ids"] == ["budget:session"]
    dashboard.login()
    open_approval(dashboard, asked["approval_id"])
    expect(page.get_by_role("button", name="Approve and grant…")).to_have_count(0)  # a budget grants no calls
    page.get_by_role("button", name="Approve and extend…").click()
    form = page.get_by_role("form", name="Approve and extend the budget")
    submit = form.get_by_role("button", name="Approve and extend")
    expect(submit).to_be_disabled()  # by how much?
    form.get_by_label("US dollars").fill("-3")
    expect(form.get_by_text("dollars above 0, like 2.50")).to_be_visible()
    form.get_by_label("US dollars").fill("2.50")
    dashboard.shot("extend-form")
    submit.click()
    expect(page.get_by_role("status").filter(has_text="The budget is extended")).to_be_visible()
    [grant] = api(dashboard, "GET", "/v1/grants", params={"session": "ses-budget"})
    assert (grant["kind"], grant["extend_usd"], grant["granted_by"]) == ("budget", "2.5", "user:alice")
    assert check(dashboard, 20, session="ses-budget")["decision"] == "allow"
    page.get_by_role("link", name="see Grants").click()
    card = page.get_by_role("listitem", name=GRANT)
    expect(card).to_contain_text("Session budget extended")
    expect(card).to_contain_text("$2.50")
