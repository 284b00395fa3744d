"""The governor core through both backends: the same approval scenarios, embedded and remote.

Embedded runs on a SQLite store in this process; remote on a real `clearance serve` process.
Each scenario goes through the public API (`guard`, `resume`, `record_usage`) and the
backend's own surface (`begin`, `approved_call`, `claim`), so what the core shares is exercised
once per backend.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest

import clearance
from clearance import ApprovalAlreadyExecuted, ApprovalDenied, ApprovalPending, ApprovalTimeout
from clearance._decisions import Decider, decide
from clearance._guard import _runtime
from clearance._store import Database
from clearance._store import _events as events

from ..server.conftest import Server, _free_port

POLICY = """\
version: 1
tools:
  strict_refund:
    rules:
      - {id: strict, effect: require_approval, approval: {timeout: 1s, on_timeout: deny}}
  lenient_refund:
    rules:
      - {id: lenient, effect: require_approval, approval: {timeout: 1s, on_timeout: allow}}
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 10m}}
"""
LEAD = Decider("user:lena", frozenset({"approver"}))


class Harness(Protocol):
    """One backend, as the scenarios drive it."""

    def configure(self) -> None: ...

    def decide(self, approval_id: str, *, approve: bool, note: str | None = None, args: Any = None) -> None: ...

    def records(self, kind: str) -> list[dict[str, Any]]: ...


class Embedded:
    def __init__(self, tmp_path: Path) -> None:
        self.db = tmp_path / "audit.db"
        self.policy = tmp_path / "policy.yaml"
        self.policy.write_text(POLICY)

    def configure(self) -> None:
        clearance.configure(policy=str(self.policy), database_url=str(self.db), agent="refunds")

    def decide(self, approval_id: str, *, approve: bool, note: str | None = None, args: Any = None) -> None:
        store = Database(str(self.db))
        try:
            decide(store, approval_id, approve=approve, by=LEAD, note=note, args=args)
        finally:
            store.close()

    def records(self, kind: str) -> list[dict[str, Any]]:
        clearance.flush()
        store = Database(str(self.db))
        try:
            return [e.body for e in events.query(store, events.EventFilter(kind=kind))]
        finally:
            store.close()


class Remote:
    def __init__(self, server: Server, tmp_path: Path) -> None:
        self.server, self.spool = server, tmp_path / "spool" / "s.db"

    def configure(self) -> None:
        clearance.configure(server_url=self.server.base, api_key=self.server.agent, spool_path=str(self.spool))

    def decide(self, approval_id: str, *, approve: bool, note: str | None = None, args: Any = None) -> None:
        body = {"note": note, **({"args": args} if args is not None else {})}
        url = f"{self.server.base}/v1/approvals/{approval_id}/{'approve' if approve else 'deny'}"
        httpx.post(url, headers={"X-API-Key": self.server.approver}, json=body).raise_for_status()

    def records(self, kind: str) -> list[dict[str, Any]]:
        clearance.flush()
        return [e for e in self.server.events(kind=kind) if e.get("agent") == "refunds"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One `clearance serve` for the module: each test configures its own spool against it."""
    tmp = tmp_path_factory.mktemp("core-server")
    live = Server(tmp / "server.db", _free_port(), tmp / "server.log")
    live.start()
    try:
        live.publish(POLICY)
        yield live
    finally:
        live.stop()


