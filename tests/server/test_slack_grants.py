"""Slack's edit modal grants similar calls: only what the rule permits is offered, a refusal keeps the modal open."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _keys as keys
from clearance._store import _users as users
from clearance._store._events import EventFilter, query
from clearance._wire._grants import GrantLimitsOut
from clearance.server import ServerSettings, create_app
from clearance.server.channels.slack import grant_options

from .test_slack import FakeSlack, click, signed, status, submit

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval:
          timeout: 30m
          approvers: [role:support-lead]
          grants: {scopes: [session, agent], max_duration: 8h, max_calls: 20, max_total: {amount: 500}}
  send_email:
    rules:
      - {id: mail, effect: require_approval, approval: {timeout: 30m}}
"""
URL = "/v1/slack/interactions"


@pytest.fixture
def slack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    fake = FakeSlack()
    db_path = str(tmp_path / "slack.db")
    db = Database(db_path)
    ids = {
        "admin": keys.create(db, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")[1],
        "agent": keys.create(db, name="g", scopes=["agent"], agent="refunds", environment="test", created_by="t")[1],
    }
    users.create(db, "lena", "correct horse battery", ["approver", "support-lead"], by="t")
    users.update(db, "lena", slack_user_id="U0LENA", by="t")
    db.close()
    settings = ServerSettings(
        database_url=db_path,
        slack_bot_token="xoxb-test",
        slack_signing_secret="slack-signing-secret-for-tests",
        slack_channel="C0APPROVALS",
        slack_api_url=fake.url,
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        admin = {"X-API-Key": ids["admin"]}
        rev = client.post("/v1/policies", headers=admin, json={"text": POLICY}).json()["id"]
        client.post(f"/v1/policies/{rev}/activate", headers=admin, json={})
        yield {"client": client, "fake": fake, "db": db_path, "keys": ids}
    fake.close()


def call(s: dict[str, Any], tool: str = "issue_refund", amount: float = 300, session: str = "ses-1") -> dict[str, Any]:
    args: dict[str, Any] = {"order_id": "A-1", "amount": amount} if tool == "issue_refund" else {"to": "x@example.com"}
    r = s["client"].post(
        "/v1/check",
        headers={"X-API-Key": s["keys"]["agent"]},
        json={"tool": tool, "args": args, "session_id": session, "approval_mode": "async"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def opened(s: dict[str, Any], approval_id: str) -> dict[str, Any]:
    """The modal Slack was asked to open when the approver clicked Edit."""
    before = len(s["fake"].called("views.open"))
    assert s["client"].post(URL, **signed(click("U0LENA", "edit", approval_id))).status_code == 200
    return dict(s["fake"].wait_for("views.open", before + 1)[-1]["view"])


def with_grant(approval_id: str, choice: str, *, decision: str = "approve") -> dict[str, Any]:
    payload = submit("U0LENA", approval_id, decision=decision)
    payload["view"]["state"]["values"]["grant"] = {"value": {"selected_option": {"value": choice}}}
    return payload


def grants(s: dict[str, Any]) -> list[dict[str, Any]]:
    return list(s["client"].get("/v1/grants", headers={"X-API-Key": s["keys"]["admin"]}).json())


def refused(s: dict[str, Any]) -> list[str]:
    db = Database(s["db"])
    try:
        return [str(e.body["reason"]) for e in query(db, EventFilter(kind="approval.refused"))]
    finally:
        db.close()


def test_the_modal_offers_only_the_grants_the_rule_permits(slack: dict[str, Any]) -> None:
    view = opened(slack, call(slack)["approval_id"])
    inputs = [b for b in view["blocks"] if b["type"] == "input"]
    assert [b["block_id"] for b in inputs][:3] == ["decision", "grant", "note"]
    block = inputs[1]
    assert block["optional"] is True and block["element"]["initial_option"]["value"] == "none"
    options = [(o["value"], o["text"]["text"]) for o in block["element"]["options"]]
    assert options == [
        ("none", "No grant"),
        ("session:900", "this session for 15 minutes"),
        ("session:3600", "this session for 1 hour"),
        ("session:14400", "this session for 4 hours"),
        ("session:28800", "this session for 8 hours"),  # the rule's max_duration, nothing longer
        ("agent:900", "this agent for 15 minutes"),
        ("agent:3600", "this agent for 1 hour"),
        ("agent:14400", "this agent for 4 hours"),
        ("agent:28800", "this agent for 8 hours"),
    ]
    assert "at most 20 calls, amount totalling at most 500" in block["hint"]["text"]
    assert all(o["text"]["type"] == "plain_text" for o in block["element"]["options"])
    # A scope the call cannot have is not offered: no session, no person it acts for.
    stored = status(slack, call(slack)["approval_id"])
    limits = GrantLimitsOut(scopes=["session", "agent", "requester"], max_duration=1800, max_calls=None, max_total=None)
    offered = [
        o["value"] for o in grant_options(dataclasses.replace(stored, session=None, requested_by="user:ann"), limits)
    ]
    assert offered == ["agent:900", "agent:1800", "requester:900", "requester:1800"]
    assert [o["value"] for o in grant_options(stored, limits)] == [
        "session:900",
        "session:1800",
        "agent:900",
        "agent:1800",
    ]
    assert grant_options(stored, None) == []
    # A rule without grants offers none.
    view = opened(slack, call(slack, tool="send_email")["approval_id"])
    assert not [b for b in view["blocks"] if b.get("block_id") == "grant"]


def test_a_grant_chosen_in_the_modal_lets_the_next_similar_call_through(slack: dict[str, Any]) -> None:
    asked = call(slack)
    r = slack["client"].post(URL, **signed(with_grant(asked["approval_id"], "session:3600")))
    assert r.status_code == 200 and r.content == b""
    assert status(slack, asked["approval_id"]).status == "approved"
    [grant] = grants(slack)
    assert (grant["scope"], grant["session"], grant["granted_by"], grant["approval_id"]) == (
        "session",
        "ses-1",
        "user:lena",
        asked["approval_id"],
    )
    assert grant["expires_at_us"] - grant["created_at_us"] == 3600 * 1_000_000
    assert (grant["max_calls"], grant["max_total"]) == (20, "500")  # the rule's limits apply
    covered = call(slack, amount=250)
    assert covered["decision"] == "allow" and grant["id"] in covered["reason"]
    assert call(slack, amount=250, session="ses-2")["decision"] == "require_approval"
    # "No grant" approves just the call.
    other = call(slack, session="ses-3")
    assert slack["client"].post(URL, **signed(with_grant(other["approval_id"], "none"))).content == b""
    assert status(slack, other["approval_id"]).status == "approved" and len(grants(slack)) == 1


def test_a_refused_grant_keeps_the_modal_open_and_the_approval_pending(slack: dict[str, Any]) -> None:
    client, fake = slack["client"], slack["fake"]
    asked = call(slack)["approval_id"]

    def answer(payload: dict[str, Any]) -> dict[str, str]:
        r = client.post(URL, **signed(payload))
        assert r.status_code == 200 and r.json()["response_action"] == "errors", r.text
        return dict(r.json()["errors"])

    # Wider than the rule permits (a crafted payload: the modal never offers it).
    too_long = answer(with_grant(asked, "agent:86400"))
    assert too_long == {"grant": "duration: 86400s is longer than the rule's max_duration of 28800s"}
    assert answer(with_grant(asked, "session:3600", decision="deny")) == {"grant": "only an approval can grant"}
    assert answer(with_grant(asked, "session:soon")) == {"grant": "session:soon is not a grant this modal offers"}
    hostile = answer(with_grant(asked, "\u202e" + "x" * 5000))
    assert hostile["grant"].startswith("⟨U+202E RLO⟩xxx") and len(hostile["grant"]) <= 150
    assert status(slack, asked).status == "pending" and grants(slack) == []
    assert len(refused(slack)) == 2  # the two that reached the decision are audited
    # Problems that do not fit under the field reach the approver whole, only to them.
    many = answer(with_grant(asked, "abcdefghijklmnopqrst:999999999999"))
    assert many["grant"].startswith("scope: 'abcdefghijklmnopqrst' is not a scope; write session, agent or requester;")
    assert len(many["grant"]) <= 150 and many["grant"].endswith("…")
    [told] = fake.wait_for("chat.postEphemeral")
    assert told["user"] == "U0LENA" and "the approval is still pending" in told["text"]
    assert "• duration: 999999999999s is longer than the rule's max_duration of 28800s" in told["text"]
    assert status(slack, asked).status == "pending"
    # A rule without grants refuses one under the decision (no grant field was offered).
    mail = call(slack, tool="send_email")["approval_id"]
    payload = submit("U0LENA", mail)
    payload["view"]["state"]["values"]["grant"] = {"value": {"selected_option": {"value": "agent:3600"}}}
    r = client.post(URL, **signed(payload))
    assert "allows no grants" in json.dumps(r.json()["errors"])
    assert status(slack, mail).status == "pending"
    # Then a grant the rule permits goes through.
    assert client.post(URL, **signed(with_grant(asked, "agent:28800"))).content == b""
    assert status(slack, asked).status == "approved" and [g["scope"] for g in grants(slack)] == ["agent"]
