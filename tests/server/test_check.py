from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store._events import EventFilter, query, verify

from .conftest import Server, _free_port

POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
      - id: cap
        when: facts.sum_24h_amount + args.amount > 1000
        effect: block
        reason: daily cap
  "db.*": {default: block}
redact:
  issue_refund: [/card]
"""


@pytest.fixture
def keys_and_policy(client: TestClient, make_key: Any) -> dict[str, dict[str, str]]:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    rev = client.post("/v1/policies", headers=admin, json={"text": POLICY}).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=admin, json={})
    return {
        "admin": admin,
        "agent": {"X-API-Key": make_key("agent", agent="refunds", environment="live")},
        "other": {"X-API-Key": make_key("agent", agent="mailer")},
        "approver": {"X-API-Key": make_key("approver", agent=None)},
    }


def test_check_decides_records_and_requests_approval(
    client: TestClient, keys_and_policy: dict[str, dict[str, str]], server_db: str
) -> None:
    agent = keys_and_policy["agent"]
    ok = client.post(
        "/v1/check",
        headers=agent,
        json={"tool": "issue_refund", "args": {"amount": 50, "card": "4111"}, "session_id": "s1"},
    ).json()
    assert ok["decision"] == "allow" and ok["session_id"] == "s1" and ok["call_id"].startswith("call_")
    blocked = client.post("/v1/check", headers=agent, json={"tool": "db.drop", "args": {}}).json()
    assert blocked["decision"] == "block" and blocked["reason"] == "no rule matched; default of 'db.*' is block"
    held = client.post("/v1/check", headers=agent, json={"tool": "issue_refund", "args": {"amount": 500}}).json()
    assert held["decision"] == "require_approval" and held["approval_id"].startswith("apr_")
    assert held["reason"] == "Refunds over $200 need a support lead" and held["expires_at_us"] > 0
    capped = client.post("/v1/check", headers=agent, json={"tool": "issue_refund", "args": {"amount": 460}}).json()
    assert capped["decision"] == "block" and capped["rule_ids"] == ["cap"]  # 50 + 500 pending + 460 > 1000
    db = Database(server_db)
    decided = [e.body for e in query(db, EventFilter(kind="tool_call.decided"))]
    assert {d["agent"] for d in decided} == {"refunds"} and {d["environment"] for d in decided} == {"live"}
    assert decided[0]["args"]["card"] == "[REDACTED]"
    [a] = approvals.listing(db)
    assert a.agent == "refunds" and a.waiter is None and a.args == {"amount": 500}
    assert verify(db).ok
    db.close()


def test_only_agent_keys_decide_and_the_body_cannot_claim_an_agent(
    client: TestClient, keys_and_policy: dict[str, dict[str, str]]
) -> None:
    for name in ("admin", "approver"):
        r = client.post("/v1/check", headers=keys_and_policy[name], json={"tool": "t"})
        assert r.status_code == 403, name
    r = client.post("/v1/check", headers=keys_and_policy["agent"], json={"tool": "t", "agent": "mailer"})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["location"] == "body.agent"
    assert client.post("/v1/check", headers=keys_and_policy["agent"], json={"tool": ""}).status_code == 422


def test_no_active_policy_is_a_conflict(client: TestClient, make_key: Any) -> None:
    r = client.post("/v1/check", headers={"X-API-Key": make_key("agent", agent="x")}, json={"tool": "t"})
    assert r.status_code == 409 and "no policy is active" in r.json()["error"]["message"]


def test_outcomes_are_recorded_once_and_only_by_the_calls_agent(
    client: TestClient, keys_and_policy: dict[str, dict[str, str]], server_db: str
) -> None:
    agent, other = keys_and_policy["agent"], keys_and_policy["other"]
    call = client.post("/v1/check", headers=agent, json={"tool": "issue_refund", "args": {"amount": 5}}).json()
    url = f"/v1/calls/{call['call_id']}/outcome"
    assert client.post(url, headers=other, json={"status": "ok", "duration_ms": 1}).status_code == 404
    assert (
        client.post(url, headers=agent, json={"status": "error", "duration_ms": 12.5, "error": "gateway down"}).json()[
            "status"
        ]
        == "recorded"
    )
    assert (
        client.post(url, headers=agent, json={"status": "ok", "duration_ms": 1}).json()["status"] == "already recorded"
    )
    assert (
        client.post("/v1/calls/call_nope/outcome", headers=agent, json={"status": "ok", "duration_ms": 1}).status_code
        == 404
    )
    assert client.post(url, headers=agent, json={"status": "maybe", "duration_ms": 1}).status_code == 422
    db = Database(server_db)
    [finished] = [e.body for e in query(db, EventFilter(kind="tool_call.finished"))]
    assert (
        finished["decision"] == "error" and finished["error"] == "gateway down" and finished["tool"] == "issue_refund"
    )
    db.close()


def test_decisions_follow_activation_immediately(
    client: TestClient, keys_and_policy: dict[str, dict[str, str]]
) -> None:
    admin, agent = keys_and_policy["admin"], keys_and_policy["agent"]
    rev = client.post("/v1/policies", headers=admin, json={"text": "version: 1\ndefault: block\n"}).json()["id"]
    assert client.post("/v1/check", headers=agent, json={"tool": "anything"}).json()["decision"] == "allow"
    client.post(f"/v1/policies/{rev}/activate", headers=admin, json={"environment": "live"})
    after = client.post("/v1/check", headers=agent, json={"tool": "anything"}).json()
    assert after["decision"] == "block" and after["policy_revision"] == rev


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_concurrent_checks_committed_together_still_respect_a_cap(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Checks that arrive together share a transaction; each still sees the ones before it."""
    url = str(tmp_path / "s.db") if store == "sqlite" else str(request.getfixturevalue("pg_url"))
    Database(url).close()
    server = Server(url, _free_port(), tmp_path / "server.log")
    server.start()
    try:
        server.publish(POLICY)

        async def fire() -> list[dict[str, Any]]:
            async with httpx.AsyncClient(base_url=server.base, headers={"X-API-Key": server.agent}) as http:
                answers = await asyncio.gather(
                    *(http.post("/v1/check", json={"tool": "issue_refund", "args": {"amount": 100}}) for _ in range(30))
                )
            return [a.json() for a in answers]

        answers = asyncio.run(fire())
    finally:
        server.stop()
    decisions = [a["decision"] for a in answers]
    assert decisions.count("allow") == 10 and decisions.count("block") == 20  # 10 x 100 reach the 1000 cap
    assert {a["rule_ids"][0] for a in answers if a["decision"] == "block"} == {"cap"}
    db = Database(url)
    try:
        assert len(query(db, EventFilter(kind="tool_call.decided"), limit=100)) == 30
        assert verify(db).ok
    finally:
        db.close()


