"""What runs, as a person must see it: hidden and direction-changing characters drawn as named
tokens wherever arguments are read, look-alike letters marked, a warning naming where, large
values collapsed to their size, and Approve / Deny within reach at desktop and phone size.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from clearance._visible import describe, escaped_json, hazards, visible, warning

from ..conftest import REPO
from .conftest import POLICY, SCREENSHOTS, Dashboard, _need

CASES = json.loads((REPO / "tests" / "visible_cases.json").read_text())
BULK_POLICY = POLICY.replace(
    "budgets:",
    """\
  update_records:
    rules:
      - id: bulk-needs-approval
        effect: require_approval
        reason: Bulk updates need a look
        approval: {timeout: 10m, on_timeout: deny}
budgets:""",
)
HOSTILE = {
    "file_name": "refund\u202etxt.exe",
    "to": "pay\u200bpal.com",
    "host": "p\u0430ypal.com",
    "pay\u200bpal": "a key with a zero-width space",
    "memo": '\u202eunclosed override, "amount": 5',
    "amount": 5,
}
PHONE = {"width": 375, "height": 667}


def ask(dashboard: Dashboard, args: dict[str, Any], session: str | None = None) -> str:
    """An agent's call that needs approval, asked without waiting; returns the approval's id."""
    body: dict[str, Any] = {"tool": "update_records", "args": args, "approval_mode": "async"}
    if session:
        body["session_id"] = session
    r = httpx.post(
        f"{dashboard.server.base}/v1/check", headers={"X-API-Key": dashboard.server.agent}, json=body, timeout=30
    )
    assert r.status_code == 200 and r.json()["approval_id"], r.text
    return str(r.json()["approval_id"])


def seen(dashboard: Dashboard, label: str) -> None:
    """A screenshot of the viewport alone: what a person sees without scrolling."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    dashboard.page.screenshot(path=SCREENSHOTS / f"{dashboard.name}--{label}-viewport.png")


def no_raw_hazard(page: Page) -> None:
    """No hidden or direction-changing character reaches the page's text (tokens stand for them)."""
    text: str = page.evaluate("document.body.textContent")
    left = sorted({f"U+{ord(c):04X}" for c in text if describe(c) is not None and c not in "\t\n"})
    assert left == [], left


