"""Browser tests: Playwright driving Debian's Chromium, headless, against a real `clearance serve`.

Chromium comes from the Debian package (`make test` installs it when missing), never from
Playwright's own download. Every page a test visits is saved as a screenshot under
`artifacts/screenshots/` (not committed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clearance._store import Database
from clearance._store import _users as users

from .._chromium import CHROMIUM, CHROMIUM_ARGS
from ..conftest import IN_CI, REPO
from ..server.conftest import Server, _free_port

pytest.importorskip("playwright", reason='the browser tests need Playwright: pip install -e ".[dev]"')
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright  # noqa: E402

SCREENSHOTS = REPO / "artifacts" / "screenshots"
PASSWORD = "correct horse battery staple"
STATIC = REPO / "src" / "clearance" / "server" / "_static" / "index.html"
POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    params: {order_id: string, amount: number, reason: string}
    rules:
      - id: refund-needs-approval
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval: {timeout: 10m, on_timeout: deny}
      - id: refund-cap
        when: args.amount > 5000
        effect: block
        reason: Refunds over $5000 are never made by the bot
budgets:
  session: {max_cost_usd: 2}
"""


def _need(condition: bool, why: str) -> None:
    if not condition:
        if IN_CI:
            pytest.fail(why)
        pytest.skip(why)


# Module scope: Playwright's sync API runs an event loop in this thread while it is open, which
# would break a later test's asyncio.run().
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    _need(os.path.exists(CHROMIUM), f"no Chromium at {CHROMIUM}: apt-get install chromium (make test does)")
    _need(STATIC.exists(), "the dashboard is not built: make dashboard")
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS,
    )
    yield browser
    browser.close()


class Dashboard:
    """A real server with a policy, a signed-in-able admin, and a browser page on it."""

    def __init__(self, server: Server, page: Page, tmp: Path, name: str) -> None:
        self.server, self.page, self.tmp, self.name = server, page, tmp, name
        self.agents: list[subprocess.Popen[str]] = []
        self.console_errors: list[str] = []
        # A 401 before signing in is expected and logged by Chromium; anything else (a CSP
        # violation, a script error) fails the test.
        page.on(
            "console",
            lambda m: (
                m.type == "error" and "Failed to load resource" not in m.text and self.console_errors.append(m.text)
            ),
        )
        page.on("pageerror", lambda e: self.console_errors.append(str(e)))

    def url(self, fragment: str = "") -> str:
        return f"{self.server.base}/{fragment}"

    def login(self, username: str = "alice", password: str = PASSWORD) -> None:
        self.page.goto(self.url())
        self.page.get_by_label("Username").fill(username)
        self.page.get_by_label("Password").fill(password)
        self.shot("sign-in")
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.get_by_role("link", name="Approvals")).to_be_visible()

    def shot(self, label: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=SCREENSHOTS / f"{self.name}--{label}.png", full_page=True)

    def agent(self, amount: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).parent / "agent.py"),
                self.server.base,
                self.server.agent,
                str(self.tmp / f"spool{len(self.agents)}.db"),
                str(amount),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )
        self.agents.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert json.loads(line or "{}").get("outcome") == "started", proc.stderr.read() if proc.stderr else ""
        return proc

    @staticmethod
    def outcome(proc: subprocess.Popen[str], timeout: float = 30) -> dict[str, Any]:
        out, err = proc.communicate(timeout=timeout)
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        assert lines, err
        return dict(lines[-1])


@pytest.fixture
def dashboard(browser: Browser, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Dashboard]:
    db = tmp_path / "dash.db"
    server = Server(db, _free_port(), tmp_path / "server.log")
    store = Database(str(db))
    users.create(store, "alice", PASSWORD, ["admin", "approver"], by="test")
    users.create(store, "bob", PASSWORD, ["approver"], by="test")
    store.close()
    server.start()
    server.publish(POLICY)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(10_000)
    expect.set_options(timeout=10_000)
    board = Dashboard(server, page, tmp_path, re.sub(r"[^A-Za-z0-9_-]", "_", request.node.name))
    try:
        yield board
        assert not board.console_errors, board.console_errors  # CSP violations land here too
    finally:
        for proc in board.agents:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        context.close()
        server.stop()
