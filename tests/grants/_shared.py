"""What the grant tests share: a policy that grants, a store on SQLite or PostgreSQL, calls, records."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from clearance import _decisions
from clearance._decisions import Decider
from clearance._granting import GrantRequest
from clearance._guard._record import RecordedCall, llm_event, record_call
from clearance._pricing import ModelPrice
from clearance._store import Approval, Database
from clearance._store import _events as events
from clearance._store import _policies as policies
from clearance.policy import Policy, parse_policy

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval:
          approvers: [role:lead]
          grants: {scopes: [session, agent, requester], max_duration: 8h, max_calls: 20, max_total: {amount: 5000}}
      - id: bigger
        when: args.amount > 600
        effect: require_approval
        approval: {approvers: [role:lead], grants: {scopes: [session, agent, requester]}}
      - id: huge
        when: args.amount > 2000
        effect: block
  tip:
    params: {amount: number}
    rules:
      - id: tip
        effect: require_approval
        approval: {grants: {scopes: [session, agent], max_duration: 1h, max_total: {amount: 0.3}}}
  lookup:
    params: {key: string}
    rules:
      - id: look
        effect: require_approval
        approval: {grants: {scopes: [session, agent], max_duration: 1h}}
  plain:
    rules:
      - id: plain
        effect: require_approval
  send_note:
    rules:
      - id: note
        effect: require_approval
        approval: {grants: {scopes: [session, agent]}}
"""
LEAD = Decider("user:lena", frozenset({"approver", "lead"}))
OTHER = Decider("user:omar", frozenset({"approver", "lead"}))


def open_store(request: pytest.FixtureRequest, tmp_path: Path, kind: str, text: str = POLICY) -> Database:
    """A store on SQLite (a file in `tmp_path`) or PostgreSQL (a fresh schema), with `text` active."""
    url = str(tmp_path / "grants.db") if kind == "sqlite" else str(request.getfixturevalue("pg_url"))
    store = Database(url)
    request.addfinalizer(store.close)
    rev = policies.create(store, text, source="policy.yaml", author="t")
    policies.activate(store, rev.id, scope="default", by="t")
    return store


def call(
    db: Database,
    args: dict[str, Any],
    *,
    tool: str = "issue_refund",
    session: str = "s1",
    agent: str = "refunds",
    environment: str = "test",
    requested_by: str | None = None,
    policy: Policy | None = None,
) -> RecordedCall:
    """Decide and record one call, as the guard does."""
    return record_call(
        db,
        policy or parse_policy(POLICY, "policy.yaml"),
        agent=agent,
        environment=environment,
        tool=tool,
        args=args,
        session=session,
        requested_by=requested_by,
    )


def refund(db: Database, amount: Any, order_id: str = "A-1", **kw: Any) -> RecordedCall:
    """An `issue_refund` call."""
    return call(db, {"order_id": order_id, "amount": amount}, **kw)


def granted(db: Database, first: RecordedCall, request: GrantRequest, *, by: Decider = LEAD) -> str:
    """Approve the approval `first` asked for, granting `request`; the grant's id."""
    assert first.approval_id is not None, first.decision
    decided = _decisions.decide(db, first.approval_id, approve=True, by=by, grant=request)
    assert decided.status == "approved"
    [record] = [r for r in records(db, "approval.decided") if r["approval_id"] == first.approval_id]
    grant_id: str = record["grant_id"]
    return grant_id


def spend(db: Database, usd: str, *, session: str = "s1", agent: str = "refunds") -> None:
    """Record one model call in `session` that cost `usd`."""
    per_mtok = Decimal(usd) * 500_000  # one input and one output token
    event, _ = llm_event(
        agent=agent,
        environment="test",
        session=session,
        model="m",
        provider=None,
        input_tokens=1,
        output_tokens=1,
        cached_input_tokens=0,
        reasoning_tokens=0,
        latency_ms=None,
        overrides={"m": ModelPrice(input_per_mtok=per_mtok, output_per_mtok=per_mtok)},
    )
    with db.write() as cur:
        events.append(db, cur, [event])


def records(db: Database, kind: str) -> list[dict[str, Any]]:
    """The bodies of every record of `kind`, oldest first."""
    with db.read() as cur:
        cur.execute(db.sql("SELECT body FROM events WHERE kind = :kind ORDER BY seq"), {"kind": kind})
        return [json.loads(row[0]) for row in cur.fetchall()]


def decided(db: Database, call_id: str) -> dict[str, Any]:
    """The `tool_call.decided` record of a call."""
    [body] = [r for r in records(db, "tool_call.decided") if r["call_id"] == call_id]
    return body


def grant_rows(db: Database) -> int:
    with db.read() as cur:
        cur.execute("SELECT COUNT(*) FROM grants")
        row = cur.fetchone()
    return int(row[0])


def pending(db: Database, approval: Approval | str) -> bool:
    from clearance._store import _approvals as approvals

    approval_id = approval if isinstance(approval, str) else approval.id
    return approvals.get(db, approval_id).status == "pending"
