"""The approvals inbox with 500 pending approvals: time until the list is rendered. Prints figures.

A real `clearance serve` on SQLite and on PostgreSQL, 500 pending approvals asked through
`/v1/check` (four agents, two environments, arguments of several sizes), and Debian's Chromium
driven by Playwright, signed in as an approver. Each run opens `#/approvals` afresh and measures,
in the page, the time from the navigation's start until the list is rendered (its count says 500
and its first items are drawn; the page draws a screenful first, and the rest in one go once that
is painted), then until that frame is painted, and until all 500 items are in the page. Also printed: how
much of it came after the stream's first list arrived (the page's own work), how long the server
takes to send that first `pending` event, and how long the page takes to redraw the list when an
approval is decided elsewhere. Target: rendered within 1 s.

    .venv/bin/python bench/inbox_render.py [--approvals 500] [--runs 5] [--pg URL | --no-pg]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from playwright.sync_api import Page, sync_playwright

from clearance._store import Database
from clearance._store import _keys as keys
from clearance._store import _users as users

PG = os.environ.get("CLEARANCE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery staple"
POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: refund-needs-approval
        when: args.amount > 200 && args.currency != ""
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval: {timeout: 8h, on_timeout: deny}
  send_email:
    rules:
      - id: external-mail
        when: '!all_in(domains(args.to), ["acme.com"])'
        effect: require_approval
        reason: Mail outside acme.com needs a look
        approval: {timeout: 8h, on_timeout: deny, approvers: [role:approver]}
"""
AGENTS = (("refunds", "production"), ("refunds-eu", "production"), ("mailer", "staging"), ("ops", "test"))
# Rendered when the count says all are listed and the first item is drawn. Checked in each frame's
# callback, which notes the time then (and a task later, after that frame is painted): read after
# the wait, performance.now() would also count whatever the page does before the answer is read.
RENDERED = """(n) => {
  const count = document.querySelector('.inbox .count');
  const first = document.querySelector('ul.items li a');
  const done = count !== null && count.textContent.trim().startsWith(String(n)) && first !== null;
  if (done && window.__rendered === undefined) {
    window.__rendered = performance.now();
    setTimeout(() => { window.__painted = performance.now(); });
  }
  return done;
}"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _args(i: int) -> tuple[str, dict[str, Any]]:
    if i % 3 == 2:
        to = [f"person{i}@example.com", "team@acme.com"]
        return "send_email", {"to": to, "subject": f"Your order A-{i:05d}", "body": "Hello " * (i % 40 + 1)}
    return "issue_refund", {
        "order_id": f"A-{i:05d}",
        "amount": 200.5 + i,
        "currency": "USD",
        "reason": "customer asked " * (i % 20 + 1),
        "lines": [{"sku": f"S{j}", "qty": j} for j in range(i % 8)],
    }


@contextmanager
def serving(url: str, approvals: int) -> Iterator[tuple[str, str]]:
    """A server on `url` with `approvals` pending approvals: its base URL and an approver's key."""
    db = Database(url)
    admin = keys.create(db, name="admin", scopes=["admin"], agent=None, environment="test", created_by="bench")[1]
    agent_keys = [
        keys.create(db, name=a, scopes=["agent"], agent=a, environment=env, created_by="bench")[1] for a, env in AGENTS
    ]
    approver = keys.create(db, name="p", scopes=["approver"], agent=None, environment="test", created_by="bench")[1]
    users.create(db, "alice", PASSWORD, ["approver"], by="bench")
    db.close()
    port = _port()
    base = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "clearance.cli", "serve", "--port", str(port), "--database-url", url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        a = {"X-API-Key": admin}
        rev = httpx.post(f"{base}/v1/policies", headers=a, json={"text": POLICY}).json()["id"]
        httpx.post(f"{base}/v1/policies/{rev}/activate", headers=a, json={}).raise_for_status()
        with httpx.Client(base_url=base, timeout=30) as client:
            for i in range(approvals):
                tool, args = _args(i)
                body = {"tool": tool, "args": args, "approval_mode": "async", "session_id": f"ses-{i % 50}"}
                r = client.post("/v1/check", headers={"X-API-Key": agent_keys[i % len(agent_keys)]}, json=body)
                assert r.status_code == 200 and r.json()["approval_id"], r.text
        yield base, approver
    finally:
        proc.terminate()
        proc.wait(30)


