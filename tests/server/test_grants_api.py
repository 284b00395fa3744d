"""Grants and budget extensions over the API: given with an approval, used by /v1/check, listed, revoked, expired."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._clock import ManualClock
from clearance._store import Database
from clearance._store import _grants as grants
from clearance._store._events import EventFilter, query

from .._wait import until
from .conftest import post_raw

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {amount: number, order_id: string}
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        reason: big refund
        approval:
          timeout: 30m
          grants: {scopes: [session, agent, requester], max_duration: 8h, max_calls: 20, max_total: {amount: 5000}}
  send_email:
    rules:
      - {id: mail, effect: require_approval, approval: {timeout: 30m}}
  lookup:
    rules:
      - {id: look, effect: require_approval, approval: {grants: {scopes: [agent], max_duration: 1h}}}
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval}
"""


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@pytest.fixture
def keys(client: TestClient, make_key: Any) -> dict[str, dict[str, str]]:
    found = {
        "admin": {"X-API-Key": make_key("admin", agent=None)},
        "agent": {"X-API-Key": make_key("agent", agent="refunds")},
        "other": {"X-API-Key": make_key("agent", agent="mailer")},
        "approver": {"X-API-Key": make_key("approver", agent=None)},
    }
    rev = client.post("/v1/policies", headers=found["admin"], json={"text": POLICY}).json()["id"]
    assert client.post(f"/v1/policies/{rev}/activate", headers=found["admin"], json={}).status_code == 200
    return found


def check(
    client: TestClient, keys: dict[str, Any], amount: float, session: str = "s1", who: str = "agent", **more: Any
) -> dict[str, Any]:
    body = {"tool": "issue_refund", "args": {"amount": amount, "order_id": "A-1"}, "session_id": session, **more}
    r = client.post("/v1/check", headers=keys[who], json=body)
    assert r.status_code == 200, r.text
    return dict(r.json())


def records(db_url: str, kind: str) -> list[dict[str, Any]]:
    db = Database(db_url)
    try:
        return [e.body for e in query(db, EventFilter(kind=kind))]
    finally:
        db.close()


def approve(client: TestClient, keys: dict[str, Any], approval_id: str, **body: Any) -> Any:
    return client.post(f"/v1/approvals/{approval_id}/approve", headers=keys["approver"], json=body)


GRANT = {
    "scope": "session",
    "duration": "1h",
    "max_total": {"amount": 700},
    "constraints": {"amount": {"maximum": 400}},
}


def test_a_grant_lets_covered_calls_through_and_nothing_else(
    client: TestClient, keys: dict[str, Any], server_db: str
) -> None:
    asked = check(client, keys, 300)
    assert asked["decision"] == "require_approval"
    shown = client.get(f"/v1/approvals/{asked['approval_id']}", headers=keys["approver"]).json()
    assert shown["grant_limits"] == {
        "scopes": ["session", "agent", "requester"],
        "max_duration": 8 * 3600,
        "max_calls": 20,
        "max_total": {"amount": "5000"},
    }
    assert shown["budget"] is None
    r = approve(client, keys, asked["approval_id"], note="ok for this order", grant=GRANT)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "approved"
    [decided] = [e for e in records(server_db, "approval.decided") if e["approval_id"] == asked["approval_id"]]
    [g] = client.get("/v1/grants?live=true", headers=keys["approver"]).json()
    assert decided["grant_id"] == g["id"]
    assert (g["scope"], g["session"], g["tool"], g["status"], g["max_total"], g["max_calls"]) == (
        "session",
        "s1",
        "issue_refund",
        "live",
        "700",
        20,
    )
    assert g["approval_id"] == asked["approval_id"] and g["note"] == "ok for this order"
    assert g["constraints"] == {"amount": {"maximum": 400, "required": True}}

    covered = check(client, keys, 300)
    assert covered["decision"] == "allow" and g["id"] in covered["reason"]
    [used] = [e for e in records(server_db, "tool_call.decided") if e["call_id"] == covered["call_id"]]
    assert used["grant_id"] == g["id"] and used["grant_use"] == {"calls_used": 1, "total_used": "300"}
    assert check(client, keys, 300, session="s2")["decision"] == "require_approval"  # another session
    assert check(client, keys, 450)["decision"] == "require_approval"  # above the grant's maximum
    assert check(client, keys, 300)["decision"] == "allow"
    assert check(client, keys, 250)["decision"] == "require_approval"  # the total would pass 700
    after = client.get(f"/v1/grants/{g['id']}", headers=keys["agent"]).json()
    assert (after["calls_used"], after["total_used"], after["status"]) == (2, "600", "live")


