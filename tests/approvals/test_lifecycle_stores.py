"""The approval lifecycle's SQL on both stores: SQLite and PostgreSQL (the server's)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clearance import ApprovalAlreadyExecuted, ApprovalForbidden, _decisions
from clearance._decisions import Decider
from clearance._guard._record import record_call
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store import _channels as channels
from clearance._store import _outbox as outbox
from clearance._store import _policies as policies
from clearance._store._events import verify
from clearance.policy import parse_policy

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        approval: {timeout: 10m, quorum: 2, approvers: [role:lead]}
      - {id: single, when: 'args.amount > 100 && args.amount <= 200', effect: require_approval}
"""
LEAD = Decider("user:lena", frozenset({"approver", "lead"}))
OTHER = Decider("user:omar", frozenset({"approver", "lead"}))


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    url = str(tmp_path / "s.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    store = Database(url)
    request.addfinalizer(store.close)
    rev = policies.create(store, POLICY, source="policy.yaml", author="t")
    policies.activate(store, rev.id, scope="default", by="t")
    return store


def ask(db: Database, amount: float, **kw: str) -> str:
    call = record_call(
        db,
        parse_policy(POLICY, "policy.yaml"),
        agent="refunds",
        environment="test",
        tool="issue_refund",
        args={"order_id": "A-1", "amount": amount},
        session="s",
        **kw,  # type: ignore[arg-type]
    )
    assert call.approval_id is not None
    return call.approval_id


def test_votes_edits_claims_and_listing(db: Database) -> None:
    quorum = ask(db, 900)
    assert _decisions.decide(db, quorum, approve=True, by=LEAD).status == "pending"
    decided = _decisions.decide(db, quorum, approve=True, by=OTHER)
    assert decided.status == "approved" and [v["by"] for v in decided.votes] == ["user:lena", "user:omar"]
    single = ask(db, 150)
    edited = _decisions.decide(db, single, approve=True, by=LEAD, args={"amount": 120}, note="less")
    assert edited.edited_args == {"order_id": "A-1", "amount": 120} and edited.edited_args_hash
    with pytest.raises(ApprovalForbidden):
        _decisions.decide(db, ask(db, 900), approve=True, by=Decider("user:pia", frozenset({"approver"})))
    claimed = approvals.claim(db, single, by="worker-1", now_us=1)
    assert claimed.claimed_by == "worker-1"
    with pytest.raises(ApprovalAlreadyExecuted):
        approvals.claim(db, single, by="worker-2", now_us=2)
    with db.write() as cur:
        assert approvals.finish(db, cur, single, "executed", now_us=3, result_json='"ok"', agent="refunds")
        assert not approvals.finish(db, cur, single, "executed", now_us=4)  # once
    assert approvals.get(db, single).result == "ok"
    denied = ask(db, 150)
    _decisions.decide(db, denied, approve=False, by=LEAD)
    assert approvals.claim_denial(db, denied, by="w", now_us=5) and not approvals.claim_denial(
        db, denied, by="w", now_us=6
    )
    assert [a.id for a in approvals.listing(db, status="approved", agent="refunds", unclaimed=True)] == [quorum]
    assert approvals.listing(db, status=None, agent="someone-else") == []
    assert verify(db).ok


def test_escalation_and_the_outbox(db: Database) -> None:
    approval_id = ask(db, 150, mode="webhook", webhook_url="http://127.0.0.1:9/hook")
    with db.write() as cur:  # due now
        cur.execute(db.sql("UPDATE approvals SET expires_at_us = 1 WHERE id = :id"), {"id": approval_id})
    assert [a.id for a in _decisions.sweep(db)] == [approval_id]
    [(message, attempts)] = outbox.for_approval(db, approval_id)
    assert message.event_type == "approval.expired" and json.loads(message.payload)["approval"]["id"] == approval_id
    assert attempts == []
    [leased] = outbox.claim_due(db, now_us=message.next_attempt_at_us + 1)
    assert outbox.claim_due(db, now_us=message.next_attempt_at_us + 2) == []  # leased: nobody else sends it
    after = outbox.record(
        db, leased, now_us=leased.next_attempt_at_us + 10, status_code=500, error="HTTP 500", duration_ms=1.5
    )
    assert after.status == "pending" and after.attempts == 1 and after.next_attempt_at_us > leased.next_attempt_at_us
    assert outbox.next_due(db) == after.next_attempt_at_us
    [again] = outbox.claim_due(db, now_us=after.next_attempt_at_us)
    done = outbox.record(db, again, now_us=after.next_attempt_at_us + 5, status_code=204, error=None, duration_ms=2.0)
    assert done.status == "delivered" and [a.status_code for a in outbox.for_approval(db, approval_id)[0][1]] == [
        500,
        204,
    ]


def test_channel_messages(db: Database) -> None:
    approval_id = ask(db, 150)
    at, lapse = 10**16, 60_000_000
    [(due, none)] = channels.due(db, "slack", now_us=at, stale_us=lapse)
    assert due.id == approval_id and none.ref is None
    assert channels.claim(db, approval_id, "slack", now_us=at, stale_us=lapse)
    assert not channels.claim(db, approval_id, "slack", now_us=at + 1, stale_us=lapse)  # one poster
    assert channels.due(db, "slack", now_us=at, stale_us=lapse) == []  # claimed
    assert [a.id for a, _ in channels.due(db, "email", now_us=at, stale_us=lapse)] == [approval_id]  # per channel
    channels.failed(db, approval_id, "slack", "down", now_us=at)  # the claim is let go
    assert channels.claim(db, approval_id, "slack", now_us=at + 2, stale_us=lapse)

    def shows(a: approvals.Approval) -> str:
        return str(a.status)

    channels.drawn(db, approval_id, "slack", state="pending", shows=shows, ref={"channel": "C1", "ts": "1.2"})
    assert channels.due(db, "slack", now_us=at, stale_us=lapse) == []
    _decisions.decide(db, approval_id, approve=False, by=LEAD)
    [(redraw, stale)] = channels.due(db, "slack", now_us=at, stale_us=lapse)  # the decision made it stale
    assert redraw.status == "denied" and stale.ref == {"channel": "C1", "ts": "1.2"} and stale.drawn == "pending"
    channels.drawn(db, approval_id, "slack", state="pending", shows=shows)  # drawn from a read before the change
    assert len(channels.due(db, "slack", now_us=at, stale_us=lapse)) == 1  # so it stays stale
    channels.drawn(db, approval_id, "slack", state="denied", shows=shows)
    assert channels.due(db, "slack", now_us=at, stale_us=lapse) == []
    assert channels.tally(db, "slack") == channels.Tally(messages=1, sent=3, failures=1, last_error="down")


def test_a_read_inside_a_write_keeps_the_write(db: Database) -> None:
    """On PostgreSQL a read ends with a rollback; inside a write it must not end the write."""
    approval_id = ask(db, 150)
    with db.write() as cur:
        cur.execute(db.sql("UPDATE approvals SET note = 'inside' WHERE id = :id"), {"id": approval_id})
        assert approvals.get(db, approval_id).note == "inside"  # a read within the transaction sees it
        cur.execute(db.sql("UPDATE approvals SET reason = 'kept' WHERE id = :id"), {"id": approval_id})
    after = approvals.get(db, approval_id)
    assert (after.note, after.reason) == ("inside", "kept")


def test_failed_deliveries_back_off_and_give_up(db: Database) -> None:
    approval_id = ask(db, 150, mode="webhook", webhook_url="http://127.0.0.1:9/hook")
    _decisions.decide(db, approval_id, approve=False, by=LEAD)
    now = outbox.for_approval(db, approval_id)[0][0].next_attempt_at_us
    delays = []
    for _ in range(outbox.MAX_ATTEMPTS):
        [message] = outbox.claim_due(db, now_us=now)
        after = outbox.record(db, message, now_us=now, status_code=503, error="HTTP 503", duration_ms=1.0)
        delays.append((after.next_attempt_at_us - now) // 1_000_000)
        now = after.next_attempt_at_us
    assert delays[:4] == [1, 2, 4, 8]  # exponential backoff…
    assert after.status == "failed" and after.attempts == outbox.MAX_ATTEMPTS  # …then given up
    assert outbox.claim_due(db, now_us=now + 10**12) == []