def _stream_ms(page: Page) -> float:
    """Milliseconds until the server's stream sends its first `pending` event, asked from the page."""
    return float(
        page.evaluate(
            """() => new Promise((done) => {
              const start = performance.now();
              const source = new EventSource('/v1/approvals/stream');
              source.addEventListener('pending', () => { done(performance.now() - start); source.close(); });
            })"""
        )
    )


# When the page's stream delivers its first list (the page's own EventSource, wrapped).
FIRST_LIST = """(() => {
  const Original = window.EventSource;
  window.EventSource = class extends Original {
    constructor(url) {
      super(url);
      this.addEventListener('pending', () => { window.__listed = window.__listed ?? performance.now(); });
    }
  };
})()"""
ALL_DRAWN = "(n) => document.querySelectorAll('ul.items li').length >= n"


def measure(base: str, approver: str, approvals: int, runs: int, label: str) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
        page.set_default_timeout(60_000)
        page.goto(f"{base}/")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("link", name="Approvals").wait_for()
        page.add_init_script(FIRST_LIST)
        rendered, painted, drawing, everything, streamed = [], [], [], [], []
        for _ in range(runs):
            page.goto("about:blank")
            page.goto(f"{base}/#/approvals")
            page.wait_for_function(RENDERED, arg=approvals, polling="raf")
            page.wait_for_function("window.__painted !== undefined")
            rendered.append(float(page.evaluate("window.__rendered")))
            drawing.append(rendered[-1] - float(page.evaluate("window.__listed")))
            painted.append(float(page.evaluate("window.__painted")))
            page.wait_for_function(ALL_DRAWN, arg=approvals, polling="raf")
            everything.append(float(page.evaluate("performance.now()")))
            streamed.append(_stream_ms(page))
        # One of them is decided elsewhere while they are shown: time until the list has one fewer.
        started = float(page.evaluate("performance.now()"))
        _decide_one(base, approver)
        page.wait_for_function(RENDERED, arg=approvals - 1, polling="raf")
        update = float(page.evaluate("performance.now()")) - started
        browser.close()
    med = statistics.median
    print(
        f"{label:<11} {approvals} pending, median of {runs}: list rendered {med(rendered):.0f} ms after the navigation "
        f"started (best {min(rendered):.0f}, worst {max(rendered):.0f}; painted {med(painted):.0f} ms; "
        f"{med(drawing):.0f} ms of it after the list arrived); all {approvals} items in the page at "
        f"{med(everything):.0f} ms; the server's first stream event {med(streamed):.0f} ms after asking; "
        f"one decided elsewhere gone from the list in {update:.0f} ms"
    )


def _decide_one(base: str, approver: str) -> None:
    key = {"X-API-Key": approver}
    first = httpx.get(f"{base}/v1/approvals", headers=key, timeout=30).json()[0]["id"]
    r = httpx.post(f"{base}/v1/approvals/{first}/deny", headers=key, json={"note": "bench"}, timeout=30)
    assert r.status_code == 200, r.text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--approvals", type=int, default=500)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--pg", default=PG)
    parser.add_argument("--no-pg", action="store_true")
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        with serving(str(Path(tmp) / "inbox.db"), opts.approvals) as (base, approver):
            measure(base, approver, opts.approvals, opts.runs, "SQLite")
    if opts.no_pg:
        return
    plain = opts.pg.replace("postgresql+psycopg://", "postgresql://")
    schema = f"bench_inbox_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        try:
            sep = "&" if "?" in opts.pg else "?"
            with serving(f"{opts.pg}{sep}options=-csearch_path%3D{schema}", opts.approvals) as (base, approver):
                measure(base, approver, opts.approvals, opts.runs, "PostgreSQL")
        finally:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
