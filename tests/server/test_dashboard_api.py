"""The API the dashboard stands on: its page and headers, the approvals stream, audit record
detail and export, draft validation, test against history, budgets, and the admin tests."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

import clearance
from clearance._store import Database
from clearance._store import _users as users
from clearance.server import ServerSettings, create_app

from ..conftest import IN_CI, REPO
from .conftest import Server, _free_port

PASSWORD = "a long enough password"
POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: big-refund
        when: args.amount > 200
        effect: require_approval
        reason: big
budgets:
  session: {max_cost_usd: 1}
redact:
  pay: [/card]
"""


def publish(client: TestClient, admin: str, text: str) -> str:
    rev = client.post("/v1/policies", headers={"X-API-Key": admin}, json={"text": text}).json()["id"]
    assert client.post(f"/v1/policies/{rev}/activate", headers={"X-API-Key": admin}, json={}).status_code == 200
    return str(rev)


def check(client: TestClient, agent: str, tool: str, session: str = "s1", **args: Any) -> dict[str, Any]:
    r = client.post("/v1/check", headers={"X-API-Key": agent}, json={"tool": tool, "args": args, "session_id": session})
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.fixture
def keys(make_key: Any) -> dict[str, str]:
    return {
        "admin": make_key("admin", agent=None),
        "approver": make_key("approver", agent=None),
        "agent": make_key("agent"),
    }


def test_the_page_is_served_with_a_strict_content_security_policy(client: TestClient) -> None:
    index = REPO / "src" / "clearance" / "server" / "_static" / "index.html"
    if not index.exists():
        if IN_CI:
            pytest.fail("the dashboard was not built")
        pytest.skip("the dashboard is not built: make dashboard")
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-frame-options"] == "DENY" and page.headers["x-content-type-options"] == "nosniff"
    asset = page.text.split('src="', 1)[1].split('"', 1)[0]
    served = client.get(asset)
    assert served.status_code == 200 and "immutable" in served.headers["cache-control"]
    assert "style-src 'self';" in served.headers["content-security-policy"]
    nonce = page.text.split('name="csp-nonce" content="', 1)[1].split('"', 1)[0]
    assert (
        f"style-src 'self' 'nonce-{nonce}'" in csp and nonce not in client.get("/").headers["content-security-policy"]
    )


def test_an_unbuilt_dashboard_says_how_to_build_it(tmp_path: Path) -> None:
    from clearance.server import _dashboard

    app = create_app(ServerSettings(database_url=str(tmp_path / "x.db")))
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", "") not in ("/", "/assets")]
    _dashboard.install(app, tmp_path / "nothing")
    with TestClient(app) as c:
        r = c.get("/")
    assert r.status_code == 503 and "make dashboard" in r.text


def test_the_session_endpoint_gives_a_reloaded_page_its_csrf_token(client: TestClient, server_db: str) -> None:
    assert client.get("/v1/session").status_code == 401
    db = Database(server_db)
    users.create(db, "alice", PASSWORD, ["approver"], by="test")
    db.close()
    signed = client.post("/v1/login", json={"username": "alice", "password": PASSWORD}).json()
    again = client.get("/v1/session").json()
    assert again == {"username": "alice", "roles": ["approver"], "csrf_token": signed["csrf_token"], "trace_url": None}
    # a person without the admin role reaches no admin endpoint, with or without the token
    headers = {"X-CSRF-Token": signed["csrf_token"]}
    assert client.post("/v1/policies/validate", headers=headers, json={"text": POLICY}).status_code == 403
    assert client.get("/v1/admin/integrations").status_code == 403
    assert client.post("/v1/admin/webhooks/test", headers=headers, json={"url": "http://127.0.0.1/"}).status_code == 403


def test_the_record_detail_rechecks_the_chain(client: TestClient, keys: dict[str, str], server_db: str) -> None:
    publish(client, keys["admin"], POLICY)
    check(client, keys["agent"], "issue_refund", amount=10)
    events = client.get("/v1/events", headers={"X-API-Key": keys["admin"]}, params={"kind": "tool_call.decided"})
    seq = events.json()["events"][0]["seq"]
    detail = client.get(f"/v1/events/{seq}", headers={"X-API-Key": keys["approver"]}).json()
    assert detail["chain"]["verified"] is True and detail["chain"]["head_seq"] >= seq
    assert detail["event"]["args"] == {"amount": 10}
    with sqlite3.connect(server_db) as raw:  # somebody edits the stored amount
        raw.execute("UPDATE events SET body = replace(body, '\"amount\":10', '\"amount\":1') WHERE seq = ?", (seq,))
    tampered = client.get(f"/v1/events/{seq}", headers={"X-API-Key": keys["approver"]}).json()
    assert tampered["chain"]["verified"] is False and "changed" in tampered["chain"]["problem"]
    assert client.get("/v1/events/999999", headers={"X-API-Key": keys["admin"]}).status_code == 404
    for out_of_range in ("0", str(2**63), "-1", "x"):
        assert client.get(f"/v1/events/{out_of_range}", headers={"X-API-Key": keys["admin"]}).status_code == 422


