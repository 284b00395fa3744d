"""Make the README's dashboard screenshots (docs/images/dashboard-*.png) from `clearance demo`.

    .venv/bin/python -m tests.e2e.dashboard_screenshots [DIR]

Starts the demo on a store of its own (its live agent asks for approvals, spends, and carries on
when one is approved; its amounts drawn from a fixed seed), signs in, approves the $355.08 refund
the agent waits for edited to $150 with a note, and photographs the inbox, an approval at phone
width, the decisions history, the audit log as calls, a session's replay and the costs. Needs
Playwright and Chromium (`make browser`).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

from .._chromium import CHROMIUM, CHROMIUM_ARGS
from ..conftest import CLI, REPO
from ..server.conftest import _free_port, wait_ready

OUT = REPO / "docs" / "images"
PASSWORD = "demo-password-1"
# The live agents' amounts, drawn from this seed: the support agent's first refund asks $355.08.
SEED = "14147"
AMOUNT = "355.08"
NOTE = "150 now: the rest once the courier confirms the loss"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 812}


def _shoot(page: Page, out: Path, name: str) -> None:
    page.wait_for_timeout(400)  # let a redraw that follows the data finish before the picture
    page.screenshot(path=out / f"dashboard-{name}.png")
    print(out / f"dashboard-{name}.png")


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        demo = subprocess.Popen(
            [*CLI, "demo", "--database", f"{tmp}/demo.db", "--port", str(port), "--password", PASSWORD],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "src"), "_CLEARANCE_DEMO_SEED": SEED},
        )
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(demo.stdout or []), daemon=True).start()
        try:
            wait_ready(base, demo, lambda: "".join(lines), timeout=60)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
                page = browser.new_context(viewport=DESKTOP).new_page()
                page.goto(base + "/")
                page.get_by_label("Username").fill("demo")
                page.get_by_label("Password").fill(PASSWORD)
                page.get_by_role("button", name="Sign in").click()
                refund = page.get_by_role("link", name=re.compile("issue_refund")).first
                expect(refund).to_be_visible(timeout=30_000)
                _shoot(page, out, "inbox")
                refund.click()
                expect(page).to_have_url(re.compile(r"#/approvals/apr_"))
                approved = page.url
                detail = page.get_by_role("region", name="Approval", exact=True)
                expect(detail).to_contain_text(AMOUNT)  # the seeded live agent's first refund
                # approved with an edit and a note: the amount cut to 150
                detail.get_by_role("button", name="Edit arguments…").click()
                form = detail.get_by_role("form", name="Edit arguments")
                form.get_by_label("amount").fill("150")
                form.get_by_label("Note for the agent (optional)").fill(NOTE)
                form.get_by_role("button", name=re.compile("Review changes")).click()
                with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/approve")):
                    detail.get_by_role("button", name="Confirm and approve").click()
                page.goto(approved)  # the inbox moved on to the next approval
                expect(page.get_by_role("region", name="Approval").locator(".badge-executed").first).to_be_visible(
                    timeout=20_000
                )
                phone = browser.new_context(viewport=PHONE, device_scale_factor=2).new_page()
                phone.context.add_cookies(page.context.cookies())
                phone.goto(base + "/#/approvals")
                expect(phone.get_by_role("link", name=re.compile("issue_refund")).first).to_be_visible(timeout=30_000)
                phone.get_by_role("link", name=re.compile("issue_refund")).first.click()
                expect(phone.get_by_role("button", name="Approve", exact=True)).to_be_visible()
                _shoot(phone, out, "approval-phone")
                for name, fragment, ready in (
                    ("decisions", "#/decisions", "main li, main tr"),
                    ("audit", "#/audit", "ol.calls > li"),
                    ("costs", "#/costs", "canvas, figure"),
                ):
                    page.goto(base + "/" + fragment)
                    expect(page.locator(ready).first).to_be_visible(timeout=30_000)
                    _shoot(page, out, name)
                page.goto(base + "/#/sessions")
                # the support agent's session: a model call, the refund's approval wait, the refund
                page.locator("main tr", has_text="support-bot").locator("a").first.click()
                expect(page.locator("main svg").first).to_be_visible(timeout=30_000)
                _shoot(page, out, "replay")
                browser.close()
        finally:
            demo.terminate()
            demo.wait(10)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else OUT)
