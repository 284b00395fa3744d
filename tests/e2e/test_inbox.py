"""The approvals inbox as an approver's daily tool (issue 17): what is at stake in each item, the
filters kept in the address, the keyboard flow, the empty pane, new approvals announced and
notified, the server going away and coming back, a phone, and keyboard-only approving.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from clearance._store import Database
from clearance._store import _keys as keys

from ._a11y import contrast, unnamed
from .conftest import Dashboard
from .test_showing_arguments import HOSTILE, no_raw_hazard

POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: refund-needs-approval
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval: {timeout: 10m, on_timeout: deny}
  send_email:
    rules:
      - id: external-mail
        when: 'args.to != "team@acme.com"'
        effect: require_approval
        reason: Mail outside acme.com needs a look
        approval: {timeout: 20m, approvers: [role:support-lead]}
  update_records:
    rules:
      - id: bulk
        when: 'args.file_name != ""'
        effect: require_approval
        reason: Bulk updates need a look
        approval: {timeout: 30m}
"""
PHONE = {"width": 375, "height": 812}


def agent_key(dashboard: Dashboard, agent: str, environment: str) -> str:
    db = Database(str(dashboard.server.db))
    try:
        return keys.create(db, name=agent, scopes=["agent"], agent=agent, environment=environment, created_by="t")[1]
    finally:
        db.close()


def ask(dashboard: Dashboard, tool: str, args: dict[str, Any], key: str | None = None, **more: Any) -> str:
    """A call that needs approval, asked without waiting (as a queued agent would): its approval id."""
    body = {"tool": tool, "args": args, "approval_mode": "async", **more}
    r = httpx.post(
        f"{dashboard.server.base}/v1/check", headers={"X-API-Key": key or dashboard.server.agent}, json=body, timeout=30
    )
    assert r.status_code == 200 and r.json()["approval_id"], r.text
    return str(r.json()["approval_id"])


def status(dashboard: Dashboard, approval_id: str) -> dict[str, Any]:
    r = httpx.get(
        f"{dashboard.server.base}/v1/approvals/{approval_id}", headers={"X-API-Key": dashboard.server.admin}, timeout=30
    )
    return dict(r.json())


def item(page: Page, approval_id: str) -> Any:
    return page.locator(f'ul.items a[data-id="{approval_id}"]')


def fits(page: Page, width: int) -> None:
    scroll = page.evaluate("document.documentElement.scrollWidth")
    assert scroll <= width, f"the page scrolls sideways at {width}px ({scroll}px)"


def test_each_item_shows_what_is_at_stake_and_alike_calls_differ(dashboard: Dashboard) -> None:
    dashboard.server.publish(POLICY)
    prod = agent_key(dashboard, "payments", "production")
    first = ask(dashboard, "issue_refund", {"order_id": "A-1", "note": "n", "amount": 850, "x": 1, "y": 2}, prod)
    twin = ask(dashboard, "issue_refund", {"order_id": "A-1", "note": "n", "amount": 850, "x": 1, "y": 2}, prod)
    mail = ask(dashboard, "send_email", {"subject": "hi", "to": "x@example.com"}, requested_by="lena")
    hostile = ask(dashboard, "update_records", {**HOSTILE, "blob": "x" * 100_000, "deep": [[[[[1]]]]]})
    page = dashboard.page
    dashboard.login()

    refund = item(page, first)
    # The argument the rule reads comes first, marked; then the others, as many as fit, and how many more.
    expect(refund.locator(".stake").first).to_have_text("amount 850")
    expect(refund.locator(".stake.read")).to_have_count(1)
    expect(refund.locator(".stakes")).to_contain_text("+1 more")
    expect(refund.locator(".badge.env")).to_have_text("production")
    expect(refund.locator(".countdown")).to_have_text(re.compile(r"^(9m|10m) left$"))
    expect(refund.locator(".item-meta")).to_contain_text(f"…{first[-6:]}")
    # Two calls alike in all they ask still read differently.
    assert refund.inner_text() != item(page, twin).inner_text()

    email = item(page, mail)
    expect(email.locator(".stake.read")).to_have_text("to x@example.com")
    expect(email.locator(".item-meta")).to_contain_text("for lena")
    expect(email.locator(".badge.env")).to_have_text("test")

    bulk = item(page, hostile)
    expect(bulk.locator(".stake.read")).to_have_text("file_name refund⟨U+202E RLO⟩txt.exe")
    expect(bulk.locator(".badge-hazard")).to_have_text("hidden characters")
    expect(bulk.locator(".stakes")).to_contain_text("+4 more")
    no_raw_hazard(page)
    assert page.locator("ul.items img").count() == 0  # the agent's <img onerror> is text
    assert contrast(page) == [] and unnamed(page) == []
    dashboard.shot("inbox-stakes")

    # Nothing selected: the empty pane says what to do.
    expect(page.locator(".detail.placeholder")).to_contain_text("Select an approval")
    expect(page.locator(".detail.placeholder")).to_contain_text("press j to open the first")


