"""Durable, exactly-once resume and async mode, with real processes that die and restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import (
    ApprovalAlreadyExecuted,
    ApprovalDenied,
    ApprovalError,
    ApprovalNotFound,
    ConfigurationError,
    _decisions,
)
from clearance._decisions import Decider
from clearance._guard import _runtime
from clearance._guard._governor import Governor
from clearance._store import Database
from clearance._store import _approvals as approvals

from ..conftest import REPO, run_cli

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 10m}}
"""
LEAD = Decider("user:lena", frozenset({"approver"}))

# A module that guards the tool, as an app would: the tool appends a line to a ledger file, so
# the test can count how many times it really ran, across processes.
TOOLS = """
import os
import clearance

LEDGER = os.environ["LEDGER"]

def _done(result):
    with open(LEDGER + ".callbacks", "a") as f:
        f.write(f"approval {result}\\n")

def _denied(error):
    with open(LEDGER + ".callbacks", "a") as f:
        f.write(f"denial {type(error).__name__}: {getattr(error, 'note', '')}\\n")

@clearance.guard(approval_mode=os.environ.get("MODE", "wait"), on_approval=_done, on_denial=_denied)
def issue_refund(order_id: str, amount: float) -> str:
    with open(LEDGER, "a") as f:
        f.write(f"{order_id} {amount}\\n")
    return f"refunded {amount}"
"""


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    (tmp_path / "refund_tools.py").write_text(TOOLS)
    (tmp_path / "policy.yaml").write_text(POLICY)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{tmp_path}",
        "LEDGER": str(tmp_path / "ledger"),
        "CLEARANCE_POLICY": str(tmp_path / "policy.yaml"),
        "CLEARANCE_DATABASE_URL": str(tmp_path / "audit.db"),
        "CLEARANCE_AGENT": "refunds",
    }
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "refund_tools", raising=False)  # another test's module of that name
    monkeypatch.setenv("LEDGER", env["LEDGER"])
    return {"env": env, "dir": tmp_path, "db": tmp_path / "audit.db", "ledger": tmp_path / "ledger"}


def python(app: dict[str, Any], code: str, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**app["env"], **env},
        cwd=app["dir"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)  # reaps it and closes its pipes


def wait_for_pending(db: Path, timeout: float = 20) -> approvals.Approval:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.exists():
            store = Database(str(db))
            try:
                found = approvals.listing(store)
            finally:
                store.close()
            if found:
                return found[0]
        time.sleep(0.05)
    raise AssertionError("no pending approval appeared")


def decide(app: dict[str, Any], approval_id: str, approve: bool = True, **kw: Any) -> None:
    store = Database(str(app["db"]))
    try:
        _decisions.decide(store, approval_id, approve=approve, by=LEAD, **kw)
    finally:
        store.close()


def ledger(app: dict[str, Any], suffix: str = "") -> list[str]:
    path = Path(str(app["ledger"]) + suffix)
    return path.read_text().splitlines() if path.exists() else []


AGENT = """
import clearance, refund_tools
refund_tools.issue_refund("A-1", 900)
"""


def test_an_agent_killed_while_waiting_is_resumed_by_a_fresh_process_exactly_once(app: dict[str, Any]) -> None:
    agent = python(app, AGENT)
    a = wait_for_pending(app["db"])
    kill(agent)  # the agent dies while its call waits for a human
    decide(app, a.id, args={"amount": 400}, note="partial")
    resumes = [
        python(
            app,
            f"""
            import clearance, refund_tools
            try:
                print("RESULT", clearance.resume({a.id!r}))
            except clearance.ApprovalAlreadyExecuted as exc:
                print("ALREADY", exc)
            """,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=60) for p in resumes]
    assert all(p.returncode == 0 for p in resumes), outputs
    stdout = [out for out, _ in outputs]
    assert sum(s.startswith("RESULT refunded 400.0") for s in stdout) == 1
    assert sum(s.startswith("ALREADY") for s in stdout) == 2
    assert ledger(app) == ["A-1 400.0"]  # ran once, with the approver's edit
    store = Database(str(app["db"]))
    try:
        final = approvals.get(store, a.id)
        assert final.status == "executed" and final.result == "refunded 400.0" and "pid" in (final.claimed_by or "")
    finally:
        store.close()


