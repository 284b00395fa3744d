"""The approval lifecycle on the embedded store: edits, notes, groups, quorum, escalation, refusals."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

import clearance
from clearance import (
    ApprovalAlreadyDecided,
    ApprovalAlreadyExecuted,
    ApprovalEditRejected,
    ApprovalForbidden,
    ApprovalNotFound,
    ApprovalTimeout,
    _decisions,
)
from clearance._clock import ManualClock
from clearance._decisions import Decider
from clearance._guard._governor import Governor
from clearance._store import EventFilter
from clearance._store import _approvals as approvals
from clearance._store._events import query, verify

POLICY = """
version: 1
tools:
  issue_refund:
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval: {timeout: %s %s}
      - id: huge
        when: args.amount > 5000
        effect: block
        reason: Refunds over $5000 are never issued
      - id: cap
        when: facts.sum_24h_amount + args.amount > 10000
        effect: block
        reason: daily cap
redact:
  issue_refund: [/card]
"""

LEAD = Decider("user:lena", frozenset({"approver", "support-lead"}))
OTHER = Decider("user:omar", frozenset({"approver", "support-lead"}))
PLAIN = Decider("user:pia", frozenset({"approver"}))


def setup(configure: Callable[..., Governor], timeout: str = "10m", extra: str = "") -> Governor:
    return configure(POLICY % (timeout, extra and f", {extra}"))


def refund(ran: list[Any]) -> Callable[..., str]:
    @clearance.guard
    def issue_refund(order_id: str, amount: float, card: str = "none") -> str:
        approval = clearance.current_approval()
        ran.append((order_id, amount, card, approval.note if approval else None))
        return f"refunded {amount}"

    return issue_refund


def run_in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # the test inspects it
            out["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    return thread, out


def pending(gov: Governor, timeout: float = 10) -> approvals.Approval:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = approvals.listing(gov.db)
        if found:
            return found[0]
        time.sleep(0.01)
    raise AssertionError("no approval appeared")


def kinds(gov: Governor, call_id: str) -> list[str]:
    return [e.body["kind"] for e in query(gov.db, EventFilter(call_id=call_id))]


def test_an_approver_edits_the_arguments_and_the_edit_runs(configure: Callable[..., Governor]) -> None:
    gov = setup(configure)
    ran: list[Any] = []
    issue_refund = refund(ran)
    thread, out = run_in_thread(lambda: issue_refund("A-1", 850, card="4111-1111"))
    a = pending(gov)
    assert a.shown_args["card"] == "[REDACTED]"
    decided = _decisions.decide(
        gov.db, a.id, approve=True, by=LEAD, note="capped at 150 per policy", args={"amount": 150, "card": "[REDACTED]"}
    )
    assert decided.status == "approved" and decided.edited_args == {
        "order_id": "A-1",
        "amount": 150,
        "card": "4111-1111",
    }
    thread.join(10)
    assert out == {"result": "refunded 150.0"}
    # It ran with the edit, as a float (the parameter's type), with the hidden card number kept.
    assert ran == [("A-1", 150.0, "4111-1111", "capped at 150 per policy")]
    final = approvals.get(gov.db, a.id)
    assert final.status == "executed" and final.result == "refunded 150.0" and final.claimed_by.startswith("agent:")
    gov.flush()
    assert kinds(gov, a.call_id) == [
        "tool_call.decided",
        "approval.requested",
        "approval.decided",
        "tool_call.finished",
        "approval.executed",
    ]
    events = {e.body["kind"]: e.body for e in query(gov.db, EventFilter(call_id=a.call_id))}
    decided_event = events["approval.decided"]
    assert decided_event["edited_args"] == {"order_id": "A-1", "amount": 150, "card": "[REDACTED]"}
    assert decided_event["changes"] == [{"arg": "amount", "from": 850, "to": 150}]
    assert "4111" not in str(events)  # the card number is never recorded, before or after the edit
    assert events["tool_call.finished"]["executed_args_hash"] == final.edited_args_hash != a.args_hash
    assert events["approval.executed"]["by"] == final.claimed_by
    assert verify(gov.db).ok


@pytest.mark.parametrize(
    "edit, problem",
    [
        ({"amount": "a lot"}, 'amount: expected a number, got "a lot"'),
        ({"amount": True}, "amount: expected a number, got true"),
        ({"currency": "EUR"}, "currency: the call has no such argument"),
        ({"order_id": 42}, "order_id: expected a string, got 42"),
        ({"amount": 6000}, "policy blocks the edited call: Refunds over $5000 are never issued"),
    ],
)
def test_a_bad_edit_is_refused_leaves_the_call_pending_and_is_audited(
    configure: Callable[..., Governor], edit: dict[str, Any], problem: str
) -> None:
    gov = setup(configure)
    ran: list[Any] = []
    issue_refund = refund(ran)
    thread, out = run_in_thread(lambda: issue_refund("A-2", 850))
    a = pending(gov)
    with pytest.raises(ApprovalEditRejected) as refused:
        _decisions.decide(gov.db, a.id, approve=True, by=LEAD, args=edit)
    assert refused.value.problems == [problem]
    assert approvals.get(gov.db, a.id).status == "pending"
    audit = [e.body for e in query(gov.db, EventFilter(kind="approval.refused"))]
    assert audit[-1]["by"] == "user:lena" and problem in audit[-1]["reason"]
    _decisions.decide(gov.db, a.id, approve=False, by=LEAD, note="no")
    thread.join(10)
    assert ran == [] and isinstance(out["error"], clearance.ApprovalDenied)


def test_an_edit_that_itself_needs_approval_counts_as_approved(configure: Callable[..., Governor]) -> None:
    gov = setup(configure)
    ran: list[Any] = []
    issue_refund = refund(ran)
    thread, _ = run_in_thread(lambda: issue_refund("A-3", 900))
    a = pending(gov)
    _decisions.decide(gov.db, a.id, approve=True, by=LEAD, args={"amount": 700})  # still over 200
    thread.join(10)
    assert ran == [("A-3", 700.0, "none", None)]


def test_the_edit_is_decided_with_facts_that_leave_out_the_call_itself(configure: Callable[..., Governor]) -> None:
    gov = setup(configure)
    ran: list[Any] = []
    issue_refund = refund(ran)
    issue_refund("B-0", 199)  # allowed; counts towards the 10,000 daily cap
    thread, _ = run_in_thread(lambda: issue_refund("B-1", 4900))
    a = pending(gov)
    # 199 + 4,950 stays under the cap; counting the pending 4,900 as well would block it.
    _decisions.decide(gov.db, a.id, approve=True, by=LEAD, args={"amount": 4950})
    thread.join(10)
    assert ran[-1][1] == 4950.0


def test_deny_with_a_note_and_the_note_reaches_the_agent(configure: Callable[..., Governor]) -> None:
    gov = setup(configure)
    issue_refund = refund([])
    thread, out = run_in_thread(lambda: issue_refund("C-1", 900))
    a = pending(gov)
    with pytest.raises(ApprovalEditRejected):
        _decisions.decide(gov.db, a.id, approve=False, by=LEAD, args={"amount": 10})
    _decisions.decide(gov.db, a.id, approve=False, by=LEAD, note="customer already refunded")
    thread.join(10)
    error = out["error"]
    assert isinstance(error, clearance.ApprovalDenied) and error.note == "customer already refunded"
    assert "customer already refunded" in str(error)


def test_approver_groups_requester_and_agent_are_enforced(configure: Callable[..., Governor]) -> None:
    gov = setup(configure, extra="approvers: [role:support-lead]")
    ran: list[Any] = []
    issue_refund = refund(ran)

    def call() -> str:
        with clearance.session(user="lena"):
            return issue_refund("D-1", 900)

    thread, _ = run_in_thread(call)
    a = pending(gov)
    assert a.requested_by == "lena" and a.approvers == ("role:support-lead",)
    refusals = [
        (PLAIN, "only role:support-lead may decide"),
        (LEAD, "lena requested this call and cannot decide it"),
        (Decider("key:bot", frozenset({"approver"}), agent="test-agent"), "requesting agent"),
        (Decider("key:reader", frozenset({"admin"})), "only approvers decide"),
    ]
    for who, why in refusals:
        with pytest.raises(ApprovalForbidden, match=why):
            _decisions.decide(gov.db, a.id, approve=True, by=who)
    assert approvals.get(gov.db, a.id).status == "pending"
    assert len(list(query(gov.db, EventFilter(kind="approval.refused")))) == 4
    _decisions.decide(gov.db, a.id, approve=True, by=OTHER)
    thread.join(10)
    assert len(ran) == 1


def test_a_quorum_needs_that_many_different_approvers(clock: ManualClock, configure: Callable[..., Governor]) -> None:
    gov = setup(configure, extra="quorum: 2")
    ran: list[Any] = []
    issue_refund = refund(ran)
    thread, out = run_in_thread(lambda: issue_refund("E-1", 900))
    a = pending(gov)
    first = _decisions.decide(gov.db, a.id, approve=True, by=LEAD, note="ok by me")
    assert first.status == "pending" and [v["by"] for v in first.votes] == ["user:lena"]
    with pytest.raises(ApprovalAlreadyDecided, match="already approved"):
        _decisions.decide(gov.db, a.id, approve=True, by=LEAD)
    with pytest.raises(ApprovalEditRejected, match="edits need one approver"):
        _decisions.decide(gov.db, a.id, approve=True, by=OTHER, args={"amount": 100})
    clock.advance(0)  # wake the agent: it reads the approval again…
    clock.wait_parked("approval")  # …and goes back to waiting: one vote does not run it
    assert ran == [] and thread.is_alive()
    second = _decisions.decide(gov.db, a.id, approve=True, by=OTHER)
    thread.join(10)
    assert second.status == "approved" and second.decided_by == "user:omar" and out["result"] == "refunded 900"
    assert kinds(gov, a.call_id).count("approval.voted") == 1


def test_one_denial_denies_a_quorum(configure: Callable[..., Governor]) -> None:
    gov = setup(configure, extra="quorum: 3")
    issue_refund = refund([])
    thread, out = run_in_thread(lambda: issue_refund("E-2", 900))
    a = pending(gov)
    _decisions.decide(gov.db, a.id, approve=True, by=LEAD)
    _decisions.decide(gov.db, a.id, approve=False, by=OTHER, note="not this one")
    thread.join(10)
    assert isinstance(out["error"], clearance.ApprovalDenied)


def test_a_timeout_escalates_then_denies(clock: ManualClock, configure: Callable[..., Governor]) -> None:
    gov = setup(
        configure,
        timeout="1s",
        extra="approvers: [role:support-lead], on_timeout: escalate, escalate_to: [role:finance],"
        " escalation_timeout: 1s",
    )
    issue_refund = refund([])
    thread, out = run_in_thread(lambda: issue_refund("F-1", 900))
    a = pending(gov)
    clock.wait_parked("approval")
    clock.advance(1.2)
    clock.wait_parked("approval")  # the agent saw its time was up, escalated it, and waits again
    _decisions.sweep(gov.db)  # escalated once, whoever looks
    now = approvals.get(gov.db, a.id)
    assert now.status == "pending" and now.deciders == ("role:finance",) and now.expires_at_us > a.expires_at_us
    with pytest.raises(ApprovalForbidden, match="only role:finance"):
        _decisions.decide(gov.db, a.id, approve=True, by=LEAD)
    clock.advance(1.1)
    thread.join(10)  # nobody in finance decided: denied at the second expiry
    assert isinstance(out["error"], ApprovalTimeout)
    assert kinds(gov, a.call_id)[2:] == ["approval.escalated", "approval.refused", "approval.expired"]


def test_escalated_approvers_can_decide(clock: ManualClock, configure: Callable[..., Governor]) -> None:
    gov = setup(configure, timeout="1s", extra="on_timeout: escalate, escalate_to: [user:fin]")
    ran: list[Any] = []
    issue_refund = refund(ran)
    thread, _ = run_in_thread(lambda: issue_refund("F-2", 900))
    a = pending(gov)
    clock.advance(1.1)
    _decisions.sweep(gov.db)
    _decisions.decide(gov.db, a.id, approve=True, by=Decider("user:fin", frozenset({"approver"})))
    thread.join(10)
    assert len(ran) == 1


def test_unknown_and_decided_approvals_are_refused_and_audited(configure: Callable[..., Governor]) -> None:
    gov = setup(configure)
    with pytest.raises(ApprovalNotFound):
        _decisions.decide(gov.db, "apr_nope", approve=True, by=LEAD)
    issue_refund = refund([])
    thread, _ = run_in_thread(lambda: issue_refund("G-1", 900))
    a = pending(gov)
    _decisions.decide(gov.db, a.id, approve=False, by=LEAD)
    with pytest.raises(ApprovalAlreadyDecided, match="already denied by user:lena"):
        _decisions.decide(gov.db, a.id, approve=True, by=OTHER)
    thread.join(10)
    refused = [e.body for e in query(gov.db, EventFilter(kind="approval.refused"))]
    assert [(r["approval_id"], r["by"]) for r in refused] == [("apr_nope", "user:lena"), (a.id, "user:omar")]


def test_concurrent_deciders_get_exactly_one_decision(configure: Callable[..., Governor]) -> None:
    gov = setup(configure)
    issue_refund = refund([])
    thread, _ = run_in_thread(lambda: issue_refund("H-1", 900))
    a = pending(gov)
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def decide(i: int) -> None:
        barrier.wait()
        try:
            _decisions.decide(gov.db, a.id, approve=i % 2 == 0, by=Decider(f"user:u{i}", frozenset({"approver"})))
            outcomes.append("won")
        except ApprovalAlreadyDecided as exc:
            outcomes.append(f"lost to {exc.decided_by}")

    workers = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    thread.join(10)
    winner = approvals.get(gov.db, a.id).decided_by
    assert outcomes.count("won") == 1 and outcomes.count(f"lost to {winner}") == 7


def test_an_approved_call_runs_once_even_when_someone_claims_it_first(configure: Callable[..., Governor]) -> None:
    gov = setup(configure)
    ran: list[Any] = []
    issue_refund = refund(ran)
    thread, out = run_in_thread(lambda: issue_refund("I-1", 900))
    a = pending(gov)
    # Approve and claim in one go, as a resuming process would, before the waiter wakes.
    with gov.db.lock:
        _decisions.decide(gov.db, a.id, approve=True, by=LEAD)
        approvals.claim(gov.db, a.id, by="worker-1", now_us=1)
    thread.join(10)
    assert ran == [] and isinstance(out["error"], ApprovalAlreadyExecuted) and "worker-1" in str(out["error"])


def test_typed_edits_reach_decimal_parameters(configure: Callable[..., Governor]) -> None:
    gov = setup(configure)
    seen: list[Any] = []

    @clearance.guard
    def issue_refund(order_id: str, amount: Decimal) -> str:
        seen.append(amount)
        return "ok"

    thread, _ = run_in_thread(lambda: issue_refund("J-1", Decimal("900.10")))
    a = pending(gov)
    _decisions.decide(gov.db, a.id, approve=True, by=LEAD, args={"amount": 250.25})
    thread.join(10)
    assert seen == [Decimal("250.25")]


def test_the_cli_approves_with_edits(configure: Callable[..., Governor], db_path: Any) -> None:
    from ..conftest import run_cli

    gov = setup(configure)
    ran: list[Any] = []
    issue_refund = refund(ran)
    thread, _ = run_in_thread(lambda: issue_refund("K-1", 900, card="4111"))
    a = pending(gov)
    refused = run_cli("approve", a.id, "--set", "amount=lots", "--set", "nope", db=db_path)
    assert refused.returncode == 2 and "NAME=VALUE" in refused.stderr
    refused = run_cli("approve", a.id, "--set", "amount=lots", db=db_path)
    assert refused.returncode == 2 and 'amount: expected a number, got "lots"' in refused.stderr
    ok = run_cli("approve", a.id, "--set", "amount=120", "--note", "partial", "--by", "carla", db=db_path, check=True)
    assert "approved" in ok.stdout and '"amount": 120' in ok.stdout and "(edited)" in ok.stdout
    assert "4111" not in ok.stdout
    thread.join(10)
    assert ran == [("K-1", 120.0, "4111", "partial")]
