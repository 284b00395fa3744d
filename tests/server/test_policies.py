from __future__ import annotations

import threading
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._clock import ManualClock
from clearance._store import Database
from clearance._store._events import EventFilter, query, verify

V1 = "version: 1\ndefault: allow\n"
V2 = "version: 1\ndefault: block\n"
V3 = "version: 1\ndefault: require_approval\n"
BAD = "version: 1\ntools:\n  t:\n    rules:\n      - {id: r, when: 'args.x >', effect: nope}\n"


def test_revisions_are_content_addressed_and_rejected_drafts_are_kept(client: TestClient, make_key: Any) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    first = client.post("/v1/policies", headers=admin, json={"text": V1})
    assert first.status_code == 201 and first.json()["status"] == "valid" and first.json()["id"].startswith("rev_")
    again = client.post("/v1/policies", headers=admin, json={"text": V1})
    assert again.json()["id"] == first.json()["id"]
    bad = client.post("/v1/policies", headers=admin, json={"text": BAD, "source": "team.yaml"})
    assert bad.status_code == 422
    error = bad.json()["error"]
    assert error["code"] == "invalid_parameter" and "stored as rejected draft rev_" in error["message"]
    assert error["details"] == [
        {
            "location": "team.yaml:5:43",
            "rule_id": "r",
            "path": "tools.t.rules[0].effect",
            "message": "'effect' should be 'allow', 'require_approval' or 'block', not the text 'nope'",
        }
    ]
    draft_id = error["message"].rsplit(" ", 1)[1]
    listed = {r["id"]: r["status"] for r in client.get("/v1/policies", headers=admin).json()}
    assert listed == {first.json()["id"]: "valid", draft_id: "rejected"}
    r = client.post(f"/v1/policies/{draft_id}/activate", headers=admin, json={})
    assert r.status_code == 409 and "rejected draft" in r.json()["error"]["message"]
    full = client.get(f"/v1/policies/{draft_id}", headers=admin).json()
    assert full["text"] == BAD and full["problems"][0]["line"] == 5


def test_activation_resolution_snapshot_and_etag(client: TestClient, make_key: Any) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    agent = {"X-API-Key": make_key("agent", agent="refunds", environment="live")}
    other = {"X-API-Key": make_key("agent", agent="mailer", environment="test")}
    ids = [client.post("/v1/policies", headers=admin, json={"text": t}).json()["id"] for t in (V1, V2, V3)]
    assert client.get("/v1/policy/snapshot", headers=agent).status_code == 404  # nothing active yet
    assert client.post(f"/v1/policies/{ids[0]}/activate", headers=admin, json={}).json()["scope"] == "default"
    client.post(f"/v1/policies/{ids[1]}/activate", headers=admin, json={"environment": "live"})
    snap = client.get("/v1/policy/snapshot", headers=agent)
    assert snap.json()["revision"] == ids[1] and snap.json()["text"] == V2 and snap.headers["etag"] == f'"{ids[1]}"'
    assert client.get("/v1/policy/snapshot", headers=other).json()["revision"] == ids[0]
    client.post(f"/v1/policies/{ids[2]}/activate", headers=admin, json={"agent": "refunds"})
    assert client.get("/v1/policy/snapshot", headers=agent).json()["revision"] == ids[2]
    r = client.get("/v1/policy/snapshot", headers={**agent, "If-None-Match": f'"{ids[2]}"'})
    assert r.status_code == 304 and r.headers["etag"] == f'"{ids[2]}"'
    assert (
        client.post(
            f"/v1/policies/{ids[0]}/activate", headers=admin, json={"agent": "a", "environment": "live"}
        ).status_code
        == 422
    )
    assert client.post("/v1/policies/rev_nope/activate", headers=admin, json={}).status_code == 404
    listed = client.get("/v1/policies/assignments", headers=admin).json()
    assert [(a["scope"], a["revision_id"]) for a in listed] == [
        ("default", ids[0]),
        ("environment:live", ids[1]),
        ("agent:refunds", ids[2]),
    ]
    assert all(a["activated_by"].startswith("key:") and a["activated_at_us"] > 0 for a in listed)
    assert client.get("/v1/policies/assignments", headers=agent).status_code == 403