def test_resume_refuses_what_may_not_run_and_changes_nothing(
    app: dict[str, Any], configure: Callable[..., Governor]
) -> None:
    gov = configure(POLICY, database_url=str(app["db"]), agent="refunds")
    import refund_tools

    with clearance.approval_mode("async"):
        pending = refund_tools.issue_refund("B-1", 900)
    assert isinstance(pending, clearance.PendingApproval)
    with pytest.raises(ApprovalNotFound):
        clearance.resume("apr_nope")
    with pytest.raises(ApprovalError, match="still pending"):
        clearance.resume(pending.approval_id)
    _decisions.decide(gov.db, pending.approval_id, approve=False, by=LEAD, note="fraud")
    with pytest.raises(ApprovalDenied, match="fraud"):
        clearance.resume(pending.approval_id)
    for waiter in [t for t in threading.enumerate() if t.name == f"clearance-approval-{pending.approval_id}"]:
        waiter.join(10)  # the background waiter hands the denial to on_denial, once, and ends
    assert ledger(app) == [] and ledger(app, ".callbacks") == ["denial ApprovalDenied: fraud"]


def test_a_tool_not_guarded_here_is_not_claimed(app: dict[str, Any], configure: Callable[..., Governor]) -> None:
    agent = python(app, AGENT)
    a = wait_for_pending(app["db"])
    kill(agent)
    decide(app, a.id)
    _runtime._tools.clear()
    configure(POLICY, database_url=str(app["db"]), agent="refunds")
    with pytest.raises(ConfigurationError, match="not guarded in this process"):
        clearance.resume(a.id)
    store = Database(str(app["db"]))
    try:
        assert approvals.get(store, a.id).claimed_by is None  # still there for a process that can run it
    finally:
        store.close()


def test_async_mode_returns_at_once_and_the_decision_finishes_the_call(
    app: dict[str, Any], configure: Callable[..., Governor]
) -> None:
    gov = configure(POLICY, database_url=str(app["db"]), agent="refunds")
    done = threading.Event()
    results: list[Any] = []

    @clearance.guard(
        approval_mode="async",
        on_approval=lambda r: (results.append(r), done.set()),
        on_denial=lambda e: (results.append(e), done.set()),
    )
    def issue_refund(order_id: str, amount: float) -> str:
        return f"refunded {amount} for {order_id}"

    started = time.perf_counter()
    pending = issue_refund("C-1", 900)
    assert isinstance(pending, clearance.PendingApproval) and time.perf_counter() - started < 1
    assert issue_refund("C-2", 50) == "refunded 50 for C-2"  # no approval needed: runs at once
    assert approvals.get(gov.db, pending.approval_id).mode == "async"
    _decisions.decide(gov.db, pending.approval_id, approve=True, by=LEAD)
    assert done.wait(10)
    assert results == ["refunded 900 for C-1"]
    assert clearance.run_due() == 0  # handled: a worker has nothing left to do
    with pytest.raises(ApprovalAlreadyExecuted):
        clearance.resume(pending.approval_id)


def test_async_mode_in_async_code(app: dict[str, Any], configure: Callable[..., Governor]) -> None:
    import asyncio

    gov = configure(POLICY, database_url=str(app["db"]), agent="refunds")
    results: list[Any] = []

    async def main() -> None:
        done = asyncio.Event()
        loop = asyncio.get_running_loop()

        @clearance.guard(
            approval_mode="async", on_denial=lambda e: (results.append(e), loop.call_soon_threadsafe(done.set))
        )
        async def issue_refund(order_id: str, amount: float) -> str:
            return "refunded"

        pending = await issue_refund("D-1", 900)
        assert isinstance(pending, clearance.PendingApproval)
        await asyncio.to_thread(
            _decisions.decide, gov.db, pending.approval_id, approve=False, by=LEAD, note="duplicate"
        )
        await asyncio.wait_for(done.wait(), 10)

    asyncio.run(main())
    assert isinstance(results[0], ApprovalDenied) and results[0].note == "duplicate"


def test_the_worker_finishes_async_calls_whose_process_died(app: dict[str, Any]) -> None:
    agents = [
        python(
            app,
            f"""
            import clearance, refund_tools, time
            print(refund_tools.issue_refund("E-{i}", 900).approval_id, flush=True)
            time.sleep(60)
            """,
            MODE="async",
        )
        for i in range(2)
    ]
    ids = [p.stdout.readline().strip() for p in agents]
    for p in agents:
        kill(p)
    decide(app, ids[0], args={"amount": 300})
    decide(app, ids[1], approve=False, note="no receipt")
    result = run_cli(
        "worker", "--import", "refund_tools", "--once", env=app["env"] | {"PYTHONPATH": app["env"]["PYTHONPATH"]}
    )
    assert result.returncode == 0, result.stderr
    assert "finished 2 call(s)" in result.stderr
    assert ledger(app) == ["E-0 300.0"]
    assert sorted(ledger(app, ".callbacks")) == ["approval refunded 300.0", "denial ApprovalDenied: no receipt"]
    again = run_cli("worker", "--import", "refund_tools", "--once", env=app["env"])
    assert again.returncode == 0 and "finished" not in again.stderr  # nothing runs or reports twice
    assert ledger(app) == ["E-0 300.0"]