def test_hidden_characters_are_named_wherever_arguments_are_read(dashboard: Dashboard) -> None:
    dashboard.server.publish(BULK_POLICY)
    approval = ask(dashboard, HOSTILE, session="s-hidden")
    page = dashboard.page
    dashboard.login()

    item = page.locator("ul.items a")
    expect(item.locator(".badge-hazard")).to_have_text("hidden characters")
    item.click()
    detail = page.get_by_role("region", name="Approval", exact=True)
    alert = detail.locator(".hazard-warning")
    expect(alert).to_contain_text(warning(hazards(dict(sorted(HOSTILE.items())))) or "")  # stored sorted
    for place in ("/file_name (U+202E RLO)", "/to (U+200B ZWSP)", "/host (U+0430 Cyrillic)", "the key /pay"):
        expect(alert).to_contain_text(place)
    for name, raw in HOSTILE.items():
        row = detail.locator("table.args tr", has=page.locator("th", has_text=visible(name)))
        expect(row.locator("td code.value")).to_have_text(visible(raw) if isinstance(raw, str) else json.dumps(raw))
    rlo = detail.locator("table.args .hz-bidi").first
    expect(rlo).to_have_text("⟨U+202E RLO⟩")
    expect(detail.locator("table.args .hz-mixed-script")).to_have_text("⟨U+0430 Cyrillic⟩")
    # The unclosed override stays inside its own value: the text after it reads left to right.
    expect(detail.locator("table.args td code.value").nth(4)).to_have_attribute("dir", "ltr")
    no_raw_hazard(page)
    dashboard.shot("hidden-approval")

    page.get_by_role("button", name="Edit arguments…").click()
    expect(page.locator("#arg-to")).to_have_value('"pay\\u200bpal.com"')  # exact, and seen
    expect(page.locator("#arg-file_name")).to_have_value('"refund\\u202etxt.exe"')
    no_raw_hazard(page)
    dashboard.shot("hidden-edit")
    page.locator("#arg-to").fill('"paypal.com"')
    page.get_by_role("button", name="Review changes").click()
    review = page.get_by_role("region", name="Review the edit")
    expect(review.locator("td.old")).to_have_text("pay⟨U+200B ZWSP⟩pal.com")
    expect(review.locator("td.new")).to_have_text("paypal.com")
    no_raw_hazard(page)
    dashboard.shot("hidden-review")
    page.get_by_role("button", name="Confirm and approve").click()
    expect(detail.locator(".badge-approved").first).to_be_visible()

    page.goto(dashboard.url("#/audit?tool=update_records&kind=tool_call.decided"))
    row = page.locator("ol.calls > li").first
    expect(row.locator(".badge-hazard")).to_be_visible()
    expect(row.locator(".call-detail")).to_contain_text("file_name=refund⟨U+202E RLO⟩txt.exe")
    no_raw_hazard(page)
    dashboard.shot("hidden-audit")
    seq = [e["seq"] for e in dashboard.server.events(kind="tool_call.decided") if e.get("tool") == "update_records"][0]
    page.goto(dashboard.url(f"#/audit/{seq}"))
    expect(page.locator(".hazard-warning")).to_contain_text("this record holds invisible or direction-changing")
    expect(page.locator(".hazard-warning")).to_contain_text("/args/file_name (U+202E RLO)")
    expect(page.locator("pre.json")).to_contain_text('"file_name": "refund⟨U+202E RLO⟩txt.exe"')
    expect(page.locator("pre.json")).to_contain_text('"⟨U+202E RLO⟩unclosed override, \\"amount\\": 5"')
    no_raw_hazard(page)
    dashboard.shot("hidden-record")

    page.goto(dashboard.url("#/sessions/s-hidden?step=0"))
    expect(page.locator(".step .hazard-warning")).to_contain_text("/args/to (U+200B ZWSP)")
    expect(page.locator(".step dt")).to_have_text(["Tool", "Decision", "Rules", "Approval"])  # nothing empty
    no_raw_hazard(page)
    dashboard.shot("hidden-replay")

    page.set_viewport_size(PHONE)
    page.goto(dashboard.url(f"#/approvals/{approval}"))
    expect(page.locator(".hazard-warning").first).to_be_visible()
    no_raw_hazard(page)
    dashboard.shot("hidden-approval-phone")
    seen(dashboard, "hidden-approval-phone")


def test_5000_arguments_open_at_once_with_the_decision_in_reach(dashboard: Dashboard, capsys: Any) -> None:
    dashboard.server.publish(BULK_POLICY)
    many = ask(dashboard, {f"field_{i:04d}": f"value {i}" for i in range(5000)})
    wide = ask(dashboard, {"changes": {f"k{i}": i for i in range(5000)}, "text": "x" * 700_000, "note": "x"})
    page = dashboard.page
    dashboard.login()
    figures: dict[str, float] = {}
    for size, viewport in (("desktop", {"width": 1280, "height": 900}), ("phone", PHONE)):
        page.set_viewport_size(viewport)
        page.goto(dashboard.url(f"#/approvals/{many}"))
        detail = page.get_by_role("region", name="Approval", exact=True)
        expect(detail.get_by_text("50 of 5,000 arguments shown")).to_be_visible()
        for name in ("Approve", "Deny…", "Edit arguments…"):
            expect(page.get_by_role("button", name=name, exact=True)).to_be_in_viewport()
        dashboard.shot(f"5000-arguments-{size}")
        seen(dashboard, f"5000-arguments-{size}")
        # Timed in the page, from the click to the first frame after the form is drawn; reported,
        # never asserted (tests do not assert on timing).
        figures[size] = page.evaluate(OPEN_EDIT_FORM)
        form = page.get_by_role("form", name="Edit arguments")
        expect(form.locator(".field")).to_have_count(50)
        expect(page.get_by_role("button", name="Review changes")).to_be_in_viewport()
        expect(page.get_by_role("button", name="Cancel")).to_be_in_viewport()
        page.get_by_label("Find an argument").fill("field_4999")
        page.locator("#arg-field_4999").fill("changed")
        page.get_by_role("button", name="Review changes").click()
        review = page.get_by_role("region", name="Review the edit")
        expect(review.locator("tbody tr")).to_have_count(1)
        expect(review.locator("td.new")).to_have_text("changed")
        expect(page.get_by_role("button", name="Confirm and approve")).to_be_in_viewport()
        dashboard.shot(f"5000-arguments-review-{size}")
        seen(dashboard, f"5000-arguments-review-{size}")

        page.goto(dashboard.url(f"#/approvals/{wide}"))
        detail = page.get_by_role("region", name="Approval", exact=True)
        keys = detail.get_by_role("button", name="{5,000 keys}")
        expect(keys).to_be_visible()
        # The record keeps a long string's first 4,096 characters (marked): collapsed, with its size.
        expect(detail.get_by_role("button", name=re.compile(r"^show all \(4\.1 kB string\)$"))).to_be_visible()
        for name in ("Approve", "Deny…"):
            expect(page.get_by_role("button", name=name, exact=True)).to_be_in_viewport()
        dashboard.shot(f"5000-keys-{size}")
        seen(dashboard, f"5000-keys-{size}")
        keys.click()
        expect(detail.locator(".tree li")).to_have_count(100)
        expect(page.get_by_role("button", name="Approve", exact=True)).to_be_in_viewport()
        dashboard.shot(f"5000-keys-open-{size}")
        seen(dashboard, f"5000-keys-open-{size}")
    with capsys.disabled():
        print(
            f"\nedit form of 5,000 arguments opened in {figures['desktop']:.0f} ms (desktop), "
            f"{figures['phone']:.0f} ms (375x667)"
        )
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    (SCREENSHOTS.parent / "edit-form-5000.json").write_text(json.dumps(figures))