@pytest.fixture(params=["embedded", "remote"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Harness:
    harness: Harness
    if request.param == "embedded":
        harness = Embedded(tmp_path)
    else:
        harness = Remote(request.getfixturevalue("server"), tmp_path)
    harness.configure()
    return harness


def test_an_approved_call_runs_with_the_approvers_edit(backend: Harness) -> None:
    seen: list[str] = []
    asked: list[str] = []

    def approve(p: clearance.PendingApproval) -> None:
        asked.append(p.approval_id)
        backend.decide(p.approval_id, approve=True, note="ok", args={"amount": 250})

    @clearance.guard(on_pending=approve)
    def issue_refund(order_id: str, amount: float) -> str:
        approval = clearance.current_approval()
        assert approval is not None and approval.note == "ok"
        seen.append(f"{order_id} {amount}")
        return "refunded"

    assert issue_refund("A-1", 900) == "refunded"
    assert seen == ["A-1 250.0"]
    (executed,) = [e for e in backend.records("approval.executed") if e["approval_id"] in asked]
    assert executed["tool"] == "issue_refund" and executed["decision"] == "executed"


def test_an_async_tool_waits_without_blocking_and_runs_edited(backend: Harness) -> None:
    @clearance.guard(on_pending=lambda p: backend.decide(p.approval_id, approve=True, args={"amount": 300}))
    async def issue_refund(order_id: str, amount: float) -> str:
        return f"{order_id} {amount}"

    assert asyncio.run(issue_refund("A-2", 900)) == "A-2 300.0"


def test_a_denied_call_raises_and_does_not_run(backend: Harness) -> None:
    ran: list[float] = []

    @clearance.guard(on_pending=lambda p: backend.decide(p.approval_id, approve=False, note="too much"))
    def issue_refund(order_id: str, amount: float) -> None:
        ran.append(amount)

    with pytest.raises(ApprovalDenied) as denied:
        issue_refund("A-3", 900)
    assert denied.value.note == "too much" and ran == []


def test_a_denied_async_call_raises(backend: Harness) -> None:
    @clearance.guard(on_pending=lambda p: backend.decide(p.approval_id, approve=False))
    async def issue_refund(order_id: str, amount: float) -> None: ...

    with pytest.raises(ApprovalDenied):
        asyncio.run(issue_refund("A-4", 900))


def test_expiry_denies_or_allows_as_the_rule_says(backend: Harness) -> None:
    @clearance.guard
    def strict_refund(order_id: str) -> str:
        return "ran"

    @clearance.guard
    def lenient_refund(order_id: str) -> str:
        approval = clearance.current_approval()
        assert approval is not None and approval.decided_by == "system"
        return "ran"

    with pytest.raises(ApprovalTimeout):
        strict_refund("A-5")
    assert lenient_refund("A-6") == "ran"
    assert {e["tool"] for e in backend.records("approval.expired")} == {"strict_refund", "lenient_refund"}


def test_an_approved_call_runs_once_whoever_claims_it(backend: Harness) -> None:
    ledger: list[float] = []

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> str:
        ledger.append(amount)
        return "refunded"

    governor = _runtime.current()
    ticket = governor.begin("issue_refund", {"order_id": "A-7", "amount": 900}, None, mode="pause")
    assert ticket.approval_id is not None
    with pytest.raises(ApprovalPending):
        governor.approved_call(ticket.approval_id)
    backend.decide(ticket.approval_id, approve=True, args={"amount": 210})
    decided, approved, args = governor.approved_call(ticket.approval_id)
    assert (decided.tool, approved.args, args) == ("issue_refund", args, {"order_id": "A-7", "amount": 210})

    start = threading.Barrier(2)

    def claimant(approval_id: str) -> str:
        start.wait()  # both resume at once
        try:
            return str(clearance.resume(approval_id))
        except ApprovalAlreadyExecuted:
            return "already"

    with ThreadPoolExecutor(2) as pool:
        assert sorted(pool.map(claimant, [ticket.approval_id] * 2)) == ["already", "refunded"]
    assert ledger == [210]
    with pytest.raises(ApprovalAlreadyExecuted):
        clearance.resume(ticket.approval_id)
    assert len([e for e in backend.records("approval.executed") if e["approval_id"] == ticket.approval_id]) == 1


def test_a_denial_is_delivered_once(backend: Harness) -> None:
    governor = _runtime.current()
    ticket = governor.begin("issue_refund", {"order_id": "A-8", "amount": 900}, None, mode="pause")
    assert ticket.approval_id is not None
    backend.decide(ticket.approval_id, approve=False)
    with pytest.raises(ApprovalDenied):
        governor.approved_call(ticket.approval_id)
    assert [governor.claim_denial(ticket.approval_id) for _ in range(2)] == [True, False]


def test_usage_is_priced_and_recorded(backend: Harness) -> None:
    with clearance.session("ses_core"):
        usage = clearance.record_usage("gpt-4o", 1000, 200)
    assert usage.cost_usd is not None and usage.cost_usd > 0
    (record,) = [e for e in backend.records("llm.call") if e["id"] == usage.event_id]
    assert (record["session"], record["model"]) == ("ses_core", "gpt-4o")
