from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import ApprovalAlreadyDecided, ApprovalDenied, ApprovalError, ApprovalTimeout, _decisions
from clearance._clock import ManualClock
from clearance._guard._governor import Governor
from clearance._store import EventFilter
from clearance._store import _approvals as approvals
from clearance._store._events import query

from ..conftest import CLI, REPO, run_cli

SHORT = """
version: 1
tools:
  issue_refund:
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        reason: Refunds over $200 need a support lead
        approval: {timeout: %s, on_timeout: %s}
"""


ALICE = _decisions.Decider("alice", trusted=True)


def refund_tool(on_pending: Callable[[clearance.PendingApproval], None] | None = None) -> Callable[..., str]:
    ran: list[float] = []

    def issue_refund(order_id: str, amount: float) -> str:
        ran.append(amount)
        return f"refunded {amount}"

    governed = clearance.guard(issue_refund, on_pending=on_pending)
    governed.ran = ran  # type: ignore[attr-defined]
    return governed


def once_waiting(clock: ManualClock, fn: Callable[[], Any]) -> Callable[[clearance.PendingApproval], None]:
    """An `on_pending` that runs `fn` on another thread as soon as the call is asleep, waiting for a decision."""

    def run() -> None:
        clock.wait_parked("approval")
        try:
            fn()
        except BaseException:
            clock.advance(10**6)  # end the wait (it times out) instead of leaving the test hanging
            raise

    def start(_: clearance.PendingApproval) -> None:
        threading.Thread(target=run).start()

    return start


def test_approved_from_another_process_runs_once(configure: Callable[..., Governor], db_path: Path) -> None:
    gov = configure(SHORT % ("10m", "deny"))
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    threads: list[threading.Thread] = []

    def approve(p: clearance.PendingApproval) -> None:
        def go() -> None:
            results["cli"] = run_cli("approve", p.approval_id, "--by", "alice", "--note", "verified", db=db_path)

        threads.append(threading.Thread(target=go))
        threads[0].start()

    tool = refund_tool(approve)
    assert tool("A1", 850) == "refunded 850"
    assert tool.ran == [850]  # type: ignore[attr-defined]
    threads[0].join(60)
    assert results["cli"].returncode == 0 and "approved apr_" in results["cli"].stdout
    [a] = approvals.listing(gov.db, status=None)
    assert (a.status, a.decided_by, a.note) == ("executed", "alice", "verified")
    kinds = [(e.body["kind"], e.body.get("decision")) for e in query(gov.db, EventFilter(call_id=a.call_id))]
    assert kinds == [
        ("tool_call.decided", "require_approval"),
        ("approval.requested", None),
        ("approval.decided", "approved"),
        ("tool_call.finished", "ok"),
        ("approval.executed", "executed"),
    ]


def test_denied_with_a_note_raises_and_never_runs(configure: Callable[..., Governor], db_path: Path) -> None:
    gov = configure(SHORT % ("10m", "deny"))
    tool = refund_tool(
        lambda p: threading.Thread(
            target=run_cli,
            args=("deny", p.approval_id, "--by", "bob", "--note", "order was never paid"),
            kwargs={"db": db_path},
        ).start()
    )
    with pytest.raises(ApprovalDenied) as info:
        tool("A1", 900)
    assert info.value.note == "order was never paid" and info.value.decided_by == "bob"
    assert str(info.value) == "issue_refund denied by bob: order was never paid"
    assert tool.ran == []  # type: ignore[attr-defined]
    assert approvals.listing(gov.db, status="denied")[0].decided_by == "bob"


def test_timeout_denies_and_is_recorded(clock: ManualClock, configure: Callable[..., Governor]) -> None:
    gov = configure(SHORT % ("1s", "deny"))
    tool = refund_tool(once_waiting(clock, lambda: clock.advance(1)))  # it waits until the clock says 1 s passed
    with pytest.raises(ApprovalTimeout):
        tool("A1", 900)
    assert tool.ran == []  # type: ignore[attr-defined]
    [expired] = [e.body for e in query(gov.db, EventFilter(kind="approval.expired"))]
    assert expired["decision"] == "expired" and expired["by"] == "system"