def test_agent_keys_read_only_their_own_records(client: TestClient, keys: dict[str, str], make_key: Any) -> None:
    publish(client, keys["admin"], POLICY)
    check(client, keys["agent"], "issue_refund", amount=10)
    other = make_key("agent", agent="other-bot")
    seq = client.get("/v1/events", headers={"X-API-Key": keys["agent"]}).json()["events"][0]["seq"]
    assert client.get(f"/v1/events/{seq}", headers={"X-API-Key": other}).status_code == 404
    export = client.get("/v1/events/export", headers={"X-API-Key": other}, params={"agent": "bot"})
    assert export.status_code == 403
    mine = client.get("/v1/events/export", headers={"X-API-Key": other}).text.splitlines()
    assert {json.loads(x)["agent"] for x in mine} == {"other-bot"}


def test_exports_follow_the_filter_and_defuse_spreadsheet_formulas(client: TestClient, keys: dict[str, str]) -> None:
    publish(client, keys["admin"], POLICY)
    for n in range(5):
        check(client, keys["agent"], "issue_refund", amount=n, note='=HYPERLINK("http://evil")')
    check(client, keys["agent"], "send_email", to="a@b.c")
    admin = {"X-API-Key": keys["admin"]}
    jsonl = client.get("/v1/events/export", headers=admin, params={"tool": "issue_refund", "format": "jsonl"})
    assert jsonl.headers["content-disposition"] == 'attachment; filename="clearance-audit.jsonl"'
    lines = [json.loads(x) for x in jsonl.text.splitlines()]
    assert len(lines) == 5 and {x["tool"] for x in lines} == {"issue_refund"}
    assert [x["seq"] for x in lines] == sorted((x["seq"] for x in lines), reverse=True)
    table = list(
        csv.DictReader(
            io.StringIO(
                client.get("/v1/events/export", headers=admin, params={"format": "csv", "tool": "issue_refund"}).text
            )
        )
    )
    assert len(table) == 5 and table[0]["kind"] == "tool_call.decided"
    assert json.loads(table[0]["args"])["note"].startswith("=HYPERLINK")  # JSON cells start with {
    big = client.get("/v1/events/export", headers=admin, params={"format": "csv", "q": "HYPERLINK"}).text
    assert "=HYPERLINK" in big and all(not row[9].startswith("=") for row in csv.reader(io.StringIO(big)))
    assert client.get("/v1/events/export", headers=admin, params={"format": "xml"}).status_code == 422


def test_csv_cells_that_would_run_as_formulas_are_quoted() -> None:
    from clearance._export import csv_cell as _csv_cell

    assert _csv_cell("=1+1") == "'=1+1" and _csv_cell("@SUM(A1)") == "'@SUM(A1)" and _csv_cell("-2") == "'-2"
    assert _csv_cell("plain") == "plain" and _csv_cell(None) == "" and _csv_cell({"a": 1}) == '{"a": 1}'


def test_drafts_validate_with_located_problems(client: TestClient, keys: dict[str, str]) -> None:
    admin = {"X-API-Key": keys["admin"]}
    ok = client.post("/v1/policies/validate", headers=admin, json={"text": POLICY}).json()
    assert ok["valid"] is True and ok["revision"].startswith("rev_") and ok["problems"] == []
    broken = POLICY.replace("effect: require_approval", "effect: maybe")
    bad = client.post("/v1/policies/validate", headers=admin, json={"text": broken}).json()
    assert bad["valid"] is False
    assert any(p["line"] == 8 for p in bad["problems"]), bad
    cel = POLICY.replace("args.amount > 200", "args.amount >")
    assert client.post("/v1/policies/validate", headers=admin, json={"text": cel}).json()["problems"][0]["line"] == 7
    assert client.get("/v1/policies", headers=admin).json() == []  # nothing was stored
    assert client.post("/v1/policies/validate", headers=admin, json={"text": ""}).status_code == 422


def test_a_draft_is_tested_against_recorded_calls(client: TestClient, keys: dict[str, str]) -> None:
    publish(client, keys["admin"], POLICY)
    for amount in (10, 150, 300):
        check(client, keys["agent"], "issue_refund", amount=amount)
    check(client, keys["agent"], "pay", card="4242", amount=5)
    pay = "tools:\n  pay:\n    rules:\n      - id: no-pay\n        when: args.amount > 1\n        effect: block\n"
    stricter = POLICY.replace("args.amount > 200", "args.amount > 100").replace("tools:\n", pay)
    admin = {"X-API-Key": keys["admin"]}
    report = client.post("/v1/policies/test", headers=admin, json={"text": stricter, "last": 100}).json()
    assert report["checked"] == 4 and report["changed"] == 2
    assert report["transitions"] == {"allow → require_approval": 1, "allow → block": 1}
    rows = {r["tool"]: r for r in report["rows"]}
    assert rows["issue_refund"]["args"] == {"amount": 150} and rows["issue_refund"]["draft_rule_ids"] == ["big-refund"]
    assert "redacted" in rows["pay"]["uncertain"]  # the card was not stored, so say so
    everything = client.post(
        "/v1/policies/test", headers=admin, json={"text": stricter, "last": 2, "only_changed": False}
    )
    assert everything.json()["checked"] == 2 and len(everything.json()["rows"]) == 2
    invalid = client.post("/v1/policies/test", headers=admin, json={"text": "version: 1\ndefault: perhaps\n"})
    assert invalid.status_code == 422 and invalid.json()["error"]["details"][0]["location"].startswith("policy.yaml:2")
    assert (
        client.post("/v1/policies/test", headers={"X-API-Key": keys["approver"]}, json={"text": POLICY}).status_code
        == 403
    )


