"""What the inbox lists (issue 17): what is at stake in each approval, whether it is the caller's to
decide, and the filters (tool, agent, environment, mine) — on SQLite and PostgreSQL, with hostile
values, and never more than a key may see.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._clock import now_us
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store import _events as events

from ..conftest import REPO
from .test_hostile_records import HOSTILE

PASSWORD = "correct horse battery staple"
POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - id: big
        when: 'args.currency != "" && args.amount > 200'
        effect: require_approval
        reason: big refund
        approval: {timeout: 30m, approvers: [role:support-lead]}
  send_email:
    rules:
      - id: outside
        when: '!all_in(domains(args.to), ["acme.com"])'
        effect: require_approval
        approval: {timeout: 1h, quorum: 2}
budgets:
  session: {max_tokens: 10, on_exceed: require_approval}
"""
VISIBLE = [case["text"] for case in json.loads((REPO / "tests" / "visible_cases.json").read_text())["strings"]]


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@pytest.fixture
def keys(client: TestClient, make_key: Any) -> dict[str, dict[str, str]]:
    found = {
        "admin": {"X-API-Key": make_key("admin", agent=None)},
        "refunds": {"X-API-Key": make_key("agent", agent="refunds", environment="production")},
        "mailer": {"X-API-Key": make_key("agent", agent="mailer", environment="staging")},
        "approver": {"X-API-Key": make_key("approver", agent=None)},
    }
    rev = client.post("/v1/policies", headers=found["admin"], json={"text": POLICY}).json()["id"]
    assert client.post(f"/v1/policies/{rev}/activate", headers=found["admin"], json={}).status_code == 200
    for name, roles in (("lena", ["approver", "support-lead"]), ("pia", ["approver"]), ("ray", ["approver"])):
        r = client.post(
            "/v1/users", headers=found["admin"], json={"username": name, "password": PASSWORD, "roles": roles}
        )
        assert r.status_code == 201, r.text
    return found


def ask(client: TestClient, key: dict[str, str], tool: str, args: dict[str, Any], **more: Any) -> str:
    body = {"tool": tool, "args": args, "approval_mode": "async", **more}
    r = client.post("/v1/check", headers=key, json=body)
    assert r.status_code == 200 and r.json()["approval_id"], r.text
    return str(r.json()["approval_id"])


def as_person(client: TestClient, name: str) -> dict[str, str]:
    client.cookies.clear()
    signed = client.post("/v1/login", json={"username": name, "password": PASSWORD})
    assert signed.status_code == 200, signed.text
    return {"X-CSRF-Token": signed.json()["csrf_token"]}