def test_the_other_scopes_cover_the_agent_or_the_person(client: TestClient, keys: dict[str, Any]) -> None:
    asked = check(client, keys, 300, requested_by="lena")
    assert approve(client, keys, asked["approval_id"], grant={"scope": "requester", "duration": 600}).status_code == 200
    assert check(client, keys, 300, session="s9", requested_by="lena")["decision"] == "allow"
    assert check(client, keys, 300, session="s9", requested_by="omar")["decision"] == "require_approval"
    asked = check(client, keys, 300, session="s5")
    assert approve(client, keys, asked["approval_id"], grant={"scope": "agent", "duration": "2h"}).status_code == 200
    assert check(client, keys, 300, session="s7")["decision"] == "allow"
    assert check(client, keys, 300, session="s8", who="other")["decision"] == "require_approval"


def test_a_grant_without_limits_counts_its_uses_from_the_calls(client: TestClient, keys: dict[str, Any]) -> None:
    def lookup(session: str) -> dict[str, Any]:
        body = {"tool": "lookup", "args": {"key": "k"}, "session_id": session}
        return dict(client.post("/v1/check", headers=keys["agent"], json=body).json())

    asked = lookup("s1")
    shown = client.get(f"/v1/approvals/{asked['approval_id']}", headers=keys["approver"]).json()
    assert shown["grant_limits"] == {"scopes": ["agent"], "max_duration": 3600, "max_calls": None, "max_total": None}
    assert approve(client, keys, asked["approval_id"], grant={"scope": "agent", "duration": "1h"}).status_code == 200
    assert [lookup(f"s{i}")["decision"] for i in range(3)] == ["allow"] * 3
    [g] = client.get("/v1/grants", headers=keys["agent"]).json()
    assert (g["max_calls"], g["max_total"], g["calls_used"]) == (None, None, 3)
    assert client.get(f"/v1/grants/{g['id']}", headers=keys["agent"]).json()["calls_used"] == 3


REFUSED = [
    ({"scope": "session", "duration": "9h"}, "body.grant.duration", "longer than the rule's max_duration"),
    ({"scope": "session", "duration": "1h", "max_calls": 21}, "body.grant.max_calls", "above the rule's 20"),
    ({"scope": "forever", "duration": "1h"}, "body.grant.scope", "is not a scope"),
    ({"scope": "session", "duration": "1h", "max_calls": -1}, "body.grant.max_calls", "not between 1"),
    ({"scope": "session", "duration": "1h", "max_calls": 10**30}, "body.grant.max_calls", "not between 1"),
    ({"scope": "session", "duration": -5}, "body.grant.duration", "must be positive"),
    ({"scope": "session", "duration": "1h", "max_total": {"amount": "NaN"}}, "body.grant.max_total.amount", "finite"),
    ({"scope": "session", "duration": "1h", "max_total": {"amount": -3}}, "body.grant.max_total.amount", "above 0"),
    ({"scope": "session", "duration": "1h", "max_total": {"amount": 10**400}}, "body.grant.max_total", "above"),
    ({"scope": "session", "duration": "1h", "max_total": {"order_id": 5}}, "body.grant.max_total", "not order_id"),
    ({"scope": "session", "duration": "1h", "constraints": {"colour": "string"}}, "body.grant.constraints", "no arg"),
    (
        {"scope": "session", "duration": "1h", "constraints": {"amount": {"minimum": 5, "maximum": 1}}},
        "body.grant.constraints.amount",
        "above maximum",
    ),
    ({"scope": "session", "duration": "1h", "same": ["colour"]}, "body.grant.same", "no argument 'colour'"),
]