def test_the_filters_narrow_the_list_and_stay_in_the_address(dashboard: Dashboard) -> None:
    dashboard.server.publish(POLICY)
    prod = agent_key(dashboard, "payments", "production")
    refund = ask(dashboard, "issue_refund", {"amount": 900}, prod)
    mail = ask(dashboard, "send_email", {"to": "x@example.com"})  # for role:support-lead, which alice is not
    page = dashboard.page
    dashboard.login()
    expect(page.locator("ul.items a")).to_have_count(2)

    page.get_by_role("button", name="Mine to decide").click()
    expect(page).to_have_url(re.compile(r"#/approvals\?mine=1$"))
    expect(page.get_by_role("button", name="Mine to decide")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("ul.items a")).to_have_count(1)
    expect(item(page, refund)).to_be_visible()
    page.get_by_role("button", name="Mine to decide").click()
    expect(page.locator("ul.items a")).to_have_count(2)

    page.get_by_text("Filters").click()
    page.get_by_label("Environment").select_option("test")
    expect(page).to_have_url(re.compile(r"environment=test"))
    expect(page.locator("ul.items a")).to_have_count(1)
    expect(item(page, mail)).to_be_visible()
    page.reload()  # kept in the address: a reload (or a shared link) shows the same
    expect(page.locator("ul.items a")).to_have_count(1)
    expect(page.get_by_label("Environment")).to_have_value("test")
    expect(page.get_by_text("Filters (1)")).to_be_visible()

    item(page, mail).click()  # opening one keeps the filters
    expect(page).to_have_url(re.compile(rf"#/approvals/{mail}\?environment=test$"))
    expect(page.get_by_text("Only role:support-lead may decide this approval.")).to_be_visible()
    expect(page.get_by_role("button", name="Approve", exact=True)).to_have_count(0)

    page.goto(dashboard.url("#/approvals?tool=issue_refund&agent=payments"))
    expect(page.locator("ul.items a")).to_have_count(1)
    expect(item(page, refund)).to_be_visible()
    page.goto(dashboard.url("#/approvals?tool=nothing_like_it"))
    expect(page.get_by_text("Nothing waiting matches these filters.")).to_be_visible()
    dashboard.shot("inbox-filtered")


