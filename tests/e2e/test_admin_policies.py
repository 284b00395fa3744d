"""Policies and Admin in a real browser: rollback only when there is something to roll back to,
confirmed in an accessible dialog; policy problems in plain words at their line, column and key
path; roles chosen from the roles that exist; Disable and Revoke confirmed; both pages at 375 px."""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import Page, expect

from ._a11y import contrast, unnamed
from .conftest import POLICY, Dashboard
from .test_shell_a11y import SETTLED, go

LEADS = POLICY.replace("on_timeout: deny}", "on_timeout: deny, approvers: [role:support-lead]}")
# A range of malformed policies, each with where the editor must say the problem is and what it says.
MALFORMED = [
    ("version: 1\ntools:\n  t:\n    rules: 5\n", "line 4, column 12 · tools.t.rules", "'rules' should be a list"),
    ("version: 1\ntools:\n  t:\n    rulez: []\n", "line 4, column 5 · tools.t.rulez", "did you mean 'rules'?"),
    (
        "version: 1\ntools:\n  t:\n    rules:\n      - id: r\n        when: args.x + 'a' > 3\n        effect: block\n",
        "line 6, column 28 · tools.t.rules[0].when",
        "'>' cannot compare text with a whole number",
    ),
    (
        "version: 1\ntools:\n  t:\n    rules:\n      - id: r\n        effect: require_approval\n"
        "        approval: {timeout: 5 minutes}\n",
        "line 7, column 29 · tools.t.rules[0].approval.timeout",
        "is not a duration; write it like 30s, 15m, 2h or 1d",
    ),
    ("version: 1\ntools:\n\tt: {}\n", "line 3, column 1", "a tab indents this line; YAML indents with spaces only"),
    (
        "version: 1\ndefault: allow\ndefault: block\n",
        "line 3, column 1",
        "appears twice in one mapping (first at line 2)",
    ),
    ("version: 1\nx: " + "[" * 400 + "]" * 400 + "\n", "line 2, column", "nests more than 32 levels deep"),
    ("version: 1\n# " + "x" * (520 * 1024) + "\n", "", "at most 524,288 are accepted"),
]


