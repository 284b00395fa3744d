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


def test_approvals_cancelled_because_their_agent_went_away_show_once_in_the_history(dashboard: Dashboard) -> None:
    """Two real agents killed while they wait; one approval approved by alice (no note), one left pending.

    At their expiry the server's sweep closes both (nothing can run them): the history says who and
    why once each, and the note stays empty, as nobody left one.
    """
    page = dashboard.page
    approved_agent, pending_agent = dashboard.agent(850), dashboard.agent(900)
    store = Database(str(dashboard.server.db))
    try:
        until(lambda: sum(1 for a in approvals.listing(store) if a.waiter_seen_at_us) == 2, "both agents' heartbeats")
        ids = {a.args["amount"]: a.id for a in approvals.listing(store)}
        for agent in (approved_agent, pending_agent):
            agent.send_signal(signal.SIGKILL)
            agent.communicate(timeout=10)
        ready = f"{dashboard.server.base}/readyz"
        until(lambda: httpx.get(ready).json()["long_polls"] == "0", "the server letting the dead agents' polls go")
        seen = int((time.time() - waiters.GRACE_SECONDS - 1) * 1e6)
        with store.write() as cur:
            cur.execute(store.sql("UPDATE approvals SET waiter_seen_at_us = :s"), {"s": seen})
        dashboard.login()
        page.locator(f'ul.items a[data-id="{ids[850]}"]').click()
        page.get_by_role("button", name="Approve", exact=True).click()  # no note
        expect(page.locator(".last-decided")).to_contain_text("Approved issue_refund")  # the next one opens
        assert approvals.get(store, ids[850]).status == "approved"
        # The server runs on the real clock: their expiry is brought forward; its sweep closes them.
        with store.write() as cur:
            cur.execute(store.sql("UPDATE approvals SET expires_at_us = :now"), {"now": int(time.time() * 1e6)})
        until(
            lambda: {approvals.get(store, i).status for i in ids.values()} == {"cancelled"},
            "the sweep closing both",
        )
    finally:
        store.close()

    r = httpx.get(
        f"{dashboard.server.base}/v1/decisions",
        headers={"X-API-Key": dashboard.server.admin},
        params={"outcome": "cancelled"},
    )
    assert r.status_code == 200, r.text
    by_id = {d["approval_id"]: d for d in r.json()["decisions"]}
    assert set(by_id) == set(ids.values())
    for amount, who in ((850, "user:alice"), (900, "system")):
        d = by_id[ids[amount]]
        assert (d["outcome"], d["status"], d["decided_by"], d["note"]) == ("cancelled", "cancelled", who, None)
        assert d["error"].startswith("waiter gone: the process waiting for this approval stopped at ")
        assert d["error"].endswith("; nothing can run the call")
        assert d["reason"] == "Refunds over $200 need a support lead"  # the rule's, as for every decision

    page.goto(dashboard.url("#/decisions"))
    items = page.locator("article.decision")
    expect(items).to_have_count(2)
    undecided, approved = items.nth(0), items.nth(1)  # newest decision first: alice decided before the sweep
    expect(approved.locator(".decision-who")).to_contain_text(
        re.compile(r"^approved by alice, then cancelled: waiter gone: .*; nothing can run the call")
    )
    expect(undecided.locator(".decision-who")).to_contain_text(
        re.compile(r"^by no one, cancelled: waiter gone: .*; nothing can run the call")
    )
    for article in (approved, undecided):
        expect(article.locator(".badge-cancelled")).to_have_count(1)
        expect(article.locator("blockquote.decision-note")).to_have_count(0)  # no note: nobody left one
        assert (article.text_content() or "").count("waiter gone") == 1  # the reason, once
    dashboard.shot("decisions-waiter-gone")
    # A store that closed one before this release copied the reason into the note: still shown once.
    store = Database(str(dashboard.server.db))
    try:
        with store.write() as cur:
            cur.execute(store.sql("UPDATE approvals SET note = error WHERE id = :id"), {"id": ids[900]})
    finally:
        store.close()
    page.reload()
    expect(items).to_have_count(2)
    expect(undecided.locator("blockquote.decision-note")).to_have_count(0)
    assert (undecided.text_content() or "").count("waiter gone") == 1