def test_diff_and_rollback(client: TestClient, make_key: Any, server_db: str) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    ids = [client.post("/v1/policies", headers=admin, json={"text": t}).json()["id"] for t in (V1, V2)]
    d = client.get(f"/v1/policies/{ids[1]}/diff", headers=admin).json()
    assert d["from"] == ids[0] and "-default: allow\n+default: block\n" in d["diff"]
    assert client.get(f"/v1/policies/{ids[0]}/diff", headers=admin).status_code == 404  # no parent
    assert client.post("/v1/policies/rollback", headers=admin, json={}).status_code == 409
    client.post(f"/v1/policies/{ids[0]}/activate", headers=admin, json={})
    client.post(f"/v1/policies/{ids[1]}/activate", headers=admin, json={})
    back = client.post("/v1/policies/rollback", headers=admin, json={})
    assert back.status_code == 200 and back.json()["revision"]["id"] == ids[0]
    db = Database(server_db)
    activations = [e.body for e in query(db, EventFilter(kind="policy.activated"))]
    assert [a["policy_revision"] for a in activations] == [ids[0], ids[1], ids[0]]
    assert activations[0]["scope"] == "default" and activations[0]["by"].startswith("key:")
    assert verify(db).ok
    db.close()


def test_agent_and_approver_keys_cannot_change_policy(client: TestClient, make_key: Any) -> None:
    for scopes in (("agent",), ("approver",), ("agent", "approver")):
        key = {"X-API-Key": make_key(*scopes)}
        assert client.post("/v1/policies", headers=key, json={"text": V1}).status_code == 403
        assert client.post("/v1/policies/rev_x/activate", headers=key, json={}).status_code == 403
        assert client.post("/v1/policies/rollback", headers=key, json={}).status_code == 403
        assert client.get("/v1/policies", headers=key).status_code == 403


def test_long_poll_returns_as_soon_as_a_revision_is_activated(
    clock: ManualClock, client: TestClient, make_key: Any
) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    ids = [client.post("/v1/policies", headers=admin, json={"text": t}).json()["id"] for t in (V1, V2)]
    client.post(f"/v1/policies/{ids[0]}/activate", headers=admin, json={})
    result: dict[str, Any] = {}

    def poll() -> None:
        r = client.get("/v1/policy/snapshot?wait=20", headers={**agent, "If-None-Match": f'"{ids[0]}"'})
        result.update(status=r.status_code, revision=r.json()["revision"])

    thread = threading.Thread(target=poll)
    thread.start()
    clock.wait_parked("long poll policy")  # held; the clock stands still, so no re-check or timeout answers it
    client.post(f"/v1/policies/{ids[1]}/activate", headers=admin, json={})
    thread.join(20)
    assert result["status"] == 200 and result["revision"] == ids[1]  # the activation's push did


def test_long_poll_times_out_with_304(clock: ManualClock, client: TestClient, make_key: Any) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    rev = client.post("/v1/policies", headers=admin, json={"text": V1}).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=admin, json={})
    result: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            r=client.get("/v1/policy/snapshot?wait=30", headers={**agent, "If-None-Match": f'"{rev}"'})
        )
    )
    thread.start()
    clock.wait_parked("long poll policy")
    clock.advance(30)
    thread.join(20)
    assert result["r"].status_code == 304
    assert client.get("/v1/policy/snapshot?wait=61", headers=agent).status_code == 422


@pytest.mark.postgres
def test_policies_on_postgresql(pg_url: str) -> None:
    from clearance._store import _keys as keys
    from clearance.server import ServerSettings, create_app

    db = Database(pg_url)
    _, admin_key = keys.create(db, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")
    _, agent_key = keys.create(db, name="b", scopes=["agent"], agent="bot", environment="test", created_by="t")
    db.close()
    with TestClient(create_app(ServerSettings(database_url=pg_url))) as client:
        admin, agent = {"X-API-Key": admin_key}, {"X-API-Key": agent_key}
        ids = [client.post("/v1/policies", headers=admin, json={"text": t}).json()["id"] for t in (V1, V2)]
        assert client.post("/v1/policies", headers=admin, json={"text": BAD}).status_code == 422
        client.post(f"/v1/policies/{ids[0]}/activate", headers=admin, json={})
        client.post(f"/v1/policies/{ids[1]}/activate", headers=admin, json={"agent": "bot"})
        assert client.get("/v1/policy/snapshot", headers=agent).json()["revision"] == ids[1]
        assert client.post("/v1/policies/rollback", headers=admin, json={"agent": "bot"}).status_code == 409