def admin_api(dashboard: Dashboard, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(
        method, f"{dashboard.server.base}{path}", headers={"X-API-Key": dashboard.server.admin}, timeout=30, **kw
    )


WIDE = """() => [...document.querySelectorAll("body *")]
  .filter((e) => e.getBoundingClientRect().right > 376)
  .slice(0, 8)
  .map((e) => `${e.tagName.toLowerCase()}.${e.className} ${Math.round(e.getBoundingClientRect().right)}`)"""


def fits(page: Page) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{page.url}: {width} px wide at a 375 px viewport: {page.evaluate(WIDE)}"


def test_roll_back_is_disabled_without_an_earlier_revision_and_confirmed_with_one(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.login()
    go(page, "#/policies")
    first = admin_api(dashboard, "GET", "/v1/policies/assignments").json()[0]["revision_id"]
    active = page.locator("table.events").first
    roll = active.get_by_role("button", name="Roll back")
    expect(roll).to_be_disabled()
    expect(roll).to_have_accessible_description("no earlier revision was active for default")
    expect(active.get_by_text("no earlier revision was active for default")).to_be_visible()
    dashboard.shot("policies-rollback-disabled")

    second = dashboard.server.publish(POLICY.replace("args.amount > 200", "args.amount > 100"))
    page.reload()
    page.wait_for_function(SETTLED)
    expect(roll).to_be_enabled()
    roll.focus()
    page.keyboard.press("Enter")  # by keyboard
    dialog = page.get_by_role("dialog", name="Roll back default?")
    expect(dialog).to_be_visible()
    expect(dialog).to_have_accessible_description(re.compile(f"{first}, the revision active before"))
    expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()  # the safe choice first
    assert not contrast(page) and not unnamed(page)
    dashboard.shot("policies-rollback-confirm")
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(roll).to_be_focused()  # focus returns to what opened it
    assert admin_api(dashboard, "GET", "/v1/policies/assignments").json()[0]["revision_id"] == second

    roll.click()
    page.keyboard.press("Tab")  # focus stays inside the dialog: Cancel → Roll back to …
    confirm = dialog.get_by_role("button", name=f"Roll back to {first}")
    expect(confirm).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("status").filter(has_text="rolled back")).to_have_text(f"default rolled back to {first}.")
    expect(active).to_contain_text(first)
    assert admin_api(dashboard, "GET", "/v1/policies/assignments").json()[0]["revision_id"] == first


def test_policy_problems_are_plain_and_located_in_the_editor(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.login()
    go(page, "#/policies/new")
    editor = page.locator(".cm-content")
    status = page.locator(".validation")
    for n, (text, where, says) in enumerate(MALFORMED):
        editor.focus()
        page.keyboard.press("Control+a")
        page.keyboard.press("Delete")
        expect(status).to_contain_text("the policy is empty")  # the last verdict is gone before the next
        page.keyboard.insert_text(text)
        problem = status.locator(".problems li").first
        expect(problem).to_contain_text(says, timeout=20_000)
        expect(problem).to_contain_text(where)
        assert not re.search(r"input should|valid tuple|overload|<EOF>|Syntax error", status.inner_text())
        expect(page.get_by_role("button", name="Save revision")).to_be_disabled()
        if where:  # marked in the text itself, with the same position and path
            expect(page.locator(".cm-lintRange-error").first).to_be_visible()
            page.keyboard.press("Control+Shift+M")  # the editor's list of its marks, by keyboard
            marks = page.locator(".cm-panel-lint")
            expect(marks).to_contain_text(says)
            expect(marks).to_contain_text(where)
            page.keyboard.press("Escape")
        dashboard.shot(f"policy-problem-{n}")
    assert not contrast(page) and not unnamed(page)


def test_roles_are_chosen_from_the_roles_that_exist(dashboard: Dashboard) -> None:
    dashboard.server.publish(LEADS)  # names role:support-lead
    page = dashboard.page
    dashboard.login()
    go(page, "#/admin")
    form = page.get_by_role("form", name="Add a person")
    roles = form.get_by_role("group", name="Roles")
    expect(roles.get_by_role("checkbox")).to_have_count(3)  # approver, admin, support-lead: no free text
    expect(roles.get_by_role("checkbox", name="approver")).to_be_checked()
    expect(roles).to_contain_text("an approver group the active policy names (role:support-lead)")
    form.get_by_label("Username").fill("carol")
    form.get_by_label("Password (12+ characters)").fill("x" * 12)
    roles.get_by_role("checkbox", name="support-lead").check()
    form.get_by_role("button", name="Add person").click()
    carol = page.locator("tr", has_text="carol")
    expect(carol).to_contain_text("approver, support-lead")
    people = {u["username"]: u for u in admin_api(dashboard, "GET", "/v1/users").json()}
    assert people["carol"]["roles"] == ["approver", "support-lead"]

    page.get_by_role("button", name="Change roles of bob").click()
    edit = page.get_by_role("group", name="Roles of bob")
    expect(edit.get_by_role("checkbox", name="approver")).to_be_checked()
    edit.get_by_role("checkbox", name="support-lead").check()
    page.get_by_role("button", name="Save roles").click()
    expect(page.locator("tr", has_text="bob")).to_contain_text("approver, support-lead")
    people = {u["username"]: u for u in admin_api(dashboard, "GET", "/v1/users").json()}
    assert people["bob"]["roles"] == ["approver", "support-lead"]
    assert not contrast(page) and not unnamed(page)


def test_disable_and_revoke_ask_first(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.login()
    go(page, "#/admin")
    disable = page.get_by_role("button", name="Disable bob")
    disable.click()
    dialog = page.get_by_role("dialog", name="Disable bob?")
    expect(dialog).to_contain_text("signed out everywhere at once")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    people = {u["username"]: u for u in admin_api(dashboard, "GET", "/v1/users").json()}
    assert people["bob"]["disabled_at_us"] is None  # cancelled: nothing changed
    disable.click()
    dialog.get_by_role("button", name="Disable", exact=True).click()
    expect(page.get_by_role("button", name="Enable bob")).to_be_visible()
    people = {u["username"]: u for u in admin_api(dashboard, "GET", "/v1/users").json()}
    assert people["bob"]["disabled_at_us"] is not None

    key = admin_api(dashboard, "POST", "/v1/keys", json={"name": "billing-bot", "scopes": ["agent"], "agent": "b"})
    assert key.status_code == 201
    page.reload()
    page.wait_for_function(SETTLED)
    page.get_by_role("button", name="Revoke billing-bot").click()
    revoke = page.get_by_role("dialog", name="Revoke the key billing-bot?")
    expect(revoke).to_contain_text("stops working at once")
    dashboard.shot("admin-revoke-confirm")
    revoke.get_by_role("button", name="Revoke key").click()
    expect(page.locator("tr", has_text="billing-bot")).to_contain_text("revoked")
    assert httpx.get(f"{dashboard.server.base}/v1/me", headers={"X-API-Key": key.json()["secret"]}).status_code == 401


def test_admin_and_policies_fit_a_phone(dashboard: Dashboard) -> None:
    rev = dashboard.server.publish(LEADS)
    admin_api(dashboard, "POST", "/v1/keys", json={"name": "a-key-with-a-long-name-" + "x" * 40, "scopes": ["agent"]})
    page = dashboard.page
    page.set_viewport_size({"width": 375, "height": 812})
    dashboard.login()
    for route in ("#/admin", "#/policies", "#/policies/new", f"#/policies/{rev}"):
        go(page, route)
        fits(page)
        dashboard.shot("phone-" + route.strip("#/").replace("/", "-"))
    go(page, "#/admin")
    page.get_by_role("button", name="Change roles of bob").click()
    fits(page)
    page.get_by_role("button", name="Disable bob").click()
    expect(page.get_by_role("dialog", name="Disable bob?")).to_be_visible()
    fits(page)
    dashboard.shot("phone-admin-confirm")
