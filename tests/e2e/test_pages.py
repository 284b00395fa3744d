"""The audit explorer, session replay, policy editor, costs and admin pages in a real browser."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import expect

from .conftest import POLICY, Dashboard


def history(dashboard: Dashboard, session: str = "ses-e2e") -> None:
    """A session with LLM calls and allowed, blocked and approval-needing refunds."""
    base, agent = dashboard.server.base, {"X-API-Key": dashboard.server.agent}
    for n, amount in enumerate((40, 120, 6000, 90)):
        usage = {"model": "gpt-4o-mini", "prompt_tokens": 1500 + n, "completion_tokens": 90, "session_id": session}
        assert httpx.post(f"{base}/token-usage", headers=agent, json=usage).status_code == 200
        call: dict[str, Any] = {"tool": "issue_refund", "session_id": session, "approval_mode": "async"}
        call["args"] = {"order_id": f"B-{n}", "amount": amount, "reason": "late"}
        assert httpx.post(f"{base}/v1/check", headers=agent, json=call).status_code == 200
    unknown = {"model": "house-model-7", "prompt_tokens": 10, "completion_tokens": 5, "session_id": session}
    assert httpx.post(f"{base}/token-usage", headers=agent, json=unknown).status_code == 200


def test_search_the_audit_log_and_open_a_record(dashboard: Dashboard) -> None:
    history(dashboard)
    page = dashboard.page
    dashboard.login()
    page.get_by_role("link", name="Audit log").click()
    rows = page.locator("ol.calls > li")
    expect(rows.first).to_be_visible()
    page.get_by_label("Tool", exact=True).fill("issue_refund")
    page.get_by_label("Decision / status").select_option("block")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("amount=6000")
    assert "decision=block" in page.url and "tool=issue_refund" in page.url  # a search can be shared
    export = page.get_by_role("link", name="CSV")
    assert "decision=block" in (export.get_attribute("href") or "")
    dashboard.shot("audit-search")
    rows.first.get_by_role("button", name="1 step").click()
    rows.first.get_by_role("link", name=re.compile(r"^Record \d+$")).click()
    expect(page.get_by_text("verified")).to_be_visible()
    expect(page.locator("dd", has_text="Refunds over $5000 are never made by the bot")).to_be_visible()
    dashboard.shot("audit-record")
    page.go_back()
    page.get_by_label("Text in arguments").fill("B-1")
    page.get_by_label("Decision / status").select_option("")
    page.get_by_role("button", name="Search").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("order_id=B-1")


def test_replay_a_session_step_by_step(dashboard: Dashboard) -> None:
    history(dashboard)
    page = dashboard.page
    dashboard.login()
    page.get_by_role("link", name="Sessions").click()
    expect(page.get_by_role("link", name="ses-e2e")).to_be_visible()
    dashboard.shot("sessions")
    page.get_by_role("link", name="ses-e2e").click()
    expect(page.get_by_text(re.compile(r"step 1 of \d+"))).to_be_visible()
    totals = page.get_by_label("Totals so far")
    expect(totals).to_contain_text("1,590")  # the first LLM call's tokens
    page.get_by_role("button", name="Next →").click()
    expect(page.get_by_role("article", name="This step")).to_contain_text("tool_call.decided")
    page.keyboard.press("End")
    expect(totals).to_contain_text("unpriced")  # the house model has no price, and says so
    dashboard.shot("session-replay")
    page.keyboard.press("Home")
    expect(page.get_by_text(re.compile(r"step 1 of"))).to_be_visible()


def test_fix_a_policy_test_it_against_history_and_activate_it(dashboard: Dashboard) -> None:
    history(dashboard)
    page = dashboard.page
    dashboard.login()
    page.get_by_role("link", name="Policies").click()
    page.get_by_role("link", name="New draft").click()
    editor = page.locator(".cm-content")
    expect(editor).to_contain_text("refund-needs-approval")
    editor.click()
    page.keyboard.press("Control+End")
    page.keyboard.type(
        "\n  send_email:\n    rules:\n      - id: broken\n        when: args.to ==\n        effect: block\n"
    )
    status = page.get_by_role("status").filter(has_text="problem")
    expect(status).to_contain_text("line 22")
    expect(page.locator(".cm-lintRange-error").first).to_be_visible()  # marked inline, at its line
    dashboard.shot("policy-invalid")
    expect(page.get_by_role("button", name="Save revision")).to_be_disabled()
    # fix it: a stricter refund rule too, so history changes
    page.keyboard.press("Control+a")
    page.keyboard.press("Delete")
    original = httpx.get(f"{dashboard.server.base}/v1/policies", headers={"X-API-Key": dashboard.server.admin}).json()[
        0
    ]["id"]
    text = httpx.get(
        f"{dashboard.server.base}/v1/policies/{original}", headers={"X-API-Key": dashboard.server.admin}
    ).json()["text"]
    page.keyboard.insert_text(text.replace("args.amount > 200", "args.amount > 100"))
    expect(page.get_by_role("status").filter(has_text="valid")).to_be_visible()
    page.get_by_role("button", name="Test against history").click()
    report = page.get_by_role("region", name="Test against history")
    expect(report).to_contain_text("1 allow → require_approval")
    expect(report.locator("tbody tr")).to_have_count(1)
    expect(report.locator("tbody tr")).to_contain_text("amount=120")
    dashboard.shot("policy-history-test")
    page.get_by_role("button", name="Save revision").click()
    expect(page.get_by_text(re.compile("Saved as rev_"))).to_be_visible()
    page.get_by_role("button", name="Activate").click()
    expect(page.get_by_role("heading", name="Policies")).to_be_visible()
    active = page.locator("table.events").first
    expect(active).to_contain_text("default")
    expect(active).to_contain_text("user:alice")
    dashboard.shot("policies")
    decided = httpx.post(
        f"{dashboard.server.base}/v1/check",
        headers={"X-API-Key": dashboard.server.agent},
        json={"tool": "issue_refund", "args": {"order_id": "C", "amount": 150, "reason": "x"}},
    ).json()
    assert decided["decision"] == "require_approval"  # the new revision decides at once
    expect(active).not_to_contain_text(original)
    page.get_by_role("button", name="Roll back").first.click()
    page.get_by_role("dialog").get_by_role("button", name=f"Roll back to {original}").click()
    expect(active).to_contain_text(original)


def test_costs_and_admin_pages(dashboard: Dashboard) -> None:
    history(dashboard)
    page = dashboard.page
    dashboard.login()
    page.get_by_role("link", name="Costs").click()
    expect(page.get_by_role("figure", name="Cost by model")).to_contain_text("gpt-4o-mini")
    unpriced = page.locator("table.events tr", has_text="house-model-7")
    expect(unpriced).to_contain_text("unpriced")
    expect(unpriced).not_to_contain_text("$0")
    expect(page.locator("table.budgets")).to_contain_text("ses-e2e")
    dashboard.shot("costs")
    page.get_by_role("tab", name="by day").click()
    expect(page.get_by_role("figure", name="Cost by day")).to_be_visible()
    page.get_by_role("link", name="Admin").click()
    page.get_by_label("Name", exact=True).fill("billing-bot")
    page.get_by_role("textbox", name="Agent").fill("billing")
    page.get_by_role("button", name="Create key").click()
    secret = page.get_by_label("new key")
    expect(secret).to_have_value(re.compile(r"^clr_"))
    key = secret.input_value()
    assert httpx.get(f"{dashboard.server.base}/v1/me", headers={"X-API-Key": key}).json()["agent"] == "billing"
    dashboard.shot("admin")
    page.get_by_role("button", name="I have copied it").click()
    page.locator("tr", has_text="billing-bot").get_by_role("button", name="Revoke").click()
    page.get_by_role("dialog").get_by_role("button", name="Revoke key").click()
    expect(page.locator("tr", has_text="billing-bot")).to_contain_text("revoked")
    assert httpx.get(f"{dashboard.server.base}/v1/me", headers={"X-API-Key": key}).status_code == 401


def test_an_approver_sees_no_admin_pages_and_the_server_refuses_them(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.login("bob")
    expect(page.get_by_role("link", name="Policies")).to_have_count(0)
    expect(page.get_by_role("link", name="Admin")).to_have_count(0)
    # With the real CSRF token (the page's own), so only the role check can refuse.
    statuses = page.evaluate(
        """async () => {
          const {csrf_token} = await (await fetch('/v1/session')).json();
          const post = (path, body) => fetch(path, {method: 'POST', body: JSON.stringify(body),
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': csrf_token}});
          return [(await post('/v1/keys', {name: 'x', scopes: ['admin']})).status,
                  (await post('/v1/policies/validate', {text: 'version: 1'})).status,
                  (await fetch('/v1/users')).status];
        }"""
    )
    assert statuses == [403, 403, 403]
    page.goto(dashboard.url("#/admin"))
    expect(page.get_by_text("There is no page here.")).to_be_visible()
    # an approval for support leads only: bob is offered no buttons, and told why
    dashboard.server.publish(POLICY.replace("on_timeout: deny}", "on_timeout: deny, approvers: [role:support-lead]}"))
    dashboard.agent(700)
    page.goto(dashboard.url("#/approvals"))
    page.get_by_role("link", name=re.compile("issue_refund by refunds")).click()
    expect(page.get_by_text("Only role:support-lead may decide this approval.")).to_be_visible()
    expect(page.get_by_role("button", name="Approve", exact=True)).to_have_count(0)