def test_timeout_can_allow(clock: ManualClock, configure: Callable[..., Governor]) -> None:
    gov = configure(SHORT % ("1s", "allow"))
    tool = refund_tool(once_waiting(clock, lambda: clock.advance(1)))
    assert tool("A1", 900) == "refunded 900"
    [expired] = [e.body for e in query(gov.db, EventFilter(kind="approval.expired"))]
    assert expired["decision"] == "allowed_on_timeout"


def test_an_approval_is_decided_once_and_says_by_whom(configure: Callable[..., Governor]) -> None:
    gov = configure(SHORT % ("10m", "deny"))
    late: list[BaseException] = []

    def decide_twice(p: clearance.PendingApproval) -> None:
        _decisions.decide(gov.db, p.approval_id, approve=True, by=_decisions.Decider("alice", trusted=True))
        try:
            _decisions.decide(gov.db, p.approval_id, approve=False, by=_decisions.Decider("mallory", trusted=True))
        except ApprovalAlreadyDecided as exc:
            late.append(exc)

    assert refund_tool(decide_twice)("A1", 900) == "refunded 900"
    [exc] = late
    assert str(exc).startswith("approval apr_") and str(exc).endswith("is already approved by alice")


def test_two_processes_deciding_at_once_get_one_decision(configure: Callable[..., Governor], db_path: Path) -> None:
    gov = configure(SHORT % ("10m", "deny"))
    outcome: dict[str, Any] = {}

    def race(p: clearance.PendingApproval) -> None:
        def go() -> None:
            env = {"PYTHONPATH": str(REPO / "src")}
            import os

            procs = [
                subprocess.Popen(
                    [*CLI, verb, p.approval_id, "--by", who, "--database", str(db_path)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, **env},
                )
                for verb, who in (("approve", "alice"), ("deny", "bob"))
            ]
            outcome["procs"] = [(p.wait(60), *p.communicate()) for p in procs]

        threading.Thread(target=go).start()

    try:
        result: Any = refund_tool(race)("A1", 900)
    except ApprovalDenied as exc:
        result = exc
    for _ in range(600):
        if "procs" in outcome:
            break
        time.sleep(0.05)
    codes = sorted(code for code, _, _ in outcome["procs"])
    assert codes == [0, 1]
    loser = next(err for code, _, err in outcome["procs"] if code == 1)
    [a] = approvals.listing(gov.db, status=None)
    winner = a.decided_by
    assert "error: approval apr_" in loser and "is already" in loser and loser.rstrip().endswith(f"by {winner}")
    assert (result == "refunded 900") == (winner == "alice")
    decided = [e.body for e in query(gov.db, EventFilter(kind="approval.decided"))]
    assert len(decided) == 1 and decided[0]["by"] == winner


def test_waiter_is_woken_by_push_not_polling(
    clock: ManualClock, configure: Callable[..., Governor], monkeypatch: pytest.MonkeyPatch
) -> None:
    gov = configure(SHORT % ("10m", "deny"))
    reads: list[str] = []
    real = approvals.get

    def counting_get(db: Any, approval_id: str) -> Any:
        reads.append(approval_id)
        return real(db, approval_id)

    monkeypatch.setattr(approvals, "get", counting_get)
    before: list[int] = []

    def approve() -> None:
        before.append(len(reads))
        _decisions.decide(gov.db, approvals.listing(gov.db)[0].id, approve=True, by=ALICE)

    # The clock stands still, so no timeout or re-check can end the wait: only the decision's push.
    assert refund_tool(once_waiting(clock, approve))("A1", 900) == "refunded 900"
    assert before == [1]  # one read of the store before it slept, none while it waited


