"""`clearance demo` as a newcomer meets it: a living dashboard, an approval, the agent carries on."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time

from playwright.sync_api import Browser, expect

from ..conftest import CLI, REPO
from ..server.conftest import _free_port, wait_ready
from .conftest import SCREENSHOTS


def test_the_demo_lets_a_newcomer_approve_a_waiting_call(browser: Browser, tmp_path: object) -> None:
    port = _free_port()
    demo = subprocess.Popen(
        [*CLI, "demo", "--database", f"{tmp_path}/demo.db", "--port", str(port), "--password", "demo-password-1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    lines: list[str] = []
    assert demo.stdout is not None
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or []), daemon=True)
    reader.start()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        wait_ready(f"http://127.0.0.1:{port}", demo, lambda: "".join(lines), timeout=60)
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_label("Username").fill("demo")
        page.get_by_label("Password").fill("demo-password-1")
        page.get_by_role("button", name="Sign in").click()
        refund = page.get_by_role("link", name=re.compile("issue_refund by support-bot"))
        expect(refund).to_be_visible(timeout=30_000)  # the live agent's refund, waiting for us
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=SCREENSHOTS / "demo--inbox.png", full_page=True)
        refund.click()
        expect(page).to_have_url(re.compile(r"#/approvals/apr_"))
        approved = page.url
        with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/approve")) as answer:
            page.get_by_role("button", name="Approve", exact=True).click()
        assert answer.value.ok, answer.value.text()
        # The inbox opens the next approval after a decision (the demo's other agents ask too), once
        # the answer is read: wait for that (going back before it raced it once), then come back to
        # this one to watch its agent run it.
        expect(page.locator(".last-decided")).to_contain_text("Approved issue_refund")
        page.goto(approved)
        detail = page.get_by_role("region", name="Approval")
        expect(detail.locator(".badge-executed").first).to_be_visible(timeout=20_000)  # the agent ran it
        expect(detail.get_by_text(re.compile(r"refund of \$\d+\.\d\d for A-\d+ issued"))).to_be_visible()
        page.screenshot(path=SCREENSHOTS / "demo--approved.png", full_page=True)
        page.get_by_role("link", name="Sessions").click()
        expect(page.locator("table.events tbody tr")).not_to_have_count(0)
        page.screenshot(path=SCREENSHOTS / "demo--sessions.png", full_page=True)
        page.get_by_role("link", name="Costs").click()
        expect(page.get_by_role("figure", name="Cost by model")).to_contain_text("gpt-4o-mini")
        expect(page.get_by_role("figure", name=re.compile(r"^Spend per (hour|day) by model$"))).to_contain_text(
            "gpt-4o-mini"
        )  # the chart's legend
        page.screenshot(path=SCREENSHOTS / "demo--costs.png", full_page=True)
        deadline = time.monotonic() + 20
        while not any(re.search(r"support-bot: issue_refund -> refund of", x) for x in lines):
            assert time.monotonic() < deadline, "".join(lines)  # and says so in the terminal
            time.sleep(0.1)
    finally:
        context.close()
        demo.send_signal(signal.SIGINT)
        demo.wait(30)
        reader.join(5)
        demo.stdout.close()
    assert demo.returncode == 0, "".join(lines)
