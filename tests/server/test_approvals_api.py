from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._clock import ManualClock

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: %s}}
"""


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store  # these run on both stores: the approval SQL differs between them


@pytest.fixture
def setup(client: TestClient, make_key: Any) -> dict[str, dict[str, str]]:
    return {
        "admin": {"X-API-Key": make_key("admin", agent=None)},
        "agent": {"X-API-Key": make_key("agent", agent="refunds")},
        "other": {"X-API-Key": make_key("agent", agent="mailer")},
        "approver": {"X-API-Key": make_key("approver", agent=None)},
        "self": {"X-API-Key": make_key("agent", "approver", agent="refunds")},
    }


def pending(client: TestClient, keys: dict[str, dict[str, str]], timeout: str = "30m") -> str:
    rev = client.post("/v1/policies", headers=keys["admin"], json={"text": POLICY % timeout}).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=keys["admin"], json={})
    r = client.post("/v1/check", headers=keys["agent"], json={"tool": "issue_refund", "args": {"amount": 900}})
    return str(r.json()["approval_id"])


def test_only_approvers_decide_never_for_their_own_agent(client: TestClient, setup: dict[str, Any]) -> None:
    apr = pending(client, setup)
    for name in ("agent", "other", "admin"):
        r = client.post(f"/v1/approvals/{apr}/approve", headers=setup[name])
        assert r.status_code == 403, name
    r = client.post(f"/v1/approvals/{apr}/approve", headers=setup["self"])
    assert r.status_code == 403 and "requesting agent" in r.json()["error"]["message"]
    ok = client.post(f"/v1/approvals/{apr}/approve", headers=setup["approver"], json={"note": "verified"})
    assert ok.status_code == 200 and ok.json()["status"] == "approved" and ok.json()["note"] == "verified"
    late = client.post(f"/v1/approvals/{apr}/deny", headers=setup["approver"])
    assert late.status_code == 409
    assert late.json()["error"]["message"].endswith(f"is already approved by {ok.json()['decided_by']}")


def test_agents_see_only_their_own_approvals(client: TestClient, setup: dict[str, Any]) -> None:
    apr = pending(client, setup)
    assert [a["id"] for a in client.get("/v1/approvals", headers=setup["agent"]).json()] == [apr]
    assert client.get("/v1/approvals", headers=setup["other"]).json() == []
    assert client.get(f"/v1/approvals/{apr}", headers=setup["other"]).status_code == 404
    assert client.get(f"/v1/approvals/{apr}", headers=setup["approver"]).json()["args"] == {"amount": 900}
    assert client.get("/v1/approvals/apr_nope", headers=setup["approver"]).status_code == 404


def test_long_poll_answers_on_the_decision(clock: ManualClock, client: TestClient, setup: dict[str, Any]) -> None:
    apr = pending(client, setup)
    result: dict[str, Any] = {}

    def wait() -> None:
        result.update(client.get(f"/v1/approvals/{apr}?wait=20", headers=setup["agent"]).json())

    thread = threading.Thread(target=wait)
    thread.start()
    clock.wait_parked("long poll approvals")  # held, and its re-check will never come: the clock stands still
    client.post(f"/v1/approvals/{apr}/deny", headers=setup["approver"], json={"note": "not paid"})
    thread.join(20)
    assert result["status"] == "denied" and result["note"] == "not paid"  # so the decision's push answered it


def test_a_long_poll_answers_when_its_wait_is_over(
    clock: ManualClock, client: TestClient, setup: dict[str, Any]
) -> None:
    apr = pending(client, setup)
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(client.get(f"/v1/approvals/{apr}?wait=20", headers=setup["agent"]).json())
    )
    thread.start()
    clock.wait_parked("long poll approvals")
    clock.advance(20)
    thread.join(20)
    assert result["status"] == "pending"


def test_expiry_is_enforced_by_whoever_looks(clock: ManualClock, client: TestClient, setup: dict[str, Any]) -> None:
    apr = pending(client, setup, timeout="1s")
    clock.advance(1.1)
    assert client.get(f"/v1/approvals/{apr}", headers=setup["agent"]).json()["status"] == "expired"
    r = client.post(f"/v1/approvals/{apr}/approve", headers=setup["approver"])
    assert r.status_code == 409 and "already expired" in r.json()["error"]["message"]


def test_decisions_over_http_refuse_bad_input_and_leave_it_pending(
    client: TestClient, setup: dict[str, Any], server_db: str
) -> None:
    from clearance._store import Database
    from clearance._store._events import EventFilter, query

    apr = pending(client, setup)
    approve = f"/v1/approvals/{apr}/approve"
    bad = [
        (client.post(approve, headers=setup["approver"], json={"args": {"amount": "x"}}), 422),
        (client.post(approve, headers=setup["approver"], json={"args": {"colour": "red"}}), 422),
        (client.post(approve, headers=setup["approver"], json={"args": []}), 422),
        (client.post(f"/v1/approvals/{apr}/deny", headers=setup["approver"], json={"args": {"amount": 1}}), 422),
        (client.post(approve, headers=setup["agent"]), 403),
        (client.post(approve, headers=setup["admin"]), 403),
        (client.post("/v1/approvals/apr_nope/approve", headers=setup["approver"]), 404),
    ]
    assert [r.status_code for r, _ in bad] == [code for _, code in bad]
    assert client.get(f"/v1/approvals/{apr}", headers=setup["agent"]).json()["status"] == "pending"
    db = Database(server_db)
    refused = [e.body for e in query(db, EventFilter(kind="approval.refused"))]
    db.close()
    assert len(refused) == 6  # the edits, the deny with edits, the agent, the admin, the unknown id (not bad bodies)
    ok = client.post(approve, headers=setup["approver"], json={"args": {"amount": 300}, "note": "fine"}).json()
    assert ok["status"] == "approved" and ok["edited_args"] == {"amount": 300} and ok["note"] == "fine"
    again = client.post(approve, headers=setup["approver"])
    assert again.status_code == 409 and again.json()["error"]["details"][1]["message"].startswith("key:")


def test_people_decide_by_their_groups(client: TestClient, setup: dict[str, Any], server_db: str) -> None:
    from .test_users import PASSWORD, make_user

    policy = POLICY.replace("approval: {timeout: %s}", "approval: {timeout: %s, approvers: [role:support-lead]}")
    rev = client.post("/v1/policies", headers=setup["admin"], json={"text": policy % "30m"}).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=setup["admin"], json={})
    apr = client.post(
        "/v1/check",
        headers=setup["agent"],
        json={"tool": "issue_refund", "args": {"amount": 900}, "requested_by": "lena"},
    ).json()["approval_id"]
    for name, roles in (
        ("pia", ["approver"]),
        ("lena", ["approver", "support-lead"]),
        ("omar", ["approver", "support-lead"]),
    ):
        assert (
            client.post(
                "/v1/users", headers=setup["admin"], json={"username": name, "password": PASSWORD, "roles": roles}
            ).status_code
            == 201
        )
    del make_user

    def as_person(name: str) -> dict[str, str]:
        client.cookies.clear()
        signed = client.post("/v1/login", json={"username": name, "password": PASSWORD}).json()
        return {"X-CSRF-Token": signed["csrf_token"]}

    r = client.post(f"/v1/approvals/{apr}/approve", headers=as_person("pia"))
    assert r.status_code == 403 and "only role:support-lead" in r.json()["error"]["message"]
    r = client.post(f"/v1/approvals/{apr}/approve", headers=as_person("lena"))
    assert r.status_code == 403 and "lena requested this call" in r.json()["error"]["message"]
    assert client.post(f"/v1/approvals/{apr}/approve", headers=setup["approver"]).status_code == 403  # no group
    r = client.post(f"/v1/approvals/{apr}/approve", headers=as_person("omar"))
    assert r.status_code == 200 and r.json()["decided_by"] == "user:omar"


def test_the_server_expires_and_escalates_with_nobody_waiting(
    clock: ManualClock, client: TestClient, setup: dict[str, Any], server_db: str
) -> None:
    from clearance._store import Database
    from clearance._store import _approvals as approvals

    policy = (
        "version: 1\ntools:\n"
        "  issue_refund:\n    rules:\n"
        "      - {id: big, when: 'args.amount > 200', effect: require_approval,"
        " approval: {timeout: 1s, on_timeout: escalate, escalate_to: [role:finance], escalation_timeout: 1s}}\n"
        "  send_email:\n    rules: [{id: mail, effect: require_approval, approval: {timeout: 1s}}]\n"
    )
    rev = client.post("/v1/policies", headers=setup["admin"], json={"text": policy}).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=setup["admin"], json={})
    check = {"tool": "issue_refund", "args": {"amount": 900}}
    refund = client.post("/v1/check", headers=setup["agent"], json=check).json()["approval_id"]
    mail = client.post("/v1/check", headers=setup["agent"], json={"tool": "send_email", "args": {"to": "x"}})
    db = Database(server_db)
    try:
        # Nobody reads the approvals over the API: the server's sweeper acts alone, woken by the clock.
        clock.wait_parked("approval sweep")
        clock.advance(1.1)
        clock.wait_parked("approval sweep")  # it swept, and sleeps until the next expiry
        escalated = approvals.get(db, refund)
        assert escalated.status == "pending" and escalated.escalated_at_us is not None
        assert approvals.get(db, mail.json()["approval_id"]).status == "expired"
        clock.advance(1.1)
        clock.wait_parked("approval sweep")
        assert approvals.get(db, refund).status == "expired"
    finally:
        db.close()