def test_the_keyboard_moves_decides_and_goes_on_to_the_next(dashboard: Dashboard) -> None:
    dashboard.server.publish(POLICY)
    ids = [ask(dashboard, "issue_refund", {"order_id": f"A-{i}", "amount": 300 + i}) for i in range(4)]
    page = dashboard.page
    dashboard.login()
    expect(page.locator("ul.items a")).to_have_count(4)

    page.keyboard.press("j")  # nothing open: j opens the first
    expect(page).to_have_url(re.compile(rf"#/approvals/{ids[0]}$"))
    expect(item(page, ids[0])).to_be_focused()
    page.keyboard.press("j")
    expect(item(page, ids[1])).to_be_focused()
    page.keyboard.press("k")
    expect(item(page, ids[0])).to_be_focused()
    expect(page.get_by_role("region", name="Approval", exact=True).get_by_role("cell", name="300")).to_be_visible()

    page.keyboard.press("a")  # approves the open one; the next opens, and the focus is on it
    expect(item(page, ids[1])).to_be_focused()
    expect(page.locator(".last-decided")).to_contain_text("Approved issue_refund by refunds")
    assert status(dashboard, ids[0])["status"] == "approved"
    expect(page.locator("[aria-live=polite].visually-hidden")).to_contain_text("The next approval is open.")

    page.keyboard.press("d")  # deny: the note takes the focus, and what is typed there is no shortcut
    note = page.get_by_label("Note for the agent (why not)")
    expect(note).to_be_focused()
    page.keyboard.type("a duplicate, see jk")
    assert status(dashboard, ids[1])["status"] == "pending"
    page.keyboard.press("Control+Enter")
    expect(item(page, ids[2])).to_be_focused()
    denied = status(dashboard, ids[1])
    assert (denied["status"], denied["note"]) == ("denied", "a duplicate, see jk")

    page.keyboard.press("e")  # edit: the first field takes the focus
    amount = page.get_by_label("amount")
    expect(page.get_by_role("form", name="Edit arguments")).to_be_visible()
    expect(page.locator("form.edit input").first).to_be_focused()
    amount.fill("250")
    page.keyboard.press("Enter")  # submits: review
    expect(page.get_by_role("button", name="Confirm and approve")).to_be_focused()
    page.keyboard.press("Enter")
    expect(item(page, ids[3])).to_be_focused()
    edited = status(dashboard, ids[2])
    assert (edited["status"], edited["edited_args"]["amount"]) == ("approved", 250)

    page.keyboard.press("d")
    expect(note).to_be_focused()
    page.keyboard.press("Escape")  # back: the focus returns to the buttons, not the page
    expect(page.get_by_role("button", name="Approve", exact=True)).to_be_focused()
    page.keyboard.press("a")  # the last: nothing opens next, the outcome takes the focus
    expect(page.locator("section.outcome")).to_be_focused()
    expect(page.get_by_text("Nothing is waiting for a decision.")).to_be_visible()
    assert status(dashboard, ids[3])["status"] == "approved"
    assert page.evaluate("document.activeElement !== document.body")


def test_keyboard_only_approve_takes_few_tabs(dashboard: Dashboard, capsys: Any) -> None:
    dashboard.server.publish(POLICY)
    first = ask(dashboard, "issue_refund", {"order_id": "A-1", "amount": 450})
    ask(dashboard, "issue_refund", {"order_id": "A-2", "amount": 460})
    page = dashboard.page
    dashboard.login()
    expect(page.locator("ul.items a")).to_have_count(2)

    def tabs_until(selector: str, most: int = 40) -> int:
        for n in range(1, most + 1):
            page.keyboard.press("Tab")
            if page.evaluate("(s) => document.activeElement?.matches(s) ?? false", selector):
                return n
        raise AssertionError(f"{selector} not reached in {most} Tabs")

    page.reload()
    expect(page.locator("ul.items a")).to_have_count(2)
    from_load = tabs_until(f'a[data-id="{first}"]')  # past the skip link, through the navigation
    page.reload()
    expect(page.locator("ul.items a")).to_have_count(2)
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    from_main = 1 + tabs_until(f'a[data-id="{first}"]')
    assert from_main <= 5, from_main  # the skip link, then Mine to decide, Notify, Filters, the list
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Approve", exact=True)).to_be_visible()
    to_approve = tabs_until("button.primary")
    assert to_approve == 1, to_approve
    expect(page.locator(":focus")).to_have_text("Approve")
    page.keyboard.press("Enter")
    expect(page.locator(".last-decided")).to_contain_text("Approved")
    assert status(dashboard, first)["status"] == "approved"

    # The inbox's own skip link: Tab, Tab, Enter reaches the list with the first approval open; `a` approves it.
    second = page.locator("ul.items a").first.get_attribute("data-id")
    page.goto(dashboard.url("#/approvals"))
    page.reload()
    expect(page.locator("ul.items a")).to_have_count(1)
    presses = 0
    for key in ("Tab", "Tab", "Enter"):
        page.keyboard.press(key)
        presses += 1
        if page.evaluate("document.activeElement?.matches('ul.items a') ?? false"):
            break
    expect(item(page, str(second))).to_be_focused()
    assert presses <= 3, presses
    expect(page.get_by_role("button", name="Approve", exact=True)).to_be_visible()
    page.keyboard.press("a")
    expect(page.get_by_text("Nothing is waiting for a decision.")).to_be_visible()
    assert status(dashboard, str(second))["status"] == "approved"
    with capsys.disabled():
        print(f"\nTabs to the first item: {from_load} through the navigation, {from_main} by the skip link;", end=" ")
        print(f"{to_approve} more to Approve; {presses} keys by the inbox's skip link, then a")