@pytest.mark.parametrize(("grant", "location", "says"), REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_a_grant_wider_than_the_rule_is_refused_and_the_approval_stays_pending(
    client: TestClient, keys: dict[str, Any], server_db: str, grant: dict[str, Any], location: str, says: str
) -> None:
    asked = check(client, keys, 300)
    r = post_raw(client, f"/v1/approvals/{asked['approval_id']}/approve", {"grant": grant}, keys["approver"])
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_parameter" and error["message"].startswith("the grant was refused: ")
    assert any(d["location"].startswith(location) and says in d["message"] for d in error["details"]), error
    assert client.get(f"/v1/approvals/{asked['approval_id']}", headers=keys["agent"]).json()["status"] == "pending"
    [refused] = [e for e in records(server_db, "approval.refused") if e["approval_id"] == asked["approval_id"]]
    assert refused["attempted"] == "approve" and "the grant was refused" in refused["reason"]
    assert client.get("/v1/grants", headers=keys["approver"]).json() == []
    assert check(client, keys, 300)["decision"] == "require_approval"


def test_what_the_rule_or_the_approval_cannot_take_is_refused(
    client: TestClient, keys: dict[str, Any], server_db: str
) -> None:
    mail = client.post(
        "/v1/check", headers=keys["agent"], json={"tool": "send_email", "args": {"to": "x"}, "session_id": "m"}
    ).json()["approval_id"]
    assert client.get(f"/v1/approvals/{mail}", headers=keys["approver"]).json()["grant_limits"] is None
    refund = check(client, keys, 300)["approval_id"]
    cases = [
        (mail, {"grant": {"scope": "session", "duration": "1h"}}, "allows no grants"),
        (refund, {"extend": {"usd": "2.50"}}, "only an approval an exhausted budget asked for"),
        (refund, {"grant": {"scope": "session", "duration": "1h"}, "extend": {"usd": 1}}, "not both"),
    ]
    for approval_id, body, says in cases:
        r = approve(client, keys, approval_id, **body)
        assert r.status_code == 422 and says in r.json()["error"]["message"], r.text
        assert client.get(f"/v1/approvals/{approval_id}", headers=keys["approver"]).json()["status"] == "pending"
    r = client.post(
        f"/v1/approvals/{refund}/deny", headers=keys["approver"], json={"grant": {"scope": "session", "duration": 60}}
    )
    assert r.status_code == 422 and "only an approval can grant" in r.json()["error"]["message"]
    assert len(records(server_db, "approval.refused")) == 4
    assert client.get("/v1/grants", headers=keys["approver"]).json() == []


HOSTILE = [
    {"scope": "session", "duration": "1h", "max_calls": float("nan")},
    {"scope": "session", "duration": "1h", "max_calls": True},
    {"scope": "session", "duration": float("inf")},
    {"scope": "session\x00", "duration": "1h"},
    {"scope": "session", "duration": "1h", "same": ["order_id\ud800"]},
    {"scope": "session", "duration": "1h", "color": "red"},
    {"scope": "session", "duration": "x" * 100_000},
    {"scope": "session", "duration": "1h", "constraints": {"amount": {"maximum": 10**400}}},
    {"scope": "session", "duration": "1h", "constraints": {"amount": {"maximum": float("nan")}}},
    {"scope": "session", "duration": "1h", "constraints": {"amount": {"enum": [float("nan")]}}},
    {"scope": "session", "duration": "1h", "constraints": {"amount": {"enum": [[1]]}}},
    {"scope": "session", "duration": "1h", "constraints": {"amount": {"maximum": 5, "deep": {"a": [[[[[]]]]]}}}},
    {"scope": "session", "duration": "1h", "same": [f"a{i}" for i in range(65)]},
    {"scope": "session", "duration": "1h", "constraints": {f"a{i}": "number" for i in range(65)}},
    {"scope": "session"},
    [],
    "{" * 100_000,
]


@pytest.mark.parametrize("grant", HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_hostile_grants_are_refused_with_the_error_shape(
    grant: Any, make_key: Any, server_db: str, keys: dict[str, Any]
) -> None:
    from clearance.server import ServerSettings, create_app

    app = create_app(ServerSettings(database_url=server_db))  # the default body limit: the large bodies reach us
    with TestClient(app, raise_server_exceptions=False) as big:
        asked = check(big, keys, 300)
        body: Any = grant if isinstance(grant, str) else {"grant": grant}
        r = post_raw(big, f"/v1/approvals/{asked['approval_id']}/approve", body, keys["approver"])
        assert r.status_code in (400, 422), r.text
        assert set(r.json()["error"]) == {"code", "message", "details"}
        assert big.get(f"/v1/approvals/{asked['approval_id']}", headers=keys["agent"]).json()["status"] == "pending"
    assert client_grants(server_db) == []


def client_grants(server_db: str) -> list[grants.Grant]:
    db = Database(server_db)
    try:
        return grants.listing(db)
    finally:
        db.close()


def test_an_extension_bigger_than_sane_is_refused(client: TestClient, keys: dict[str, Any], server_db: str) -> None:
    spend(client, keys, "b1", 2)
    asked = check(client, keys, 5, session="b1")
    for extend, says in (
        ({"usd": "NaN"}, "finite"),
        ({"usd": -1}, "not between 0"),
        ({"usd": 10**12}, "not between 0"),
        ({"tokens": 0}, "not between 1"),
        ({}, "say by how much"),
    ):
        r = approve(client, keys, asked["approval_id"], extend=extend)
        assert r.status_code == 422 and says in r.text, r.text
        assert r.json()["error"]["details"][0]["location"].startswith("body.extend")
    grant = {"scope": "session", "duration": "1h"}
    r = approve(client, keys, asked["approval_id"], grant=grant)
    assert r.status_code == 422 and "extend the budget instead" in r.text
    assert client.get(f"/v1/approvals/{asked['approval_id']}", headers=keys["agent"]).json()["status"] == "pending"
    assert len(records(server_db, "approval.refused")) == 6


def test_the_requester_cannot_approve_and_grant_their_own_call(client: TestClient, keys: dict[str, Any]) -> None:
    from .test_users import PASSWORD

    for name in ("lena", "omar"):
        body = {"username": name, "password": PASSWORD, "roles": ["approver"]}
        assert client.post("/v1/users", headers=keys["admin"], json=body).status_code == 201
    asked = check(client, keys, 300, requested_by="lena")

    def as_person(name: str) -> dict[str, str]:
        client.cookies.clear()
        signed = client.post("/v1/login", json={"username": name, "password": PASSWORD}).json()
        return {"X-CSRF-Token": signed["csrf_token"]}

    grant = {"scope": "requester", "duration": "1h"}
    path = f"/v1/approvals/{asked['approval_id']}/approve"
    r = client.post(path, headers=as_person("lena"), json={"grant": grant})
    assert r.status_code == 403 and "lena requested this call" in r.json()["error"]["message"]
    assert client.get("/v1/grants", headers=keys["approver"]).json() == []
    r = client.post(path, headers=as_person("omar"), json={"grant": grant})
    assert r.status_code == 200, r.text
    client.cookies.clear()
    [g] = client.get("/v1/grants", headers=keys["approver"]).json()
    assert (g["granted_by"], g["requester"]) == ("user:omar", "lena")


def test_agents_read_only_their_own_grants_and_revoke_none(
    client: TestClient, keys: dict[str, Any], make_key: Any
) -> None:
    asked = check(client, keys, 300)
    assert approve(client, keys, asked["approval_id"], grant=GRANT).status_code == 200
    [g] = client.get("/v1/grants", headers=keys["agent"]).json()
    assert client.get("/v1/grants", headers=keys["other"]).json() == []
    assert client.get("/v1/grants?agent=refunds", headers=keys["other"]).json() == []
    assert client.get(f"/v1/grants/{g['id']}", headers=keys["other"]).status_code == 404
    assert client.get(f"/v1/grants/{g['id']}", headers=keys["agent"]).json()["id"] == g["id"]
    for who in ("agent", "other"):
        r = client.post(f"/v1/grants/{g['id']}/revoke", headers=keys[who], json={})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    from .test_users import PASSWORD

    body = {"username": "vera", "password": PASSWORD, "roles": ["support-lead"]}
    assert client.post("/v1/users", headers=keys["admin"], json=body).status_code == 201
    client.post("/v1/login", json={"username": "vera", "password": PASSWORD})
    assert client.get("/v1/grants").json() == []  # signed in, neither approver nor admin: no agent's grants
    assert client.get(f"/v1/grants/{g['id']}").status_code == 404
    client.cookies.clear()
    both = {"X-API-Key": make_key("agent", "approver", agent="refunds")}
    asked = check(client, keys, 300, session="s2")
    r = client.post(f"/v1/approvals/{asked['approval_id']}/approve", headers=both, json={"grant": GRANT})
    assert r.status_code == 403  # a key bound to the agent never decides (so never grants) its calls
    assert client.get(f"/v1/grants/{g['id']}", headers=keys["agent"]).json()["status"] == "live"
    assert len(client.get("/v1/grants", headers=keys["admin"]).json()) == 1


def test_revoking_ends_a_grant_at_once_and_only_once(client: TestClient, keys: dict[str, Any], server_db: str) -> None:
    asked = check(client, keys, 300)
    assert approve(client, keys, asked["approval_id"], grant=GRANT).status_code == 200
    [g] = client.get("/v1/grants", headers=keys["approver"]).json()
    assert check(client, keys, 300)["decision"] == "allow"
    r = client.post(f"/v1/grants/{g['id']}/revoke", headers=keys["approver"], json={"reason": "order refunded"})
    assert r.status_code == 200, r.text
    revoked = r.json()
    assert revoked["status"] == "revoked" and revoked["revoke_reason"] == "order refunded"
    assert revoked["revoked_by"].startswith("key:") and revoked["revoked_at_us"] is not None
    assert check(client, keys, 300)["decision"] == "require_approval"
    again = client.post(f"/v1/grants/{g['id']}/revoke", headers=keys["admin"])
    assert again.status_code == 409 and "ended already" in again.json()["error"]["message"]
    assert again.json()["error"]["details"] == [{"location": "status", "message": "revoked"}]
    assert client.get("/v1/grants?live=true", headers=keys["approver"]).json() == []
    assert [e["grant_id"] for e in records(server_db, "grant.revoked")] == [g["id"]]
    for unknown in ("grt_nope", "grt_%00" + "x" * 500):
        r = client.post(f"/v1/grants/{unknown}/revoke", headers=keys["approver"])
        assert r.status_code in (404, 422) and set(r.json()["error"]) == {"code", "message", "details"}
    assert client.get("/v1/grants/grt_nope", headers=keys["approver"]).status_code == 404
    r = post_raw(client, f"/v1/grants/{g['id']}/revoke", {"reason": "a\ud800"}, keys["approver"])
    assert r.status_code == 422


def test_the_server_records_a_grants_expiry_once_with_nobody_reading(
    clock: ManualClock, client: TestClient, keys: dict[str, Any], server_db: str
) -> None:
    asked = check(client, keys, 300)
    assert approve(client, keys, asked["approval_id"], grant={"scope": "session", "duration": 60}).status_code == 200
    assert check(client, keys, 300)["decision"] == "allow"
    clock.advance(61)
    until(lambda: records(server_db, "grant.expired"), "the sweeper records the expiry")
    db = Database(server_db)
    try:
        assert grants.sweep(db) == []  # another sweep (the CLI's, another replica's) finds nothing left
    finally:
        db.close()
    clock.advance(5)
    [expired] = records(server_db, "grant.expired")
    assert expired["calls_used"] == 1
    [g] = client.get("/v1/grants", headers=keys["approver"]).json()
    assert g["status"] == "expired" and g["ended_at_us"] is not None
    assert check(client, keys, 300)["decision"] == "require_approval"
    assert client.post(f"/v1/grants/{g['id']}/revoke", headers=keys["approver"]).status_code == 409


def spend(client: TestClient, keys: dict[str, Any], session: str, usd: float) -> None:
    """Record an LLM call of the session costing `usd`, as a remote agent reports it."""
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "kind": "llm.call",
        "at_us": 1_700_000_000_000_000,
        "session": session,
        "model": "gpt-x",
        "cost_nusd": int(usd * 1e9),
        "tokens": 100,
    }
    from clearance._clock import now_us

    event["at_us"] = now_us()
    r = client.post("/v1/events", headers=keys["agent"], json={"events": [event]})
    assert r.status_code == 200 and r.json()["appended"] == 1, r.text


def test_an_exhausted_budget_asks_and_an_extension_lets_calls_through(
    client: TestClient, keys: dict[str, Any], server_db: str
) -> None:
    assert check(client, keys, 5, session="b1")["decision"] == "allow"
    spend(client, keys, "b1", 1.5)
    asked = check(client, keys, 5, session="b1")
    assert asked["decision"] == "require_approval" and asked["rule_ids"][0] == "budget:session"
    shown = client.get(f"/v1/approvals/{asked['approval_id']}", headers=keys["approver"]).json()
    assert shown["budget"] == "session" and shown["grant_limits"] is None
    r = approve(client, keys, asked["approval_id"], extend={"usd": "2.50"}, note="finish the ticket")
    assert r.status_code == 200, r.text
    [g] = client.get("/v1/grants?session=b1", headers=keys["agent"]).json()
    assert (g["kind"], g["scope"], g["extend_usd"], g["tool"], g["status"]) == (
        "budget",
        "session",
        "2.5",
        None,
        "live",
    )
    assert check(client, keys, 5, session="b1")["decision"] == "allow"
    assert check(client, keys, 5, session="b2")["decision"] == "allow"  # a session of its own budget
    spend(client, keys, "b1", 2.1)  # 3.6 spent of 1 + 2.50
    assert check(client, keys, 5, session="b1")["decision"] == "require_approval"
    assert client.post(f"/v1/grants/{g['id']}/revoke", headers=keys["approver"]).status_code == 200
    assert [e["grant_id"] for e in records(server_db, "grant.revoked")] == [g["id"]]


def test_the_openapi_schema_describes_grants(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    assert components["GrantIn"]["properties"]["scope"]["enum"] == ["session", "agent", "requester"]
    assert "description" in components["GrantOut"]["properties"]["status"]
    assert {"/v1/grants", "/v1/grants/{grant_id}", "/v1/grants/{grant_id}/revoke"} <= set(schema["paths"])
    approval = components["ApprovalOut"]["properties"]
    assert "grant_limits" in approval and "budget" in approval
    assert json.dumps(components["DecisionIn"]["properties"]["grant"])


BLOCK_ALL = """\
version: 1
default: block
tools:
  "*":
    rules:
      - {id: block-all, effect: block}
budgets:
  session: {max_cost_usd: 5}
"""


def test_the_reserved_model_call_name_is_not_a_way_past_the_rules(client: TestClient, keys: dict[str, Any]) -> None:
    # Before: any agent key (or an ardenpy caller, or a forwarded MCP tool name) sending
    # `clearance.model_call` was decided by the budgets alone: allowed under `default: block`.
    rev = client.post("/v1/policies", headers=keys["admin"], json={"text": BLOCK_ALL}).json()["id"]
    assert client.post(f"/v1/policies/{rev}/activate", headers=keys["admin"], json={}).status_code == 200
    for name in ("clearance.model_call", "Clearance.Model-Call"):
        r = client.post("/v1/check", headers=keys["agent"], json={"tool": name, "args": {"model": "m"}})
        assert r.status_code == 200 and r.json()["decision"] == "block", r.text
        assert "reserved for Clearance's model-call gate" in r.json()["reason"]
        arden = client.post("/policy/check", headers=keys["agent"], json={"tool_name": name, "args": [], "kwargs": {}})
        assert arden.json()["decision"] == "block", arden.text
    gate = client.post(
        "/v1/check",
        headers=keys["agent"],
        json={"tool": "clearance.model_call", "args": {"model": "m"}, "model_gate": True},
    )
    assert gate.json()["decision"] == "allow"  # the SDK's gate: budgets decide (none spent)