def test_budgets_show_what_each_session_spent(client: TestClient, keys: dict[str, str]) -> None:
    publish(client, keys["admin"], POLICY)
    agent = {"X-API-Key": keys["agent"]}
    for session, tokens in (("cheap", 1000), ("dear", 400_000)):
        usage = {"model": "gpt-4o", "prompt_tokens": tokens, "completion_tokens": 100, "session_id": session}
        assert client.post("/token-usage", headers=agent, json=usage).status_code == 200
    found = client.get("/v1/budgets", headers={"X-API-Key": keys["approver"]}).json()
    by_session = {b["subject"]: b for b in found}
    assert set(by_session) == {"cheap", "dear"} and found[0]["subject"] == "dear"  # most used first
    assert by_session["dear"]["max_cost_usd"] == "1" and by_session["dear"]["used"] >= 1.0
    assert 0 < by_session["cheap"]["used"] < 0.1 and by_session["cheap"]["tokens"] == 1100


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204 if self.path == "/hooks/ok" else 500)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    http = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=http.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{http.server_port}/hooks/", got
    http.shutdown()
    http.server_close()


def test_admins_send_a_signed_test_webhook(tmp_path: Path, make_key: Any, receiver: Any) -> None:
    prefix, got = receiver
    settings = ServerSettings(
        database_url=str(tmp_path / "w.db"), webhook_secret="s3cret-s3cret", webhook_allowed=prefix
    )
    with TestClient(create_app(settings)) as c:
        db = Database(str(tmp_path / "w.db"))
        from clearance._store import _keys

        _, admin = _keys.create(db, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")
        db.close()
        h = {"X-API-Key": admin}
        state = c.get("/v1/admin/integrations", headers=h).json()
        assert state["webhooks"] == {"secret_set": True, "allowed": [prefix]}
        assert not any(channel["configured"] for channel in state["channels"])
        assert "s3cret" not in json.dumps(state)
        sent = c.post("/v1/admin/webhooks/test", headers=h, json={"url": prefix + "ok"}).json()
        assert sent["ok"] is True and sent["status_code"] == 204
        headers, body = got[-1]
        outcome = clearance.handle_webhook(body, headers, secret="s3cret-s3cret")
        assert outcome.outcome == "test"
        failed = c.post("/v1/admin/webhooks/test", headers=h, json={"url": prefix + "broken"}).json()
        assert failed == {"ok": False, "detail": "HTTP 500", "status_code": 500, "duration_ms": failed["duration_ms"]}
        outside = c.post("/v1/admin/webhooks/test", headers=h, json={"url": "http://127.0.0.1:1/elsewhere"})
        assert outside.status_code == 422
        assert c.post("/v1/admin/slack/test", headers=h).status_code == 409  # not configured


def test_the_stream_sends_the_pending_list_at_once_and_at_every_change(tmp_path: Path) -> None:
    server = Server(tmp_path / "s.db", _free_port(), tmp_path / "s.log")
    server.start()
    try:
        server.publish(POLICY)
        frames: list[list[dict[str, Any]]] = []
        with httpx.stream(
            "GET", f"{server.base}/v1/approvals/stream", headers={"X-API-Key": server.approver}, timeout=10
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = stream.iter_lines()
            started = 0.0
            for line in lines:
                if not line.startswith("data: "):
                    continue
                frames.append(json.loads(line[6:]))
                if len(frames) == 1:
                    started = time.monotonic()
                    r = httpx.post(
                        f"{server.base}/v1/check",
                        headers={"X-API-Key": server.agent},
                        json={"tool": "issue_refund", "args": {"amount": 900}, "approval_mode": "async"},
                    )
                    assert r.json()["decision"] == "require_approval"
                elif len(frames) == 2:
                    waited = time.monotonic() - started
                    approval = frames[1][0]["id"]
                    assert (
                        httpx.post(
                            f"{server.base}/v1/approvals/{approval}/approve", headers={"X-API-Key": server.approver}
                        ).status_code
                        == 200
                    )
                else:
                    break
        assert frames[0] == [] and frames[1][0]["tool"] == "issue_refund" and frames[2] == []
        assert waited < 0.5  # pushed by the decision itself, not found by a re-check a second later
        own = httpx.get(f"{server.base}/v1/approvals/stream", headers={"X-API-Key": "nonsense"})
        assert own.status_code == 401
    finally:
        server.stop()