def test_the_inbox_skip_link_is_second_and_leads_to_the_list(dashboard: Dashboard) -> None:
    dashboard.server.publish(POLICY)
    page = dashboard.page
    dashboard.login()
    page.reload()
    expect(page.get_by_text("Nothing is waiting for a decision.")).to_be_visible()
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to the pending list")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["width"] > 20 and box["height"] > 10  # visible once focused
    before = page.evaluate("location.hash")
    page.keyboard.press("Enter")  # nothing listed: to the page, as the first skip link goes
    expect(page.locator("main#main")).to_be_focused()
    assert page.evaluate("location.hash") == before  # the route stays
    first = ask(dashboard, "issue_refund", {"order_id": "A-1", "amount": 450})
    expect(page.locator("ul.items a")).to_have_count(1)
    skip.focus()
    page.keyboard.press("Enter")
    expect(item(page, first)).to_be_focused()
    assert page.evaluate("location.hash").startswith(f"#/approvals/{first}")
    page.goto(dashboard.url("#/audit"))
    expect(page.get_by_role("link", name="Skip to content")).to_have_count(1)
    expect(skip).to_have_count(0)  # the inbox's alone


def test_new_approvals_are_announced_and_notified_once_turned_on(dashboard: Dashboard) -> None:
    dashboard.server.publish(POLICY)
    page = dashboard.page
    page.add_init_script(
        """(() => {
          window.__asked = 0;
          window.__notes = [];
          window.Notification = class {  // as the browser keeps it: the permission outlives a reload
            constructor(title, options) { window.__notes.push({ title, body: options.body, tag: options.tag }); }
            static get permission() { return sessionStorage.getItem('permission') ?? 'default'; }
            static requestPermission() {
              window.__asked++;
              sessionStorage.setItem('permission', 'granted');
              return Promise.resolve('granted');
            }
            close() {}
          };
        })()"""
    )
    dashboard.login()
    expect(page.get_by_text("Nothing is waiting for a decision.")).to_be_visible()
    announcer = page.locator("[aria-live=polite].visually-hidden")
    expect(announcer).to_be_attached()
    expect(announcer).to_have_text("")

    ask(dashboard, "issue_refund", {"amount": 300})
    expect(announcer).to_have_text("New approval: issue_refund by refunds in test. 1 pending.")
    assert page.evaluate("window.__asked") == 0  # never asked before the person turns it on

    toggle = page.get_by_role("button", name="Notify me of new approvals")
    toggle.click()
    expect(page.get_by_role("button", name="Notifying of new approvals")).to_have_attribute("aria-pressed", "true")
    assert page.evaluate("window.__asked") == 1
    page.evaluate("document.hasFocus = () => false")  # the person is in another window
    second = ask(dashboard, "send_email", {"to": "x@example.com"})
    expect(announcer).to_have_text("New approval: send_email by refunds in test. 2 pending.")
    page.wait_for_function("window.__notes.length === 1")
    [note] = page.evaluate("window.__notes")
    assert note == {
        "title": "New approval",
        "body": "send_email by refunds in test: Mail outside acme.com needs a look",
        "tag": second,
    }
    page.reload()  # the choice is kept
    expect(page.get_by_role("button", name="Notifying of new approvals")).to_be_visible()
    page.get_by_role("button", name="Notifying of new approvals").click()
    expect(page.get_by_role("button", name="Notify me of new approvals")).to_have_attribute("aria-pressed", "false")


def test_a_refused_notification_permission_is_said_plainly(dashboard: Dashboard) -> None:
    page = dashboard.page
    page.add_init_script(
        """(() => {
          let permission = 'default';
          window.Notification = class {
            static get permission() { return permission; }
            static requestPermission() { permission = 'denied'; return Promise.resolve(permission); }
          };
        })()"""
    )
    dashboard.login()
    page.get_by_role("button", name="Notify me of new approvals").click()
    expect(page.get_by_text("Notifications are blocked for this site in the browser's settings.")).to_be_visible()


