"""What a remote agent's decided records carry now reaches the server: grant, shadow, monitor hits.

A call the agent decided with a grant it holds says which (`grant_id`); what its shadow policy
decided (`shadow`) and the monitor rules that matched (`monitored`) come with it. A grant's use
counter is the server's alone: an agent cannot send one. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._guard._record import decided_event, prepare
from clearance._store import Database
from clearance._store import _grants as grants
from clearance._store._events import EventFilter, query
from clearance.policy import Decision, Effect, parse_policy
from clearance.policy._compile import Monitored

from ..server.conftest import activated

POLICY = (
    "version: 1\ntools:\n  refund:\n    rules:\n      - {id: big, when: 'args.amount > 1', effect: require_approval}\n"
)


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


def record(**more: Any) -> dict[str, Any]:
    """A decided record as a remote agent spools it: allowed by a grant, shadow and monitor hit beside."""
    policy = parse_policy(POLICY, "p.yaml")
    args = {"amount": 5}
    decision = Decision(
        Effect.ALLOW,
        "big; allowed by grant",
        ("big",),
        (),
        None,
        policy.revision,
        (Monitored("trial", Effect.BLOCK, "would block"),),
        None,
        "grt_" + "a" * 32,
    )
    shadow = Decision(Effect.BLOCK, "stricter", ("strict",), (), None, "rev_shadow")
    event = decided_event(
        1_000,
        agent="refunds",
        environment="test",
        session="s1",
        tool="refund",
        call_id="call_1",
        decision=decision,
        prepared=prepare(policy, "refund", args),
        facts={},
        approval_id=None,
        shadow=shadow,
        grant=grants.Use(decision.grant_id or "", "user:lena", None, None),
    )
    return {**json.loads(event.body), **more}


def test_a_decided_record_with_grant_shadow_and_monitor_hits_is_kept(
    client: TestClient, make_key: Any, server_db: str
) -> None:
    agent = activated(client, make_key, POLICY, agent="refunds")["agent"]
    sent = record()
    answer = client.post("/v1/events", headers=agent, json={"events": [sent]}).json()
    assert answer["refused"] == [] and answer["appended"] == 1
    db = Database(server_db)
    (kept,) = [e.body for e in query(db, EventFilter(kind="tool_call.decided"))]
    db.close()
    assert kept["grant_id"] == sent["grant_id"] and kept["shadow"] == sent["shadow"]
    assert kept["monitored"] == [{"rule_id": "trial", "would": "block", "reason": "would block"}]


@pytest.mark.parametrize(
    ("more", "problem"),
    [
        ({"grant_id": "grt_short"}, "grant_id"),
        ({"grant_id": 5}, "grant_id"),
        ({"grant_use": {"calls_used": 1, "total_used": "0"}}, "unknown fields for tool_call.decided: grant_use"),
        ({"budget": "session"}, "unknown fields for tool_call.decided: budget"),
    ],
    ids=["short-id", "number-id", "a-use-counter", "a-budget"],
)
def test_what_only_the_server_decides_is_refused(
    client: TestClient, make_key: Any, more: dict[str, Any], problem: str
) -> None:
    agent = activated(client, make_key, POLICY, agent="refunds")["agent"]
    answer = client.post("/v1/events", headers=agent, json={"events": [record(**more)]}).json()
    assert answer["appended"] == 0 and len(answer["refused"]) == 1
    assert problem in " ".join(answer["refused"][0]["problems"])