OPEN_EDIT_FORM = """async () => {
  const button = [...document.querySelectorAll("button")].find((b) => b.textContent === "Edit arguments…");
  const started = performance.now();
  button.click();
  await new Promise((resolve) => {
    const drawn = () =>
      document.querySelector("form.edit")
        ? requestAnimationFrame(() => setTimeout(resolve))
        : requestAnimationFrame(drawn);
    drawn();
  });
  return performance.now() - started;
}"""


@pytest.fixture(scope="module")
def visible_ts() -> str:
    """dashboard/src/visible.ts as plain JavaScript, by the TypeScript compiler the dashboard builds with."""
    node = shutil.which("node")
    _need(node is not None and (REPO / "dashboard" / "node_modules" / "typescript").exists(), "make dashboard")
    assert node is not None
    script = (
        "const ts = require('typescript'); const fs = require('fs');"
        "process.stdout.write(ts.transpileModule(fs.readFileSync('src/visible.ts', 'utf8'),"
        " {compilerOptions: {target: ts.ScriptTarget.ES2022, module: ts.ModuleKind.CommonJS}}).outputText);"
    )
    done = subprocess.run([node, "-e", script], cwd=REPO / "dashboard", capture_output=True, text=True, check=True)
    return done.stdout


def test_the_dashboard_twin_answers_as_python_does(browser: Browser, visible_ts: str) -> None:
    """visible.ts, run by Chromium, against _visible.py: the shared cases and every code point."""
    page = browser.new_page()
    try:
        answers = page.evaluate(
            """([source, cases]) => {
              const exports = {};
              new Function("exports", source)(exports);
              const { visible, hazards, warning, describe, escapedJson } = exports;
              const described = [];
              for (let cp = 0; cp < 0x110000; cp++) {
                const d = describe(cp);
                if (d) described.push([cp, d[0], d[1]]);
              }
              return {
                strings: cases.strings.map((c) => visible(c.text)),
                escaped: cases.strings.map((c) => escapedJson(c.text)),
                values: cases.values.map((c) => {
                  const found = hazards(c.value);
                  return {
                    hazards: found.map((h) => ({
                      path: h.path, in_key: h.inKey, kind: h.token.kind,
                      token: `⟨U+${h.token.cp.toString(16).toUpperCase().padStart(4, "0")} ${h.token.name}⟩`,
                    })),
                    warning: warning(found),
                  };
                }),
                described,
              };
            }""",
            [visible_ts, CASES],
        )
    finally:
        page.close()
    assert answers["strings"] == [c["visible"] for c in CASES["strings"]]
    assert answers["escaped"] == [escaped_json(c["text"]) for c in CASES["strings"]]
    assert answers["values"] == [{"hazards": c["hazards"], "warning": c["warning"]} for c in CASES["values"]]
    python = [[cp, *d] for cp in range(0x110000) if (d := describe(chr(cp))) is not None]
    assert answers["described"] == python
