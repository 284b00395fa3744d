"""The dashboard when things happen elsewhere: another decider, a server restart, a lost session."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import expect

from .conftest import Dashboard


def test_a_decision_made_elsewhere_shows_at_once_and_leaves_nothing_to_click(dashboard: Dashboard) -> None:
    page = dashboard.page
    agent = dashboard.agent(450)
    dashboard.login()
    page.get_by_role("link", name=re.compile("issue_refund by refunds")).click()
    detail = page.get_by_role("region", name="Approval")
    expect(detail.get_by_role("button", name="Approve", exact=True)).to_be_visible()
    approval = page.url.rsplit("/", 1)[1]
    server = dashboard.server
    decided = httpx.post(
        f"{server.base}/v1/approvals/{approval}/deny",
        headers={"X-API-Key": server.approver},
        json={"note": "decided in Slack"},
    )
    assert decided.status_code == 200
    expect(detail.locator(".badge-denied").first).to_be_visible()  # no reload
    expect(detail.get_by_text("decided in Slack")).to_be_visible()
    expect(detail.get_by_role("button", name="Approve", exact=True)).to_have_count(0)
    expect(page.get_by_text("Nothing is waiting for a decision.")).to_be_visible()
    assert dashboard.outcome(agent)["outcome"] == "denied"


def test_the_inbox_survives_a_server_restart_and_loses_nothing(dashboard: Dashboard) -> None:
    page = dashboard.page
    agent = dashboard.agent(380)
    dashboard.login()
    item = page.get_by_role("link", name=re.compile("issue_refund by refunds"))
    expect(item).to_be_visible()
    dashboard.server.kill()  # a crash, not a clean stop
    expect(page.get_by_text("reconnecting…")).to_be_visible()
    dashboard.shot("inbox-server-down")
    dashboard.server.start()
    expect(page.get_by_text("live", exact=True)).to_be_visible(timeout=15_000)  # EventSource reconnects
    expect(item).to_be_visible()  # the pending approval is still there
    item.click()
    page.get_by_role("button", name="Approve", exact=True).click()
    assert dashboard.outcome(agent) == {"outcome": "ran", "result": "refund of $380.00 for A-1003 issued"}


def test_an_ended_session_returns_to_the_sign_in_page(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.login()
    page.evaluate("fetch('/v1/logout', {method: 'POST'})")  # as if it expired, or was ended elsewhere
    # The inbox's own stream may notice first and take the navigation away, so no link is
    # clicked: the next page's first request is what must find the session gone.
    page.evaluate("location.hash = '#/audit'")
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("the username or password is wrong")