def test_with_the_server_down_the_inbox_says_so_and_decides_nothing_until_it_is_back(dashboard: Dashboard) -> None:
    dashboard.server.publish(POLICY)
    first = ask(dashboard, "issue_refund", {"amount": 300})
    second = ask(dashboard, "issue_refund", {"amount": 400})
    page = dashboard.page
    dashboard.login()
    item(page, first).click()
    approve = page.get_by_role("button", name="Approve", exact=True)
    expect(approve).to_be_enabled()
    expect(page.locator(".offline")).to_have_count(0)

    dashboard.server.kill()  # a crash, not a clean stop
    banner = page.get_by_role("alert").filter(has_text="Not connected to the server")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("this list may be out of date")
    expect(banner.locator("time")).to_have_text(re.compile(r"\d\d:\d\d:\d\d"))
    expect(approve).to_be_disabled()
    expect(page.get_by_role("button", name="Deny…")).to_be_disabled()
    page.keyboard.press("a")  # no shortcut while disconnected
    item(page, second).click()  # another approval cannot be read now: said once, by the banner
    expect(page.get_by_text("This approval shows when the server is back.")).to_be_visible()
    expect(page.get_by_text("Loading…")).to_have_count(0)
    expect(page.locator(".detail .error")).to_have_count(0)
    assert contrast(page) == [] and unnamed(page) == []
    dashboard.shot("inbox-offline")

    dashboard.server.start()
    expect(banner).to_have_count(0, timeout=20_000)  # the stream reconnects by itself
    expect(page.get_by_text("live", exact=True)).to_be_visible()
    approve = page.get_by_role("button", name="Approve", exact=True)
    expect(approve).to_be_enabled(timeout=15_000)
    assert status(dashboard, first)["status"] == "pending"  # the "a" pressed while down did nothing
    approve.click()
    expect(page.locator(".last-decided")).to_contain_text("Approved")
    assert status(dashboard, second)["status"] == "approved"


def test_a_phone_sized_approver_decides_without_scrolling_sideways(dashboard: Dashboard) -> None:
    dashboard.server.publish(POLICY)
    long_session = "s-" + "x" * 150
    approval = ask(
        dashboard,
        "update_records",
        {**HOSTILE, "path": "/srv/" + "a" * 300, "changes": {f"k{i}": i for i in range(40)}},
        session_id=long_session,
    )
    ask(dashboard, "issue_refund", {"order_id": "A-" + "9" * 120, "amount": 300}, requested_by="someone-" + "y" * 100)
    page = dashboard.page
    page.set_viewport_size(PHONE)
    dashboard.login()
    expect(page.locator("ul.items a")).to_have_count(2)
    fits(page, PHONE["width"])
    dashboard.shot("inbox-375")

    item(page, approval).click()
    detail = page.get_by_role("region", name="Approval", exact=True)
    expect(detail).to_be_visible()
    fits(page, PHONE["width"])
    for name in ("Approve", "Deny…"):
        expect(page.get_by_role("button", name=name, exact=True)).to_be_in_viewport()
    dashboard.shot("approval-375")

    page.get_by_role("button", name="Edit arguments…").click()
    expect(page.get_by_role("form", name="Edit arguments")).to_be_visible()
    fits(page, PHONE["width"])
    page.locator("#arg-amount").fill("6")
    expect(page.get_by_role("button", name="Review changes (1)")).to_be_in_viewport()
    dashboard.shot("approval-edit-375")
    page.get_by_role("button", name="Review changes (1)").click()
    expect(page.get_by_role("button", name="Confirm and approve")).to_be_in_viewport()
    fits(page, PHONE["width"])


# Every size the list has had, as the page drew it (after each batch of changes to the document).
LIST_SIZES = """(() => {
  window.__sizes = [];
  new MutationObserver(() => {
    const n = document.querySelectorAll('ul.items li').length;
    if (n && window.__sizes[window.__sizes.length - 1] !== n) window.__sizes.push(n);
  }).observe(document, { childList: true, subtree: true });
})()"""


def test_a_long_inbox_draws_a_screenful_first_then_the_rest_in_one_go(dashboard: Dashboard) -> None:
    dashboard.server.publish(POLICY)
    ids = [ask(dashboard, "issue_refund", {"order_id": f"A-{i}", "amount": 300 + i}) for i in range(150)]
    page = dashboard.page
    dashboard.login()
    expect(page.locator("ul.items li")).to_have_count(150)
    page.add_init_script(LIST_SIZES)
    page.reload()
    expect(page.locator("ul.items li")).to_have_count(150)
    expect(page.locator(".inbox .count")).to_have_text("150")
    assert page.evaluate("window.__sizes") == [30, 150]  # a screenful, then all the rest at once (not 50 a frame)
    # nearest expiry first: all have the same timeout, so the order they were asked in
    assert page.locator("ul.items a").evaluate_all("(links) => links.map((a) => a.dataset.id)") == ids
