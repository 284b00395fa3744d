"""Approved calls, written once for sync and async code: where and how each kind of tool runs.

A sync tool runs in the thread that runs its call (the caller's, or the async-mode background
thread), with no event loop there, so it may start one of its own; an async tool runs on the
caller's loop. Either way `current_approval()` is set while it runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

import clearance
from clearance._decisions import Decider, decide
from clearance._guard._governor import Governor
from clearance._store import _approvals as approvals

POLICY = """
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, approval: {timeout: 10m}}
  lookup_refund:
    rules:
      - {id: all, effect: require_approval, approval: {timeout: 10m}}
"""
LEAD = Decider("user:lena", frozenset({"approver"}))


async def _lookup(order_id: str) -> str:
    await asyncio.sleep(0)
    return f"order {order_id}"


def _approving(gov: Governor, note: str = "ok") -> Callable[[clearance.PendingApproval], None]:
    """An `on_pending` that approves the call before it waits."""
    return lambda p: decide(gov.db, p.approval_id, approve=True, by=LEAD, note=note)


def _where() -> dict[str, Any]:
    """Where the calling code runs: its thread, whether an event loop runs there, the approval it sees."""
    try:
        asyncio.get_running_loop()
        loop = True
    except RuntimeError:
        loop = False
    approval = clearance.current_approval()
    return {"thread": threading.current_thread(), "loop": loop, "note": approval.note if approval else None}


def test_an_approved_sync_tool_runs_in_the_callers_thread_and_may_run_its_own_loop(
    configure: Callable[..., Governor],
) -> None:
    gov = configure(POLICY)
    seen: list[dict[str, Any]] = []

    @clearance.guard(on_pending=_approving(gov))
    def issue_refund(order_id: str, amount: float) -> str:
        seen.append(_where())
        return asyncio.run(_lookup(order_id))

    assert issue_refund("A-1", 900) == "order A-1"
    assert seen == [{"thread": threading.current_thread(), "loop": False, "note": "ok"}]


def test_an_async_mode_sync_tool_runs_on_its_background_thread_and_may_run_its_own_loop(
    configure: Callable[..., Governor],
) -> None:
    gov = configure(POLICY)
    seen: list[dict[str, Any]] = []
    results: list[Any] = []
    reported = threading.Event()

    def on_approval(result: Any) -> None:
        results.append(result)
        reported.set()

    @clearance.guard(approval_mode="async", on_pending=_approving(gov), on_approval=on_approval)
    def issue_refund(order_id: str, amount: float) -> str:
        seen.append(_where())
        return asyncio.run(_lookup(order_id))

    assert isinstance(issue_refund("A-2", 900), clearance.PendingApproval)
    assert reported.wait(20)
    assert results == ["order A-2"]
    [where] = seen
    assert where["thread"].name.startswith("clearance-approval-") and (where["loop"], where["note"]) == (False, "ok")


def test_an_approved_async_tool_runs_on_the_callers_loop(configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY)
    seen: list[dict[str, Any]] = []

    @clearance.guard(on_pending=_approving(gov))
    async def issue_refund(order_id: str, amount: float) -> str:
        seen.append({**_where(), "same loop": asyncio.get_running_loop() is loops[0]})
        return await _lookup(order_id)

    loops: list[asyncio.AbstractEventLoop] = []

    async def main() -> str:
        loops.append(asyncio.get_running_loop())
        return await issue_refund("A-3", 900)

    assert asyncio.run(main()) == "order A-3"
    [where] = seen
    assert (where["loop"], where["note"], where["same loop"]) == (True, "ok", True)


def test_a_resumed_sync_tool_may_run_its_own_loop_and_an_async_one_resumes_on_the_callers(
    configure: Callable[..., Governor],
) -> None:
    gov = configure(POLICY)
    seen: list[dict[str, Any]] = []

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> str:
        seen.append(_where())
        return asyncio.run(_lookup(order_id))

    ticket = gov.begin("issue_refund", {"order_id": "A-4", "amount": 900}, None, mode="pause")
    assert ticket.approval_id is not None
    decide(gov.db, ticket.approval_id, approve=True, by=LEAD, note="resumed")
    assert clearance.resume(ticket.approval_id) == "order A-4"
    assert seen == [{"thread": threading.current_thread(), "loop": False, "note": "resumed"}]

    @clearance.guard
    async def lookup_refund(order_id: str) -> str:
        seen.append(_where())
        return await _lookup(order_id)

    ticket = gov.begin("lookup_refund", {"order_id": "A-5"}, None, mode="pause")
    assert ticket.approval_id is not None
    decide(gov.db, ticket.approval_id, approve=True, by=LEAD, note="resumed async")
    assert asyncio.run(clearance.resume_async(ticket.approval_id)) == "order A-5"
    assert (seen[1]["loop"], seen[1]["note"]) == (True, "resumed async")


def test_a_stop_iteration_from_an_approved_tool_arrives_as_itself_and_fails_the_call(
    configure: Callable[..., Governor],
) -> None:
    gov = configure(POLICY)

    @clearance.guard(on_pending=_approving(gov))
    def issue_refund(order_id: str, amount: float) -> str:
        return str(next(iter(())))

    with pytest.raises(StopIteration):
        issue_refund("A-6", 900)
    [approval] = approvals.listing(gov.db, status=None)
    assert approval.status == "failed"
