"""Shadow policies in remote mode, against a real `clearance serve` process (SQLite and PostgreSQL).

A call the agent decides on its own is decided by the shadow from its snapshot too, and what
the shadow decided is recorded beside, so the server's shadow report covers it. A shadow that
needs facts for the tool is decided on the server (with the same enforced decision); when the
server cannot be reached the call is decided locally after all, recorded without a shadow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import clearance
from clearance._store import Database
from clearance._store import _policies as policies
from clearance._store import _shadow as shadows
from clearance._store._shadow_report import report
from clearance.policy import Effect

from .._wait import until
from ..server.conftest import Server
from ._agent import connect, refund, requests_made
from ._grants import give

SHADOW = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 20
        effect: require_approval
        approval: {timeout: 5m, grants: {scopes: [session, agent, requester], max_duration: 8h}}
      - {id: huge, when: 'args.amount > 1000', effect: block}
  lookup:
    rules:
      - {id: busy, when: 'facts.calls_1h > 100', effect: block}
"""


def test_calls_decided_by_the_agent_carry_the_shadow_decision(
    server: Server, store: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = connect(server, tmp_path)
    rev = policies.create(store, SHADOW, source="shadow.yaml", author="t")
    shadows.activate_shadow(store, rev.id, scope="default", by="t")
    until(lambda: gov.sync.state.shadow is not None, "the agent has the shadow")
    assert gov.sync.state.shadow is not None and gov.sync.state.shadow.revision == rev.id
    since = rev.created_at_us
    made = requests_made(monkeypatch)

    assert refund(gov, 60, order="A-60").effect is Effect.ALLOW  # the shadow would ask
    assert made == []  # decided here, shadow and all
    assert refund(gov, 1500, order="A-1500").effect is Effect.REQUIRE_APPROVAL  # asked the server
    assert gov.begin("lookup", {"q": "x"}, "s1").decision.effect is Effect.ALLOW  # the shadow needs facts
    assert made == ["POST /v1/check", "POST /v1/check"]
    grant = give(store, scope="agent")
    until(lambda: grant.id in gov.sync.state.grants.ids(), "the agent holds the grant")
    assert refund(gov, 70, order="A-70").effect is Effect.ALLOW
    assert made == ["POST /v1/check", "POST /v1/check"]

    clearance.flush()
    decided = {e["args"].get("order_id", e["tool"]): e for e in server.events(kind="tool_call.decided")}
    shadowed = {k: (e["decision"], e["shadow"]["decision"], e["shadow"]["rule_ids"]) for k, e in decided.items()}
    assert shadowed == {
        "A-60": ("allow", "require_approval", ["big"]),
        "A-1500": ("require_approval", "block", ["huge"]),  # on the server
        "lookup": ("allow", "allow", []),  # on the server, with its facts
        "A-70": ("allow", "allow", ["big"]),  # the shadow's approval: the held grant answers it too
    }
    assert decided["A-70"]["shadow"]["revision"] == rev.id and grant.id in decided["A-70"]["shadow"]["reason"]
    assert {decided[k]["shadow"]["revision"] for k in decided} == {rev.id}
    found = report(store, since_us=since, agent="refunds")
    assert found.calls == 4 and found.differing == 2
    differences = {(d.enforced, d.shadow, d.rule_id): d.count for d in found.differences}
    assert differences == {("allow", "require_approval", "big"): 1, ("require_approval", "block", "huge"): 1}


def test_a_shadow_that_needs_the_server_never_fails_the_call_when_it_is_gone(
    server: Server, store: Database, tmp_path: Path
) -> None:
    gov = connect(server, tmp_path)
    rev = policies.create(store, SHADOW, source="shadow.yaml", author="t")
    shadows.activate_shadow(store, rev.id, scope="default", by="t")
    until(lambda: gov.sync.state.shadow is not None, "the agent has the shadow")
    server.stop()
    looked = gov.begin("lookup", {"q": "x"}, "s1").decision
    assert looked.effect is Effect.ALLOW and looked.rule_ids == ()  # decided here after all, as before the shadow
    assert refund(gov, 60, order="A-60").effect is Effect.ALLOW  # its shadow needs nothing from the server
    server.start()
    clearance.flush()
    decided = {e["args"].get("order_id", e["tool"]): e for e in server.events(kind="tool_call.decided")}
    assert "shadow" not in decided["lookup"]  # the shadow could not be decided: not recorded as if it had
    assert decided["A-60"]["shadow"]["decision"] == "require_approval"


def test_a_shadow_cleared_on_the_server_leaves_the_agent(server: Server, store: Database, tmp_path: Path) -> None:
    gov = connect(server, tmp_path)
    rev = policies.create(store, SHADOW, source="shadow.yaml", author="t")
    shadows.activate_shadow(store, rev.id, scope="agent:refunds", by="t")
    until(lambda: gov.sync.state.shadow is not None, "the agent has the shadow")
    enforced = gov.sync.policy
    shadows.clear_shadow(store, scope="agent:refunds", by="t")
    until(lambda: gov.sync.state.shadow is None, "the shadow leaves the agent")
    assert gov.sync.policy is enforced
    clearance.flush()
    refund(gov, 60, order="A-60")
    clearance.flush()
    (last,) = [e for e in server.events(kind="tool_call.decided") if e["args"]["order_id"] == "A-60"]
    assert "shadow" not in last
