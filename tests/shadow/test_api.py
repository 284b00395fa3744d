"""Shadow policies through the API, on SQLite and PostgreSQL: activation, /v1/check, the report,
promotion, and who may do what."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database, EventFilter
from clearance._store._events import query

from ..server.conftest import post_raw
from ._policies import ENFORCED, SHADOW, UNCOMPILABLE
from .test_report import HOSTILE

Headers = dict[str, str]


@pytest.fixture
def setup(client: TestClient, make_key: Any) -> dict[str, Any]:
    """The enforced policy active for everyone, the shadow stored; an admin's and the agent bot's keys."""
    admin = {"X-API-Key": make_key("admin", agent=None)}
    enforced = client.post("/v1/policies", headers=admin, json={"text": ENFORCED, "source": "enforced.yaml"})
    assert client.post(f"/v1/policies/{enforced.json()['id']}/activate", headers=admin, json={}).status_code == 200
    shadow = client.post("/v1/policies", headers=admin, json={"text": SHADOW, "source": "shadow.yaml"}).json()["id"]
    return {
        "admin": admin,
        "bot": {"X-API-Key": make_key("agent", agent="bot")},
        "enforced": enforced.json()["id"],
        "shadow": shadow,
    }


def check(client: TestClient, headers: Headers, amount: float, order: str = "A1") -> dict[str, Any]:
    r = client.post(
        "/v1/check",
        headers=headers,
        json={"tool": "issue_refund", "args": {"order_id": order, "amount": amount}, "session_id": "ses-1"},
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_the_report_route_is_not_taken_for_a_revision(client: TestClient, setup: dict[str, Any]) -> None:
    r = client.get("/v1/policies/shadow", headers=setup["admin"])
    assert r.status_code == 200, r.text
    assert r.json()["calls"] == 0 and r.json()["active"] == []
    assert client.get(f"/v1/policies/{setup['shadow']}", headers=setup["admin"]).json()["id"] == setup["shadow"]


def test_calls_are_decided_by_both_and_the_report_says_where_they_differed(
    client: TestClient, setup: dict[str, Any], server_db: str
) -> None:
    admin, bot = setup["admin"], setup["bot"]
    r = client.post(f"/v1/policies/{setup['shadow']}/shadow", headers=admin, json={"environment": "test"})
    assert r.status_code == 200, r.text
    assert (r.json()["scope"], r.json()["revision"]["id"]) == ("environment:test", setup["shadow"])
    got = [check(client, bot, amount) for amount in (10, 10, 150, 2000)]
    assert [g["decision"] for g in got] == ["allow", "allow", "allow", "block"]  # as enforced, never the shadow
    report = client.get("/v1/policies/shadow?since=1h", headers=admin).json()
    assert (report["calls"], report["differing"], report["unreadable"]) == (4, 3, 0)
    rows = [(d["enforced"], d["shadow"], d["rule_id"], d["count"]) for d in report["differences"]]
    assert rows == [
        ("allow", "block", "refund-over-100", 1),
        ("allow", "require_approval", "refund-again", 1),  # the second refund within the hour: facts.calls_1h
        ("block", "allow", None, 1),
    ]
    assert report["differences"][1]["examples"][0]["call_id"] == got[1]["call_id"]
    assert [(m["policy"], m["rule_id"], m["would"], m["count"]) for m in report["monitored"]] == [
        ("shadow", "shadow-watch", "require_approval", 2),
        ("enforced", "refund-watch", "block", 1),
    ]
    assert report["revisions"] == {setup["shadow"]: 4}
    assert [(a["scope"], a["revision_id"]) for a in report["active"]] == [("environment:test", setup["shadow"])]
    db = Database(server_db)
    try:
        decided = [e.body for e in query(db, EventFilter(kind="tool_call.decided"))]
    finally:
        db.close()
    assert [d["shadow"]["decision"] for d in decided] == ["allow", "require_approval", "block", "allow"]


def test_promote_makes_the_shadow_enforced_in_one_step(
    client: TestClient, setup: dict[str, Any], server_db: str
) -> None:
    admin, bot = setup["admin"], setup["bot"]
    client.post(f"/v1/policies/{setup['shadow']}/shadow", headers=admin, json={"environment": "test"})
    assert check(client, bot, 150)["decision"] == "allow"
    r = client.post("/v1/policies/shadow/promote", headers=admin, json={"environment": "test"})
    assert r.status_code == 200, r.text
    assert (r.json()["scope"], r.json()["revision"]["id"]) == ("environment:test", setup["shadow"])
    after = check(client, bot, 150)  # the next call is decided by the promoted revision
    assert (after["decision"], after["rule_ids"], after["policy_revision"]) == (
        "block",
        ["refund-over-100"],
        setup["shadow"],
    )
    assert client.get("/v1/policies/shadow", headers=admin).json()["active"] == []
    scopes = [(a["scope"], a["revision_id"]) for a in client.get("/v1/policies/assignments", headers=admin).json()]
    assert scopes == [("default", setup["enforced"]), ("environment:test", setup["shadow"])]
    db = Database(server_db)
    try:
        activated = [e.body for e in query(db, EventFilter(kind="policy.activated"))]
        last = [e.body for e in query(db, EventFilter(kind="tool_call.decided"))][-1]
    finally:
        db.close()
    assert [(a["scope"], a["policy_revision"]) for a in activated] == [
        ("default", setup["enforced"]),
        ("environment:test", setup["shadow"]),
    ]
    assert "shadow" not in last  # the slot is empty: nothing is decided in shadow any more
    again = client.post("/v1/policies/shadow/promote", headers=admin, json={"environment": "test"})
    assert again.status_code == 409 and "nothing to promote" in again.json()["error"]["message"]


def test_clear_stops_the_shadow(client: TestClient, setup: dict[str, Any]) -> None:
    admin, bot = setup["admin"], setup["bot"]
    client.post(f"/v1/policies/{setup['shadow']}/shadow", headers=admin, json={"agent": "bot"})
    r = client.delete("/v1/policies/shadow?agent=bot", headers=admin)
    assert r.status_code == 200 and r.json() == {"scope": "agent:bot", "revision_id": setup["shadow"]}
    check(client, bot, 150)
    assert client.get("/v1/policies/shadow", headers=admin).json()["calls"] == 0
    assert client.delete("/v1/policies/shadow?agent=bot", headers=admin).status_code == 404


def _stored_valid(server_db: str, text: str) -> str:
    db = Database(server_db)
    try:
        with db.write() as cur:
            cur.execute(
                db.sql(
                    "INSERT INTO policy_revisions (id, content_hash, source, text, author, parent, created_at_us,"
                    " status) VALUES ('rev_0123456789ab', 'h', 'old.yaml', :text, 'old', NULL, 1, 'valid')"
                ),
                {"text": text},
            )
    finally:
        db.close()
    return "rev_0123456789ab"


def test_what_cannot_be_shadowed_is_refused_with_a_clear_error(
    client: TestClient, setup: dict[str, Any], server_db: str
) -> None:
    admin = setup["admin"]
    broken = _stored_valid(server_db, UNCOMPILABLE)
    r = client.post(f"/v1/policies/{broken}/shadow", headers=admin, json={})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["message"].startswith(f"revision {broken} does not compile, so it cannot be activated in shadow")
    assert error["details"] and error["details"][0]["location"].startswith("old.yaml:7:")
    draft = client.post("/v1/policies", headers=admin, json={"text": UNCOMPILABLE}).json()["error"]["message"]
    draft_id = draft.rsplit(" ", 1)[-1]
    r = client.post(f"/v1/policies/{draft_id}/shadow", headers=admin, json={})
    assert r.status_code == 409 and "rejected draft" in r.json()["error"]["message"]
    assert client.post("/v1/policies/rev_ffffffffffff/shadow", headers=admin, json={}).status_code == 404
    both = client.post(f"/v1/policies/{setup['shadow']}/shadow", headers=admin, json={"agent": "a", "environment": "b"})
    assert both.status_code == 422
    assert client.delete("/v1/policies/shadow?agent=a&environment=b", headers=admin).status_code == 422
    assert client.post("/v1/policies/shadow/promote", headers=admin, json={"scope": "default"}).status_code == 422
    assert client.get("/v1/policies/shadow", headers=admin).json()["active"] == []


@pytest.mark.parametrize("since", ["yesterday", "0h", "-1h", "400d", "1e9d", "\u202e1h", ""])
def test_a_window_that_is_not_one_is_a_422(client: TestClient, setup: dict[str, Any], since: str) -> None:
    r = client.get("/v1/policies/shadow", headers=setup["admin"], params={"since": since})
    assert r.status_code == 422, r.text


def test_an_agent_key_cannot_change_a_shadow_nor_read_other_agents(
    client: TestClient, setup: dict[str, Any], make_key: Any
) -> None:
    admin, bot, shadow = setup["admin"], setup["bot"], setup["shadow"]
    both = {"X-API-Key": make_key("agent", "admin", agent="bot")}
    for headers in (bot, both):
        assert client.post(f"/v1/policies/{shadow}/shadow", headers=headers, json={}).status_code == 403
        assert client.post(f"/v1/policies/{shadow}/shadow", headers=headers, json={"agent": "bot"}).status_code == 403
        assert client.post("/v1/policies/shadow/promote", headers=headers, json={}).status_code == 403
        assert client.delete("/v1/policies/shadow", headers=headers).status_code == 403
    client.post(f"/v1/policies/{shadow}/shadow", headers=admin, json={"agent": "other"})
    client.post(f"/v1/policies/{shadow}/shadow", headers=admin, json={"agent": "bot"})
    client.post(f"/v1/policies/{shadow}/shadow", headers=admin, json={"environment": "live"})
    other = {"X-API-Key": make_key("agent", agent="other")}
    check(client, other, 150)
    check(client, bot, 150)
    assert client.get("/v1/policies/shadow?agent=other", headers=bot).status_code == 403
    own = client.get("/v1/policies/shadow", headers=bot).json()
    assert own["calls"] == 1 and own["differences"][0]["examples"][0]["agent"] == "bot"
    assert [a["scope"] for a in own["active"]] == ["agent:bot"]  # not other agents' nor other environments'
    assert client.get("/v1/policies/shadow", headers=admin).json()["calls"] == 2
    assert [a["scope"] for a in client.get("/v1/policies/shadow", headers=admin).json()["active"]] == [
        "environment:live",
        "agent:bot",
        "agent:other",
    ]


def test_hostile_arguments_come_back_intact_in_the_report(client: TestClient, setup: dict[str, Any]) -> None:
    admin = setup["admin"]
    client.post(f"/v1/policies/{setup['shadow']}/shadow", headers=admin, json={})
    check(client, setup["bot"], 150, order=HOSTILE)
    example = client.get("/v1/policies/shadow", headers=admin).json()["differences"][0]["examples"][0]
    assert example["args"] == {"order_id": HOSTILE, "amount": 150}


def test_a_shadow_that_no_longer_compiles_never_stops_deciding(
    client: TestClient, setup: dict[str, Any], server_db: str, caplog: pytest.LogCaptureFixture
) -> None:
    broken = _stored_valid(server_db, UNCOMPILABLE)
    db = Database(server_db)
    try:
        with db.write() as cur:  # activated by a version whose compiler took it
            cur.execute(
                db.sql(
                    "INSERT INTO policy_assignments (scope, revision_id, activated_at_us, activated_by)"
                    " VALUES ('shadow:default', :rev, 1, 'old')"
                ),
                {"rev": broken},
            )
    finally:
        db.close()
    with caplog.at_level("WARNING", logger="clearance.server"):
        got = [check(client, setup["bot"], amount) for amount in (150, 2000)]
    assert [g["decision"] for g in got] == ["allow", "block"]
    assert sum(f"the shadow policy {broken} does not compile" in r.getMessage() for r in caplog.records) == 1
    assert client.get("/v1/policies/shadow", headers=setup["admin"]).json()["calls"] == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/policies/shadow?agent=a%00b", None),
        ("GET", "/v1/policies/shadow?environment=Live", None),
        ("GET", "/v1/policies/shadow?examples=1000", None),
        ("DELETE", "/v1/policies/shadow?agent=", None),
        ("DELETE", "/v1/policies/shadow?environment=" + "x" * 41, None),
        ("POST", "/v1/policies/shadow/promote", {"agent": "a\x00"}),
        ("POST", "/v1/policies/shadow/promote", {"agent": "x" * 201}),
        ("POST", "/v1/policies/shadow/promote", [1]),
        ("POST", "/v1/policies/{rev}/shadow", {"environment": "a b"}),
        ("POST", "/v1/policies/{rev}/shadow", {"agent": "\ud800"}),
    ],
)
def test_hostile_targets_are_a_422_and_change_nothing(
    client: TestClient, setup: dict[str, Any], method: str, path: str, body: Any
) -> None:
    path = path.replace("{rev}", setup["shadow"])
    if body is None:
        r = client.request(method, path, headers=setup["admin"])
    else:
        r = post_raw(client, path, body, setup["admin"])
    assert r.status_code == 422, r.text
    assert client.get("/v1/policies/shadow", headers=setup["admin"]).json()["active"] == []


def test_a_person_without_the_approver_or_admin_role_reads_no_agent_s_calls(
    client: TestClient, setup: dict[str, Any]
) -> None:
    from ..server.test_users import PASSWORD

    admin, bot = setup["admin"], setup["bot"]
    assert client.post(f"/v1/policies/{setup['shadow']}/shadow", headers=admin, json={}).status_code == 200
    check(client, bot, 2000)
    body = {"username": "vera", "password": PASSWORD, "roles": ["support-lead"]}
    assert client.post("/v1/users", headers=admin, json=body).status_code == 201
    client.post("/v1/login", json={"username": "vera", "password": PASSWORD})
    try:
        r = client.get("/v1/policies/shadow")  # before: every agent's calls, with their arguments
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    finally:
        client.cookies.clear()
    assert client.get("/v1/policies/shadow", headers=bot).json()["calls"] == 1  # the agent's own
