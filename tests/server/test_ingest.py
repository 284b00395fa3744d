from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance.store import Database
from clearance.store._events import EventFilter, new_id, query, verify


def event(kind: str = "tool_call.finished", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1,
        "id": "evt_" + new_id("evt")[4:],
        "kind": kind,
        "at_us": time.time_ns() // 1000,
        "session": "s1",
    }
    if kind == "tool_call.finished":
        base.update(tool="t", call_id="call_x", decision="ok", duration_ms=1.5)
    if kind == "llm.call":
        base.update(
            model="gpt-4o",
            input_tokens=10,
            output_tokens=2,
            tokens=12,
            cost_usd="0.001",
            cost_nusd=1_000_000,
            priced=True,
        )
    return {**base, **fields}


def ingested(db: Database) -> list[Any]:
    """The agents' events (not the key.created records of the keys the test made)."""
    return [e for e in query(db, EventFilter()) if not e.body["kind"].startswith("key.")]


def test_ingest_is_idempotent_and_chained(client: TestClient, make_key: Any, server_db: str) -> None:
    agent = {"X-API-Key": make_key("agent", agent="refunds", environment="live")}
    batch = [event(), event("llm.call"), event(decision="error", error="boom")]
    assert client.post("/v1/events", headers=agent, json={"events": batch}).json() == {"appended": 3, "duplicates": 0}
    again = client.post("/v1/events", headers=agent, json={"events": [*batch, event()]}).json()
    assert again == {"appended": 1, "duplicates": 3}
    twice_in_one = event()
    assert client.post("/v1/events", headers=agent, json={"events": [twice_in_one, twice_in_one]}).json() == {
        "appended": 1,
        "duplicates": 1,
    }
    db = Database(server_db)
    stored = [e.body for e in ingested(db)]
    assert len(stored) == 5 and verify(db).ok
    assert {(e["agent"], e["environment"]) for e in stored} == {("refunds", "live")}
    assert stored[1]["kind"] == "llm.call" and "call_id" not in stored[1]
    db.close()


def test_identity_comes_from_the_key(client: TestClient, make_key: Any, server_db: str) -> None:
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    forged = event(agent="someone-else", environment="live")
    assert client.post("/v1/events", headers=agent, json={"events": [forged]}).status_code == 200
    db = Database(server_db)
    [stored] = [e.body for e in ingested(db)]
    assert (stored["agent"], stored["environment"]) == ("refunds", "test")
    db.close()


@pytest.mark.parametrize(
    "bad, location",
    [
        (event(kind="approval.decided"), "body.events.1.kind"),
        (event(kind="policy.activated"), "body.events.1.kind"),
        (event(id="evt_short"), "body.events.1.id"),
        (event(at_us=-1), "body.events.1.at_us"),
        (event(colour="red"), "body.events.1"),
        (event(cost_nusd=-5), "body.events.1.cost_nusd"),
    ],
)
def test_bad_events_are_rejected_whole(
    client: TestClient, make_key: Any, bad: dict[str, Any], location: str, server_db: str
) -> None:
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    r = client.post("/v1/events", headers=agent, json={"events": [event(), bad]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["location"] == location
    db = Database(server_db)
    assert ingested(db) == []  # nothing of the batch was stored
    db.close()


def test_only_agent_keys_ingest_and_batches_are_bounded(client: TestClient, make_key: Any) -> None:
    assert (
        client.post(
            "/v1/events", headers={"X-API-Key": make_key("admin", agent=None)}, json={"events": [event()]}
        ).status_code
        == 403
    )
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    assert client.post("/v1/events", headers=agent, json={"events": []}).status_code == 422
