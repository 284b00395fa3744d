"""What the API answers about a call whose records were archived (issue 18), on SQLite and PostgreSQL.

The approval (a mutable row of its own) still answers; the call's records, its session's replay
and its chain positions answer 404 or an empty page, never 5xx; the chain verifies from the
archive boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance import _archive
from clearance._clock import ManualClock, now_us
from clearance._store import Database

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 30m}}
"""
DAY_S = 86_400


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


def test_a_call_whose_records_are_archived_answers_cleanly(
    clock: ManualClock, client: TestClient, make_key: Any, server_db: str, tmp_path: Path
) -> None:
    admin = {"X-API-Key": make_key("admin", agent=None)}
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    approver = {"X-API-Key": make_key("approver", agent=None)}
    rev = client.post("/v1/policies", headers=admin, json={"text": POLICY}).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=admin, json={})
    asked = client.post(
        "/v1/check", headers=agent, json={"tool": "issue_refund", "args": {"amount": 900}, "session_id": "old"}
    ).json()
    apr, call_id = asked["approval_id"], asked["call_id"]
    assert client.post(f"/v1/approvals/{apr}/approve", headers=approver, json={"note": "ok"}).status_code == 200
    clock.advance(100 * DAY_S)
    assert (
        client.post("/v1/check", headers=agent, json={"tool": "issue_refund", "args": {"amount": 1}}).json()["decision"]
        == "allow"
    )

    db = Database(server_db)
    try:
        cut = now_us() - 90 * DAY_S * 10**6
        # past_sinks: the server's metrics sink may not have passed the call's records yet
        done = _archive.archive(db, tmp_path / "arch", before_us=cut, past_sinks=True)
        with db.read() as cur:
            cur.execute("SELECT MIN(seq) FROM events")
            first_left = int(cur.fetchone()[0])
    finally:
        db.close()
    assert done.records > 0 and first_left > done.start_seq

    got = client.get(f"/v1/approvals/{apr}", headers=approver)
    assert got.status_code == 200 and got.json()["status"] == "approved"
    decided = client.get("/v1/decisions", headers=approver)
    assert decided.status_code == 200 and [d["approval_id"] for d in decided.json()["decisions"]] == [apr]
    calls = client.get("/v1/calls", params={"call_id": call_id}, headers=approver)
    assert calls.status_code == 200
    left = [s for c in calls.json()["calls"] for s in c["steps"]]  # a record the sweeper wrote since may stay
    assert all(s["at_us"] >= cut and s["kind"] != "tool_call.decided" for s in left), left
    assert client.get("/v1/events", params={"call_id": call_id}, headers=approver).status_code == 200
    for path in ("/v1/events/1", f"/v1/events/{done.start_seq}", "/v1/sessions/old", "/v1/replay?session=old"):
        r = client.get(path, headers=approver)
        assert r.status_code == 404 and r.json()["error"]["code"] == "resource_not_found", path
    assert client.get(f"/status/{call_id}", headers=approver).status_code == 404
    assert client.get(f"/status/{apr}", headers=approver).json()["status"] == "approved"
    again = client.post(f"/v1/approvals/{apr}/deny", headers=approver)
    assert again.status_code == 409  # decided, whether or not its records are still here
    receipt = client.get(f"/v1/approvals/{apr}/receipt", headers=approver)
    assert receipt.status_code == 409 and "its decision's record is archived" in receipt.json()["error"]["message"]
    here = client.get(f"/v1/events/{first_left}", headers=approver).json()
    assert here["chain"]["verified"] is True and here["chain"]["problem"] is None
    verified = client.get("/v1/audit/verify", headers=admin).json()
    assert verified["ok"] is True and verified["checked"] >= 1
