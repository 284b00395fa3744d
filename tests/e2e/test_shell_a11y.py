"""The dashboard's shell in a real browser: every page's text readable (4.5:1) and every control
named, a skip link first, focus moved to the new page, and a title per page."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
from playwright.sync_api import Page, expect

from ._a11y import contrast, unnamed
from .conftest import Dashboard
from .test_pages import history

SETTLED = """() => {
  const main = document.querySelector("main");
  return !!main && main.innerText.trim().length > 0 && !/Loading…/.test(document.body.innerText);
}"""


def pending(dashboard: Dashboard, amount: int = 300) -> None:
    """An approval waiting for a decision (the call asks and does not wait)."""
    call = {"tool": "issue_refund", "args": {"order_id": "P-1", "amount": amount, "reason": "late"}}
    r = httpx.post(
        f"{dashboard.server.base}/v1/check",
        headers={"X-API-Key": dashboard.server.agent},
        json={**call, "session_id": "ses-a11y", "approval_mode": "async"},
    )
    assert r.status_code == 200 and r.json()["decision"] == "require_approval", r.text


def go(page: Page, fragment: str) -> None:
    """Show a route the way the dashboard's own links do, and wait until it has loaded."""
    page.evaluate("(h) => { window.location.hash = h; }", fragment)
    page.wait_for_function(SETTLED)


def nav_pages(page: Page) -> list[tuple[str, str]]:
    links = page.get_by_role("navigation", name="Pages").get_by_role("link")
    expect(links.first).to_be_visible()
    return [(link.inner_text().strip(), link.get_attribute("href") or "") for link in links.all()]


def routes(page: Page) -> Iterator[str]:
    """Every page in the navigation, and up to three pages under each (a record, a revision…)."""
    for _, href in nav_pages(page):
        go(page, href)
        yield href
        under = page.locator(f'main a[href^="{href}/"]')
        deeper = list(dict.fromkeys(a.get_attribute("href") or "" for a in under.all()))
        for inner in deeper[:3]:
            go(page, inner)
            yield inner


def test_every_page_has_readable_text_and_named_controls(dashboard: Dashboard) -> None:
    history(dashboard)
    pending(dashboard)
    page = dashboard.page
    page.goto(dashboard.url())
    expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    low = {"sign-in": contrast(page)}
    nameless = {"sign-in": unnamed(page)}
    dashboard.login()
    seen = []
    for route in routes(page):
        seen.append(route)
        low[route], nameless[route] = contrast(page), unnamed(page)
        dashboard.shot("a11y-" + re.sub(r"[^A-Za-z0-9]+", "_", route))
    assert {"#/approvals", "#/audit", "#/policies", "#/admin"} <= set(seen)
    assert any(r.startswith("#/policies/new") for r in seen)  # the editor's highlighting too
    assert any(r.startswith("#/approvals/") for r in seen)  # an approval's detail
    report = [
        f"{route}: {f['ratio']}:1 {f['fg']} on {f['bg']} {f['text']!r} at {f['where']}"
        for route, fs in low.items()
        for f in fs
    ]
    report += [f"{route}: unnamed {n}" for route, ns in nameless.items() for n in ns]
    assert not report, "\n".join(report)


def test_titles_say_the_page_and_only_the_inbox_counts(dashboard: Dashboard) -> None:
    pending(dashboard)
    page = dashboard.page
    dashboard.login()
    expect(page).to_have_title(re.compile(r"^\(1\) Approvals\b"))
    for name, href in nav_pages(page):
        if href == "#/approvals":
            continue
        go(page, href)
        # The shell sets "Audit log — Clearance"; a page may set its own after it (the Decisions page
        # writes "Decisions · Clearance"), but it names that page, and the inbox's "(1)" never carries over.
        expect(page).to_have_title(re.compile(rf"^{re.escape(name)}\b[^()]* Clearance$"))
    go(page, "#/approvals")
    expect(page).to_have_title(re.compile(r"^\(1\) Approvals\b"))
    go(page, "#/audit")
    expect(page).to_have_title("Audit log — Clearance")
    go(page, "#/nowhere")
    expect(page).to_have_title("Not found — Clearance")


def test_a_skip_link_comes_first_and_focus_moves_to_the_new_page(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.login()
    go(page, "#/audit")
    page.reload()  # a fresh load: the first Tab starts from the top of the document
    page.wait_for_function(SETTLED)
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None and box["width"] > 20 and box["height"] > 10  # visible once focused
    page.keyboard.press("Enter")
    expect(page.locator("main#main")).to_be_focused()
    assert page.evaluate("location.hash") == "#/audit"  # the route stays: it only moved focus
    page.keyboard.press("Tab")  # the next stop is inside the page, not the navigation again
    assert page.evaluate("!!document.activeElement.closest('main')")

    # by keyboard alone: into the navigation, Enter on a page, and focus lands on that page's heading
    nav = page.get_by_role("navigation", name="Pages")
    nav.get_by_role("link", name="Sessions").focus()
    page.keyboard.press("Enter")
    expect(page.locator("main h1").first).to_be_focused()
    assert page.evaluate("location.hash") == "#/sessions"
    nav.get_by_role("link", name="Policies").click()
    expect(page.locator("main h1").first).to_be_focused()
    expect(page.locator("main h1").first).to_have_text("Policies")