def test_a_call_key_asked_again_returns_its_approval_and_records_nothing_new(
    client: TestClient, keys_and_policy: dict[str, dict[str, str]], server_db: str
) -> None:
    """A framework's hook replayed on resume (LangGraph, the Agents SDK) asks with the same tool-call id."""
    agent, other = keys_and_policy["agent"], keys_and_policy["other"]
    body = {"tool": "issue_refund", "args": {"amount": 500}, "approval_mode": "pause", "call_key": "call_1"}
    first = client.post("/v1/check", headers=agent, json=body).json()
    again = client.post("/v1/check", headers=agent, json=body).json()
    assert first["approval_id"] and again["approval_id"] == first["approval_id"]
    assert again["call_id"] == first["call_id"] and again["decision"] == "require_approval"
    swapped = client.post("/v1/check", headers=agent, json={**body, "args": {"amount": 900}})
    assert swapped.status_code == 409 and "other arguments" in swapped.json()["error"]["message"]
    # Keys are per agent: another agent's call_1 is its own call.
    theirs = client.post("/v1/check", headers=other, json=body).json()
    assert theirs["approval_id"] != first["approval_id"]
    db = Database(server_db)
    assert len(list(query(db, EventFilter(kind="tool_call.decided")))) == 2
    [mine] = [a for a in approvals.listing(db) if a.agent == "refunds"]
    assert mine.mode == "pause" and mine.call_key == "call_1" and mine.waiter is None
    db.close()