def test_async_waiting_does_not_block_the_event_loop(clock: ManualClock, configure: Callable[..., Governor]) -> None:
    gov = configure(SHORT % ("10m", "deny"))
    seen: dict[str, Any] = {}

    def approve() -> None:
        try:  # while the call waits, the loop still runs other work
            seen["loop"] = asyncio.run_coroutine_threadsafe(asyncio.sleep(0, "ran"), seen["running"]).result(10)
        finally:
            _decisions.decide(gov.db, approvals.listing(gov.db)[0].id, approve=True, by=ALICE)

    @clearance.guard(on_pending=once_waiting(clock, approve))
    async def issue_refund(order_id: str, amount: float) -> str:
        return "refunded"

    async def main() -> str:
        seen["running"] = asyncio.get_running_loop()
        return await issue_refund("A1", 900)

    assert asyncio.run(main()) == "refunded" and seen["loop"] == "ran"


def test_a_waiter_that_stops_cancels_its_approval(clock: ManualClock, configure: Callable[..., Governor]) -> None:
    gov = configure(SHORT % ("10m", "deny"))

    @clearance.guard
    async def issue_refund(order_id: str, amount: float) -> str:
        return "refunded"

    async def main() -> None:
        task = asyncio.create_task(issue_refund("A1", 900))
        await asyncio.to_thread(clock.wait_parked, "approval")  # cancelled while it waits for a decision
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    [a] = approvals.listing(gov.db, status=None)
    assert a.status == "cancelled" and a.decided_by == "test-agent" and "CancelledError" in (a.note or "")
    with pytest.raises(ApprovalAlreadyDecided, match="already cancelled"):
        _decisions.decide(gov.db, a.id, approve=True, by=_decisions.Decider("alice", trusted=True))


def test_approval_holding_other_arguments_is_refused(configure: Callable[..., Governor], db_path: Path) -> None:
    gov = configure(SHORT % ("10m", "deny"))

    def tamper_then_approve(p: clearance.PendingApproval) -> None:
        with sqlite3.connect(db_path) as conn:
            conn.execute("UPDATE approvals SET args_hash = 'f00d' WHERE id = ?", (p.approval_id,))
        _decisions.decide(gov.db, p.approval_id, approve=True, by=_decisions.Decider("alice", trusted=True))

    tool = refund_tool(tamper_then_approve)
    with pytest.raises(ApprovalError, match="holds other arguments"):
        tool("A1", 900)
    assert tool.ran == []  # type: ignore[attr-defined]


def test_an_expired_approval_cannot_be_approved(clock: ManualClock, configure: Callable[..., Governor]) -> None:
    gov = configure(SHORT % ("1s", "deny"))
    errors: list[BaseException] = []

    def approve_too_late(p: clearance.PendingApproval) -> None:
        clock.advance(1.1)
        try:
            _decisions.decide(gov.db, p.approval_id, approve=True, by=_decisions.Decider("alice", trusted=True))
        except ApprovalAlreadyDecided as exc:
            errors.append(exc)

    with pytest.raises(ApprovalTimeout):
        refund_tool(approve_too_late)("A1", 900)
    assert "is already expired" in str(errors[0])


def test_unknown_approval(configure: Callable[..., Governor]) -> None:
    gov = configure()
    with pytest.raises(clearance.ApprovalNotFound):
        _decisions.decide(gov.db, "apr_nope", approve=True, by=_decisions.Decider("alice", trusted=True))


def test_wake_ups_only_go_to_loopback() -> None:
    from clearance._notify import Waiter, wake

    assert not wake("udp:10.1.2.3:9999") and not wake("udp:example.com:80") and not wake(None)
    assert not wake("tcp:127.0.0.1:1") and not wake("udp:127.0.0.1:notaport")
    with Waiter() as waiter:
        assert wake(waiter.address)
        assert waiter.wait(1.0) and waiter.wakeups == 1
        assert not waiter.wait(0.05)  # drained: one decision, one wake-up
