"""Slack, against a local fake of the Slack Web API and interaction payloads signed in the test."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store import _channels as messages
from clearance._store import _keys as keys
from clearance._store import _users as users
from clearance._store._events import EventFilter, query
from clearance.server import ServerSettings, create_app
from clearance.server.channels import deliver

from .._wait import until

SIGNING_SECRET = "slack-signing-secret-for-tests"
POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval: {timeout: 30m, approvers: [role:support-lead]}
"""
HOSTILE = "<!channel> <https://evil.example|click me> *bold*"


class FakeSlack:
    """The Slack Web API methods Clearance calls, recording every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.posted: list[dict[str, Any]] = []  # the messages Slack accepted
        self.fail = False
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                raw = self.rfile.read(int(self.headers.get("content-length", 0)))
                if self.headers.get("content-type", "").startswith("application/json"):
                    body = json.loads(raw or b"{}")
                else:
                    body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
                method = self.path.rsplit("/", 1)[-1]
                fake.calls.append((method, body))
                answer: dict[str, Any] = {"ok": not fake.fail}
                if fake.fail:
                    answer["error"] = "service_unavailable"
                elif method == "chat.postMessage":
                    answer.update(channel=body["channel"], ts=f"1700000000.{len(fake.calls):06d}")
                    fake.posted.append(body)
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def called(self, method: str) -> list[dict[str, Any]]:
        return [body for name, body in self.calls if name == method]

    def wait_for(self, method: str, count: int = 1, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.called(method)) < count:
            assert time.monotonic() < deadline, f"Slack's {method} was called {len(self.called(method))} times"
            time.sleep(0.02)
        return self.called(method)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    fake = FakeSlack()
    db_path = str(tmp_path / "slack.db")
    db = Database(db_path)
    ids = {
        "admin": keys.create(db, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")[1],
        "agent": keys.create(db, name="g", scopes=["agent"], agent="refunds", environment="test", created_by="t")[1],
    }
    for name, roles, slack_id in (("lena", ["approver", "support-lead"], "U0LENA"), ("pia", ["approver"], "U0PIA")):
        users.create(db, name, "correct horse battery", roles, by="t")
        users.update(db, name, slack_user_id=slack_id, by="t")
    db.close()
    settings = ServerSettings(
        database_url=db_path,
        slack_bot_token="xoxb-test",
        slack_signing_secret=SIGNING_SECRET,
        slack_channel="C0APPROVALS",
        slack_api_url=fake.url,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        admin = {"X-API-Key": ids["admin"]}
        rev = client.post("/v1/policies", headers=admin, json={"text": POLICY}).json()["id"]
        client.post(f"/v1/policies/{rev}/activate", headers=admin, json={})
        yield {"client": client, "fake": fake, "db": db_path, "keys": ids}
    fake.close()


def signed(payload: dict[str, Any], *, secret: str = SIGNING_SECRET, at: int | None = None) -> dict[str, Any]:
    body = urlencode({"payload": json.dumps(payload)})
    ts = str(int(time.time()) if at is None else at)
    mac = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "content": body,
        "headers": {
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": ts,
            "x-slack-signature": f"v0={mac}",
        },
    }


def click(user: str, action: str, approval_id: str) -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user},
        "channel": {"id": "C0APPROVALS"},
        "trigger_id": "trigger-1",
        "actions": [{"action_id": action, "value": approval_id}],
    }


def submit(user: str, approval_id: str, *, decision: str = "approve", note: str = "", **args: str) -> dict[str, Any]:
    values: dict[str, Any] = {
        "decision": {"value": {"selected_option": {"value": decision}}},
        "note": {"value": {"value": note or None}},
    }
    values.update({f"arg:{name}": {"value": {"value": value}} for name, value in args.items()})
    return {
        "type": "view_submission",
        "user": {"id": user},
        "view": {"private_metadata": approval_id, "state": {"values": values}},
    }


def pending(s: dict[str, Any], **args: Any) -> str:
    r = s["client"].post(
        "/v1/check",
        headers={"X-API-Key": s["keys"]["agent"]},
        json={"tool": "issue_refund", "args": {"order_id": HOSTILE, "amount": 850, **args}, "session_id": "ses-1"},
    )
    return str(r.json()["approval_id"])


def status(s: dict[str, Any], approval_id: str) -> approvals.Approval:
    db = Database(s["db"])
    try:
        return approvals.get(db, approval_id)
    finally:
        db.close()


def posted_message(s: dict[str, Any], approval_id: str) -> messages.Message | None:
    db = Database(s["db"])
    try:
        return messages.message(db, approval_id, "slack")
    finally:
        db.close()


def test_a_pending_approval_is_posted_with_its_arguments_as_plain_text(slack: dict[str, Any]) -> None:
    approval_id = pending(slack)
    [message] = slack["fake"].wait_for("chat.postMessage")
    assert message["channel"] == "C0APPROVALS" and approval_id in message["text"]
    text = json.dumps(message["blocks"])
    assert HOSTILE.replace('"', '\\"') in text  # shown as it is…
    for block in message["blocks"]:  # …and only ever as plain_text, which Slack does not parse
        for field in [block.get("text"), *(block.get("fields") or []), *(block.get("elements") or [])]:
            if isinstance(field, dict) and field.get("type") in ("mrkdwn", "plain_text"):
                assert field["type"] == "plain_text"
    fields = " ".join(f["text"] for b in message["blocks"] for f in b.get("fields", []))
    for expected in ("Agent: refunds", "Session: ses-1", "Rule: big", "Refunds over $200", "Expires:", "amount: 850"):
        assert expected in fields
    buttons = [e["action_id"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert buttons == ["approve", "deny", "edit"]
    until(lambda: (m := posted_message(slack, approval_id)) is not None and m.shown is not None)  # drawn
    db = Database(slack["db"])
    try:  # another pass, here or on a replica, has nothing to send
        assert deliver(db, slack["client"].app.state.channels["slack"]) == 0
    finally:
        db.close()
    assert len(slack["fake"].called("chat.postMessage")) == 1  # posted once, not on every pass


def test_clicks_are_verified_mapped_and_checked_then_the_message_shows_the_outcome(slack: dict[str, Any]) -> None:
    client, fake = slack["client"], slack["fake"]
    approval_id = pending(slack)
    fake.wait_for("chat.postMessage")
    url = "/v1/slack/interactions"
    assert client.post(url, **signed(click("U0LENA", "approve", approval_id), secret="forged")).status_code == 401
    stale = signed(click("U0LENA", "approve", approval_id), at=int(time.time()) - 600)
    assert client.post(url, **stale).status_code == 401
    assert (
        client.post(url, content="payload=x", headers={"content-type": "application/x-www-form-urlencoded"}).status_code
        == 401
    )
    assert client.post(url, **signed(click("U0NOBODY", "approve", approval_id))).status_code == 200
    assert client.post(url, **signed(click("U0PIA", "approve", approval_id))).status_code == 200  # not a lead
    told = fake.wait_for("chat.postEphemeral", 2)
    assert told[0]["user"] == "U0NOBODY" and "not a Clearance user" in told[0]["text"]
    assert told[1]["user"] == "U0PIA" and "only role:support-lead" in told[1]["text"]
    assert status(slack, approval_id).status == "pending"
    db = Database(slack["db"])
    refused = [e.body["by"] for e in query(db, EventFilter(kind="approval.refused"))]
    db.close()
    assert refused == ["slack:U0NOBODY", "user:pia"]
    assert client.post(url, **signed(click("U0LENA", "deny", approval_id))).status_code == 200
    final = status(slack, approval_id)
    assert final.status == "denied" and final.decided_by == "user:lena"
    [update] = fake.wait_for("chat.update")
    posted = posted_message(slack, approval_id)
    assert posted is not None and posted.ref is not None
    assert update["ts"] == posted.ref["ts"] and update["blocks"][0]["text"]["text"] == "Denied: issue_refund"
    assert "denied by user:lena" in json.dumps(update["blocks"])
    assert not any(b["type"] == "actions" for b in update["blocks"])  # no buttons on a decided approval


def test_the_modal_edits_arguments_and_leaves_a_note(slack: dict[str, Any]) -> None:
    client, fake = slack["client"], slack["fake"]
    approval_id = pending(slack)
    fake.wait_for("chat.postMessage")
    url = "/v1/slack/interactions"
    assert client.post(url, **signed(click("U0LENA", "edit", approval_id))).status_code == 200
    [opened] = fake.wait_for("views.open")
    view = opened["view"]
    assert view["private_metadata"] == approval_id and view["callback_id"] == "clearance_decide"
    inputs = {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}
    assert inputs["arg:amount"]["element"]["initial_value"] == "850"
    bad = client.post(url, **signed(submit("U0LENA", approval_id, amount="lots")))
    assert bad.json() == {
        "response_action": "errors",
        "errors": {"arg:amount": 'amount: expected a number, got "lots"'},
    }
    assert status(slack, approval_id).status == "pending"
    ok = client.post(url, **signed(submit("U0LENA", approval_id, amount="300", note="partial refund")))
    assert ok.status_code == 200 and ok.content == b""
    final = status(slack, approval_id)
    assert final.status == "approved" and final.note == "partial refund"
    assert final.edited_args == {"order_id": HOSTILE, "amount": 300}
    [update] = fake.wait_for("chat.update")
    assert "Arguments (edited)" in json.dumps(update["blocks"]) and "amount: 300" in json.dumps(update["blocks"])


def test_a_decision_made_elsewhere_redraws_the_message(slack: dict[str, Any]) -> None:
    from clearance import _decisions

    approval_id = pending(slack)
    slack["fake"].wait_for("chat.postMessage")
    db = Database(slack["db"])
    _decisions.decide(db, approval_id, approve=True, by=_decisions.Decider("cli-user", trusted=True))
    db.close()
    [update] = slack["fake"].wait_for("chat.update")  # a decision from the CLI reaches Slack too
    assert update["blocks"][0]["text"]["text"] == "Approved: issue_refund"


def test_a_slack_outage_is_retried_counted_and_posted_once(slack: dict[str, Any]) -> None:
    client, fake, admin = slack["client"], slack["fake"], {"X-API-Key": slack["keys"]["admin"]}
    fake.fail = True
    approval_id = pending(slack)
    fake.wait_for("chat.postMessage")

    def state() -> dict[str, Any]:
        [found] = [
            c for c in client.get("/v1/admin/integrations", headers=admin).json()["channels"] if c["name"] == "slack"
        ]
        return dict(found)

    until(lambda: state()["failures"] >= 1)
    failed = state()
    assert failed["last_error"] == "ChannelError: Slack refused it: service_unavailable" and failed["messages"] == 0
    posted = posted_message(slack, approval_id)
    assert posted is not None and posted.ref is None  # nothing posted yet, and the claim let go
    fake.fail = False
    until(lambda: (m := posted_message(slack, approval_id)) is not None and m.ref is not None)  # retried with backoff
    assert len(fake.posted) == 1 and approval_id in fake.posted[0]["text"]
    assert state()["messages"] == 1


def test_admins_send_a_test_message_and_see_what_slack_said(slack: dict[str, Any]) -> None:
    client, fake, admin = slack["client"], slack["fake"], {"X-API-Key": slack["keys"]["admin"]}
    [state] = [
        c for c in client.get("/v1/admin/integrations", headers=admin).json()["channels"] if c["name"] == "slack"
    ]
    assert state["configured"] is True and state["settings"] == {
        "channel": "C0APPROVALS",
        "api_url": fake.url,
        "bot_token_set": True,
        "signing_secret_set": True,
    }
    sent = client.post("/v1/admin/slack/test", headers=admin).json()
    assert sent["ok"] is True and sent["detail"] == "posted to C0APPROVALS"
    test_message = [m for m in fake.called("chat.postMessage") if "test message" in m.get("text", "")]
    assert test_message and test_message[0]["channel"] == "C0APPROVALS"
    fake.fail = True
    refused = client.post("/v1/admin/slack/test", headers=admin).json()
    assert refused["ok"] is False and refused["detail"] == "Slack refused it: service_unavailable"
    agent = {"X-API-Key": slack["keys"]["agent"]}
    assert client.post("/v1/admin/slack/test", headers=agent).status_code == 403
