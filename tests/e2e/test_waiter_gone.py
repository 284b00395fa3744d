"""The inbox says when the agent waiting for an approval is gone, before and after approving it."""

from __future__ import annotations

import re
import signal
import time

import httpx
from playwright.sync_api import expect

from clearance._store import Database
from clearance._store import _approval_waiters as waiters
from clearance._store import _approvals as approvals

from .._wait import until
from .conftest import Dashboard


def test_a_killed_agents_approval_shows_waiter_gone_in_the_list_and_the_detail(dashboard: Dashboard) -> None:
    page = dashboard.page
    agent = dashboard.agent(850)  # a remote agent whose long poll is its waiter's heartbeat
    store = Database(str(dashboard.server.db))
    try:
        until(lambda: any(a.waiter_seen_at_us for a in approvals.listing(store)), "the agent's heartbeat")
        [a] = approvals.listing(store)
        agent.send_signal(signal.SIGKILL)
        agent.communicate(timeout=10)
        ready = f"{dashboard.server.base}/readyz"
        until(lambda: httpx.get(ready).json()["long_polls"] == "0", "the server letting the dead agent's poll go")
        # The server runs on the real clock: the grace is crossed by dating its last heartbeat back.
        seen = int((time.time() - waiters.GRACE_SECONDS - 1) * 1e6)
        with store.write() as cur:
            dated = store.sql("UPDATE approvals SET waiter_seen_at_us = :s WHERE id = :id")
            cur.execute(dated, {"s": seen, "id": a.id})
    finally:
        store.close()
    dashboard.login()
    item = page.get_by_role("link", name=re.compile("issue_refund by refunds"))
    expect(item.locator(".badge-waiter_gone")).to_have_text("waiter gone")
    item.click()
    detail = page.get_by_role("region", name="Approval", exact=True)
    expect(detail.locator("header .badge-waiter_gone")).to_be_visible()
    expect(detail.get_by_role("alert")).to_contain_text("Nothing can run the call")
    dashboard.shot("approval-waiter-gone")
    page.get_by_role("button", name="Approve", exact=True).click()
    expect(detail.locator(".badge-approved").first).to_be_visible()
    expect(detail.locator("header .badge-waiter_gone")).to_be_visible()  # approving did not make it run
    expect(detail.get_by_text("Waiting for the agent to run it…")).to_have_count(0)
    dashboard.shot("approval-waiter-gone-approved")
