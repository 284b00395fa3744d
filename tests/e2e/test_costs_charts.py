"""The costs page (issue 17) in Chromium: spend over time by model and by agent drawn by uPlot with
nothing blocked by the Content-Security-Policy, hostile names shown as text with tokens, one money
precision, only the budgets in use, and a phone-width page."""

from __future__ import annotations

import re
import time
from typing import Any

from playwright.sync_api import Page, expect

from clearance._store import Database
from clearance._store import _events as events

from ._a11y import contrast, unnamed
from .conftest import Dashboard

DAY = 86_400_000_000
HOSTILE_MODEL = "gpt\u202e-lave.exe"
HOSTILE_AGENT = "bot\u200bagent"

# Every CSP violation, as the page reports it (console messages may be worded differently).
CSP_LISTENER = """
window.__csp = [];
document.addEventListener("securitypolicyviolation", (e) =>
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`));
"""


def spent(dashboard: Dashboard) -> None:
    """LLM calls on three days by two agents and three models (one unpriced, one named with a bidi
    control), and a session of tool calls only."""
    now = time.time_ns() // 1000
    rows: list[tuple[int, str, str, str, int | None]] = [  # days ago, agent, session, model, nano-dollars
        (2, "refunds", "s-1", "gpt-4o", 80_000_000),
        (2, "refunds", "s-1", "gpt-4o-mini", 5_935_000),
        (1, HOSTILE_AGENT, "s-2", HOSTILE_MODEL, 1_234_500_000),
        (0, "refunds", "s-3", "gpt-4o-mini", 100_000),
        (0, "refunds", "s-3", "house-model-7", None),
    ]
    made = []
    for days, agent, session, model, nusd in rows:
        fields: dict[str, Any] = {
            "agent": agent,
            "environment": "test",
            "session": session,
            "model": model,
            "input_tokens": 1000,
            "output_tokens": 100,
            "tokens": 1100,
            "priced": nusd is not None,
            "cost_usd": None if nusd is None else f"{nusd / 1e9:.9f}",
            "cost_nusd": nusd,
        }
        made.append(events.make_event("llm.call", now - days * DAY - 60_000_000, fields))
    tools = {"agent": "refunds", "environment": "test", "session": "tools-only", "tool": "lookup", "decision": "allow"}
    made.append(events.make_event("tool_call.decided", now, tools))
    db = Database(str(dashboard.server.db))
    with db.write() as cur:
        events.append(db, cur, made)
    db.close()


def open_costs(dashboard: Dashboard) -> Page:
    page = dashboard.page
    page.add_init_script(CSP_LISTENER)
    dashboard.login()
    page.get_by_role("link", name="Costs").click()
    expect(page.get_by_role("figure", name="Spend per day by model").locator("canvas").first).to_be_visible()
    return page


def painted(page: Page, figure: str) -> int:
    """How many pixels of the figure's chart canvas uPlot painted."""
    return int(
        page.get_by_role("figure", name=figure)
        .locator("canvas")
        .first.evaluate(
            """c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                      let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }"""
        )
    )


def test_spend_over_time_is_charted_by_model_and_by_agent(dashboard: Dashboard) -> None:
    spent(dashboard)
    page = open_costs(dashboard)
    by_model = page.get_by_role("figure", name="Spend per day by model")
    by_agent = page.get_by_role("figure", name="Spend per day by agent")
    expect(by_agent.locator("canvas").first).to_be_visible()
    assert painted(page, "Spend per day by model") > 500 and painted(page, "Spend per day by agent") > 500
    legend = by_model.locator(".spend-legend li")
    expect(legend).to_have_count(4)
    expect(legend.first).to_contain_text("⟨U+202E RLO⟩")  # most spent first, its name as text with tokens
    expect(legend.first).to_contain_text("$1.2345")
    expect(legend.filter(has_text="house-model-7")).to_contain_text("unpriced")
    expect(legend.filter(has_text="house-model-7")).not_to_contain_text("$0")
    expect(by_agent.locator(".spend-legend li", has_text="bot⟨U+200B ZWSP⟩agent")).to_contain_text("$1.2345")
    for figure in (by_model, by_agent):
        text = figure.evaluate("f => f.textContent + f.querySelector('[role=img]').getAttribute('aria-label')")
        assert "\u202e" not in text and "\u200b" not in text
    # pointing at a day shows that day's spend in the legend
    by_model.locator(".spend-plot").scroll_into_view_if_needed()
    box = by_model.locator(".spend-plot .u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2, steps=4)
    expect(by_model.locator(".spend-when")).to_have_text(re.compile(r"^\d{4}-\d\d-\d\d$"))
    expect(legend.filter(has_text="gpt-4o-mini")).to_contain_text("$0.0001")
    # the numbers as a table, for keyboards and screen readers
    by_model.get_by_text("The numbers, per day").click()
    expect(by_model.locator("tbody tr")).to_have_count(3)
    dashboard.shot("costs-charts")
    page.get_by_label("Period").select_option("24 hours")
    expect(page.get_by_role("figure", name="Spend per hour by model").locator("canvas").first).to_be_visible()
    page.get_by_label("Period").select_option("all time")
    expect(page.get_by_role("figure", name="Spend per day by agent").locator("canvas").first).to_be_visible()
    assert page.evaluate("window.__csp") == []  # uPlot draws under the dashboard's CSP, nothing blocked


def test_one_money_precision_and_only_budgets_in_use(dashboard: Dashboard) -> None:
    spent(dashboard)
    page = open_costs(dashboard)
    expect(page.locator("table.budgets")).to_be_visible()
    budgets = page.locator("table.budgets tbody tr")
    expect(budgets).to_have_count(3)  # the sessions that made LLM calls; not the one of tool calls only
    expect(page.locator("table.budgets")).not_to_contain_text("tools-only")
    expect(page.get_by_text("A session budget is in use when its session")).to_be_visible()
    limits = page.locator("table.budgets tbody td:nth-child(3)").all_inner_texts()
    assert limits and all(re.fullmatch(r"\$2\.00", t) for t in limits), limits  # caps in cents
    spends = re.findall(r"\$[\d,]+\.\d+", page.locator("main, .page").first.inner_text())
    caps = {"$2.00"}
    assert spends and all(re.fullmatch(r"\$[\d,]+\.\d{4}", s) for s in spends if s not in caps), spends
    assert contrast(page) == [] and unnamed(page) == []
    assert page.evaluate("window.__csp") == []


def test_the_costs_page_fits_a_phone(dashboard: Dashboard) -> None:
    spent(dashboard)
    page = dashboard.page
    page.set_viewport_size({"width": 375, "height": 812})
    page = open_costs(dashboard)
    expect(page.get_by_role("figure", name="Spend per day by agent").locator("canvas").first).to_be_visible()
    assert painted(page, "Spend per day by agent") > 500
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    dashboard.shot("costs-phone")
    assert page.evaluate("window.__csp") == []
