"""Grants in remote mode against a real `clearance serve` process, on SQLite and PostgreSQL.

A grant reaches the agent with its snapshot; a call it covers is decided there, with no round
trip, and recorded with the grant's id. A revocation reaches a connected agent within a second.
A grant with a limit is counted on the server, so its calls go there, and fail closed when the
server cannot be reached.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import clearance
from clearance import ToolCallBlocked
from clearance._clock import ManualClock
from clearance._store import Database
from clearance._store import _grants as grants
from clearance.policy import Effect

from .._wait import until
from ..server.conftest import Server
from ._agent import POLICY, connect, holds, refund, requests_made
from ._grants import give


def test_a_grant_given_on_an_approval_reaches_the_agent_and_its_calls_need_no_round_trip(
    server: Server, store: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given: dict[str, Any] = {}

    def approve_with_grant(p: clearance.PendingApproval) -> None:
        def approve() -> None:
            r = httpx.post(
                f"{server.base}/v1/approvals/{p.approval_id}/approve",
                headers={"X-API-Key": server.approver},
                json={"grant": {"scope": "session", "duration": "1h", "constraints": {"amount": {"maximum": 500}}}},
            )
            assert r.status_code == 200, r.text
            (grant,) = [g for g in grants.listing(store, agent="refunds") if g.approval_id == p.approval_id]
            given.update(at=time.monotonic(), grant_id=grant.id)

        threading.Timer(0.2, approve).start()

    gov = connect(server, tmp_path)

    @clearance.guard(on_pending=approve_with_grant)
    def issue_refund(order_id: str, amount: float) -> str:
        return f"refunded {amount}"

    with clearance.session("s1"):
        assert issue_refund("A-1", 300) == "refunded 300"  # asked, and approved with a grant
    until(lambda: holds(gov, given.get("grant_id", "?")), "the agent holds the grant", timeout=10)
    print(f"\ngrant reached the agent {1000 * (time.monotonic() - given['at']):.0f} ms after the approval answered")
    made = requests_made(monkeypatch)
    with clearance.session("s1"):
        assert issue_refund("A-2", 250) == "refunded 250"
        assert issue_refund("A-3", 500) == "refunded 500"
    assert made == []  # decided in-process, with the grant
    # Outside the grant: another session, or past its constraint, asks the server.
    assert refund(gov, 250, session="s2", order="B-1").effect is Effect.REQUIRE_APPROVAL
    assert refund(gov, 501, order="B-2").effect is Effect.REQUIRE_APPROVAL
    assert made == ["POST /v1/check", "POST /v1/check"]
    clearance.flush()
    decided = {e["args"]["order_id"]: e for e in server.events(kind="tool_call.decided")}
    granted = {k: (e["session"], e["decision"], e.get("grant_id")) for k, e in decided.items()}
    assert granted == {
        "A-1": ("s1", "require_approval", None),
        "A-2": ("s1", "allow", given["grant_id"]),
        "A-3": ("s1", "allow", given["grant_id"]),
        "B-1": ("s2", "require_approval", None),
        "B-2": ("s1", "require_approval", None),
    }
    assert "grant_use" not in decided["A-2"]  # a grant without limits keeps no counter
    assert f"big refund; allowed by grant {given['grant_id']} from key:" in decided["A-2"]["reason"]


def test_requester_and_agent_scopes_are_respected(
    server: Server, store: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = connect(server, tmp_path)
    for_lena = give(store, scope="requester", requester="lena")
    until(lambda: holds(gov, for_lena.id), "the agent holds the grant")
    made = requests_made(monkeypatch)
    with clearance.session("s9", user="lena"):
        assert refund(gov, 300, session="s9").grant_id == for_lena.id
    with clearance.session("s9", user="omar"):
        assert refund(gov, 300, session="s9").effect is Effect.REQUIRE_APPROVAL
    assert refund(gov, 300, session="s9").effect is Effect.REQUIRE_APPROVAL  # acting for nobody
    assert made == ["POST /v1/check", "POST /v1/check"]
    everyone = give(store, scope="agent", rule_ids=("other-rule",))  # answers another rule's approval only
    until(lambda: holds(gov, everyone.id), "the agent holds the second grant")
    assert refund(gov, 300, session="s3").effect is Effect.REQUIRE_APPROVAL


def test_a_revocation_reaches_a_connected_agent_within_a_second(
    server: Server, store: Database, tmp_path: Path
) -> None:
    gov = connect(server, tmp_path)
    grant = give(store, scope="agent")
    until(lambda: holds(gov, grant.id), "the agent holds the grant")
    assert refund(gov, 300).grant_id == grant.id
    r = httpx.post(f"{server.base}/v1/grants/{grant.id}/revoke", headers={"X-API-Key": server.approver}, json={})
    assert r.status_code == 200
    revoked = time.monotonic()
    while (decision := refund(gov, 300)).effect is Effect.ALLOW:
        assert decision.grant_id == grant.id
        assert time.monotonic() - revoked < 5, "the agent still uses the revoked grant"
        time.sleep(0.005)
    took = time.monotonic() - revoked
    print(f"\nrevoked through the API: the agent stopped using the grant {1000 * took:.0f} ms after the revoke")
    assert decision.effect is Effect.REQUIRE_APPROVAL  # asked the server, which found no grant
    # Revoked straight on the store (another process: the CLI, another replica) it arrives too.
    second = give(store, scope="agent")
    until(lambda: holds(gov, second.id), "the agent holds the second grant")
    grants.revoke(store, second.id, by="user:lena")
    revoked = time.monotonic()
    until(lambda: refund(gov, 300, session="s4").effect is not Effect.ALLOW, "the second revocation arrives", 5)
    print(f"revoked on the store: the agent stopped using it {1000 * (time.monotonic() - revoked):.0f} ms after")


def test_limited_grants_are_counted_on_the_server_even_by_50_racing_calls(
    server: Server, store: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = connect(server, tmp_path)
    limited = give(store, tool="tip", rule_ids=("tip",), max_calls=5)
    until(lambda: gov.sync.state.grants.counts("tip"), "the agent knows of the limited grant")
    assert not holds(gov, limited.id)  # known, never used here
    made = requests_made(monkeypatch)
    with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
        decisions = list(pool.map(lambda i: gov.begin("tip", {"amount": 1}, f"s{i}").decision, range(50)))
    assert made.count("POST /v1/check") == 50
    allowed = [d for d in decisions if d.effect is Effect.ALLOW]
    assert len(allowed) == 5 and all(d.grant_id == limited.id for d in allowed)  # the server says which
    assert sum(d.effect is Effect.REQUIRE_APPROVAL for d in decisions) == 45
    after = grants.get(store, limited.id)
    assert after.calls_used == 5 and after.status(after.created_at_us) == "exhausted"
    uses = [e for e in server.events(kind="tool_call.decided") if e.get("grant_id") == limited.id]
    assert sorted(e["grant_use"]["calls_used"] for e in uses) == [1, 2, 3, 4, 5]


def test_server_gone_time_only_grants_hold_until_they_expire_limited_ones_fail_closed(
    clock: ManualClock, server: Server, store: Database, tmp_path: Path
) -> None:
    gov = connect(server, tmp_path)
    timed = give(store, scope="agent", seconds=600)
    limited = give(store, tool="tip", rule_ids=("tip",), max_calls=100)
    until(lambda: holds(gov, timed.id) and gov.sync.state.grants.counts("tip"), "the agent holds the grants")
    server.stop()
    # A revocation now could not reach the agent: the grant it holds still lets calls through.
    assert refund(gov, 300).grant_id == timed.id
    tip = gov.begin("tip", {"amount": 1}, "s1").decision
    assert tip.effect is Effect.BLOCK and tip.rule_ids == ("server_unreachable",)  # its counter is the server's
    clock.advance(601)  # past its expiry, on the agent's clock
    after = refund(gov, 300)
    assert after.effect is Effect.BLOCK and after.rule_ids == ("server_unreachable",)
    assert limited.id not in gov.sync.state.grants.ids()


def test_blocking_rules_still_block_a_granted_tool(server: Server, store: Database, tmp_path: Path) -> None:
    server.publish(POLICY.replace("  tip:", "      - {id: no, when: 'args.order_id == \"X\"', effect: block}\n  tip:"))
    gov = connect(server, tmp_path)
    grant = give(store, scope="agent")
    until(lambda: holds(gov, grant.id), "the agent holds the grant")
    assert refund(gov, 300).grant_id == grant.id
    blocked = gov.begin("issue_refund", {"order_id": "X", "amount": 300}, "s1").decision
    assert blocked.effect is Effect.BLOCK and blocked.grant_id is None
    with pytest.raises(ToolCallBlocked):

        @clearance.guard
        def issue_refund(order_id: str, amount: float) -> str:
            return "refunded"

        issue_refund("X", 300)


def test_an_agent_started_from_a_snapshot_saved_before_grants_gets_them_once_connected(
    server: Server, store: Database, tmp_path: Path
) -> None:
    rev = httpx.get(f"{server.base}/v1/policy/snapshot", headers={"X-API-Key": server.agent}).json()
    cache = tmp_path / "spool" / "s.snapshot.json"
    cache.parent.mkdir()
    cache.write_text(json.dumps({k: rev[k] for k in ("revision", "content_hash", "source", "text")}))  # a v1 agent's
    grant = give(store, scope="agent")
    server.stop()
    gov = connect(server, tmp_path)  # from the saved snapshot: no grants, so nothing is let through unasked
    assert gov.sync.policy.revision == rev["revision"] and gov.sync.state.grants.ids() == []
    blocked = refund(gov, 300)
    assert blocked.effect is Effect.BLOCK and blocked.rule_ids == ("server_unreachable",)
    server.start()
    until(lambda: holds(gov, grant.id), "the agent gets the grant once the server is back", timeout=60)
    assert refund(gov, 300).grant_id == grant.id