def listed(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/approvals", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return list(r.json())


def test_each_approval_says_what_its_rules_read_first(client: TestClient, keys: dict[str, Any]) -> None:
    refund = ask(client, keys["refunds"], "issue_refund", {"order_id": "A-1", "amount": 350.5, "currency": "USD"})
    mail = ask(client, keys["mailer"], "send_email", {"subject": "hi", "to": ["x@example.com"]})
    found = {a["id"]: a for a in listed(client, keys["approver"])}
    assert found[refund]["reads"] == ["currency", "amount"]  # in the order the condition reads them
    assert found[refund]["args"] == {"order_id": "A-1", "amount": 350.5, "currency": "USD"}
    assert found[mail]["reads"] == ["to"]
    assert client.get(f"/v1/approvals/{refund}", headers=keys["approver"]).json()["reads"] == ["currency", "amount"]

    # A budget that asked reads no argument.
    spent = {"id": f"evt_{uuid.uuid4().hex}", "kind": "llm.call", "at_us": now_us(), "session": "s", "tokens": 50}
    assert client.post("/v1/events", headers=keys["mailer"], json={"events": [spent]}).json()["appended"] == 1
    budget = ask(client, keys["mailer"], "lookup", {"q": "x"}, session_id="s")
    assert client.get(f"/v1/approvals/{budget}", headers=keys["approver"]).json()["reads"] == []


def test_whose_to_decide_is_the_servers_answer_for_each_caller(
    client: TestClient, keys: dict[str, Any], server_db: str
) -> None:
    big = ask(client, keys["refunds"], "issue_refund", {"amount": 900, "currency": "EUR"}, requested_by="lena")
    mail = ask(client, keys["mailer"], "send_email", {"to": ["x@example.com"]})
    agent_view = listed(client, keys["refunds"])
    assert [(a["id"], a["may_decide"]) for a in agent_view] == [(big, False)]  # an agent decides nothing
    assert {a["id"]: a["may_decide"] for a in listed(client, keys["approver"])} == {big: False, mail: True}
    assert [a["id"] for a in listed(client, keys["approver"], mine=True)] == [mail]  # a key is not in role:support-lead

    person = as_person(client, "lena")  # in the group, but she asked for the refund
    assert [a["id"] for a in listed(client, person, mine=True)] == [mail]
    person = as_person(client, "pia")  # not in the group
    assert {a["id"]: a["may_decide"] for a in listed(client, person)} == {big: False, mail: True}
    assert client.post(f"/v1/approvals/{mail}/approve", headers=person).json()["status"] == "pending"  # 1 of 2 votes
    assert [a["id"] for a in listed(client, person, mine=True)] == []  # voted: it waits for someone else now
    person = as_person(client, "ray")
    assert [a["id"] for a in listed(client, person, mine=True)] == [mail]


def test_the_filters_narrow_the_list_and_the_stream(client: TestClient, keys: dict[str, Any]) -> None:
    refund = ask(client, keys["refunds"], "issue_refund", {"amount": 900, "currency": "USD"})
    mail = ask(client, keys["mailer"], "send_email", {"to": ["x@example.com"]})
    approver = keys["approver"]
    assert [a["id"] for a in listed(client, approver, tool="send_email")] == [mail]
    assert [a["id"] for a in listed(client, approver, agent="refunds")] == [refund]
    assert [a["id"] for a in listed(client, approver, environment="production")] == [refund]
    assert [a["environment"] for a in listed(client, approver, environment="staging")] == ["staging"]
    assert listed(client, approver, tool="send_email", agent="refunds") == []
    assert {a["id"] for a in listed(client, approver)} == {refund, mail}

    with client.stream("GET", "/v1/approvals/stream", headers=approver, params={"environment": "staging"}) as stream:
        assert stream.status_code == 200
        frame = next(line for line in stream.iter_lines() if line.startswith("data: "))
    assert [a["id"] for a in json.loads(frame[6:])] == [mail]

    # An agent's key never sees another agent's, whatever it asks for.
    assert listed(client, keys["refunds"], agent="mailer") == []
    assert [a["id"] for a in listed(client, keys["refunds"], tool="issue_refund")] == [refund]
    with client.stream("GET", "/v1/approvals/stream", headers=keys["mailer"], params={"agent": "refunds"}) as stream:
        frame = next(line for line in stream.iter_lines() if line.startswith("data: "))
    assert json.loads(frame[6:]) == []


@pytest.mark.parametrize(
    "query",
    ["tool=%00", "agent=a%00b", "environment=" + "x" * 201, "mine=perhaps", "tool=a&tool=%00"],
    ids=["nul", "nul-inside", "too-long", "not-a-boolean", "repeated"],
)
def test_filters_no_store_can_hold_are_refused_not_failed(client: TestClient, keys: dict[str, Any], query: str) -> None:
    r = client.get(f"/v1/approvals?{query}", headers=keys["approver"])
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_parameter", r.text
    with client.stream("GET", f"/v1/approvals/stream?{query}", headers=keys["approver"]) as stream:
        assert stream.status_code == 422


def test_a_filter_of_bytes_that_are_not_utf8_fails_nothing(client: TestClient, keys: dict[str, Any]) -> None:
    ask(client, keys["refunds"], "issue_refund", {"amount": 900, "currency": "USD"})
    for query in ("agent=a%ED%A0%80", "tool=%FF%FE", "environment=%C0%80"):  # a lone surrogate's bytes, and worse
        r = client.get(f"/v1/approvals?{query}", headers=keys["approver"])
        assert r.status_code in (200, 422), r.text
        assert r.json() == [] or r.json()["error"]["code"] == "invalid_parameter"


@pytest.mark.parametrize("value", ["' OR 1=1 --", "refund\u202etxt.exe", "%", "_", "issue_refund\u200b"])
def test_filters_are_values_never_sql(client: TestClient, keys: dict[str, Any], value: str) -> None:
    ask(client, keys["refunds"], "issue_refund", {"amount": 900, "currency": "USD"})
    for name in ("tool", "agent", "environment"):
        assert listed(client, keys["approver"], **{name: value}) == [], name


def test_hostile_values_of_the_arguments_read_are_listed_exactly(client: TestClient, keys: dict[str, Any]) -> None:
    """Every case of tests/visible_cases.json as the argument a rule reads: listed as sent, for the page to mark."""
    made = {}
    for i, text in enumerate(VISIBLE):
        body = {"tool": "issue_refund", "args": {"amount": 201 + i, "currency": text}, "approval_mode": "async"}
        r = client.post("/v1/check", headers=keys["refunds"], json=body)
        assert r.status_code in (200, 422), r.text  # a NUL is refused at the boundary
        if r.status_code == 200 and text:  # (an empty currency asks nobody)
            made[r.json()["approval_id"]] = text
    assert len(made) > len(VISIBLE) * 3 // 4
    found = {a["id"]: a for a in listed(client, keys["approver"], tool="issue_refund")}
    assert found.keys() == made.keys()
    for approval_id, text in made.items():
        assert found[approval_id]["reads"] == ["currency", "amount"]
        assert found[approval_id]["args"]["currency"] == text


def test_stored_records_no_encoder_returns_whole_still_list_with_what_they_read(
    client: TestClient, keys: dict[str, Any], server_db: str
) -> None:
    """test_hostile_records' stored values (deep, huge, NUL, lone surrogates, not JSON), asked by a real revision."""
    revision = client.get("/v1/policies", headers=keys["admin"]).json()[0]["id"]
    db = Database(server_db)
    now = time.time_ns() // 1000
    with db.write() as cur:
        for name, text in HOSTILE.items():
            approvals.insert(
                db,
                cur,
                {
                    "id": events.new_id("apr"),
                    "call_id": events.new_id("call"),
                    "status": "pending",
                    "tool": "issue_refund",
                    "agent": "older",
                    "environment": "test",
                    "session": f"s-{name}",
                    "args_json": text if text is not None else "{not json",
                    "args_hash": "0" * 64,
                    "shown_args_json": text if text is not None else "{not json",
                    "rule_ids": '["big"]',
                    "reason": "older record",
                    "policy_revision": revision,
                    "approvers": "[]",
                    "on_timeout": "deny",
                    "created_at_us": now,
                    "expires_at_us": now + 3_600_000_000,
                },
            )
    db.close()
    found = listed(client, keys["approver"], agent="older", mine=True)
    assert {a["session"] for a in found} == {f"s-{name}" for name in HOSTILE}
    assert all(a["reads"] == ["currency", "amount"] and a["may_decide"] for a in found)


def test_mine_reads_on_past_the_first_batch(client: TestClient, keys: dict[str, Any], server_db: str) -> None:
    """`keep` is applied before the limit: the store reads on, batch after batch, in expiry order."""
    ids = [ask(client, keys["refunds"], "issue_refund", {"amount": 300 + i, "currency": "USD"}) for i in range(7)]
    db = Database(server_db)
    try:
        wanted = {ids[2], ids[5], ids[6]}
        kept = approvals.listing(db, limit=2, keep=lambda a: a.id in wanted)
        assert [a.id for a in kept] == [ids[2], ids[5]]
        assert [a.id for a in approvals.listing(db, limit=5, keep=lambda a: a.id in wanted)] == [ids[2], ids[5], ids[6]]
        assert [a.id for a in approvals.listing(db, limit=3)] == ids[:3]
        newest = approvals.listing(db, status=None, limit=2, keep=lambda a: a.id in wanted)
        assert [a.id for a in newest] == [ids[6], ids[5]]
    finally:
        db.close()
