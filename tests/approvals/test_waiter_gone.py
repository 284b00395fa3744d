"""A wait-mode approval whose waiting agent died: seen as gone, then run by a worker or closed, saying why.

Real agent processes killed with SIGKILL, on both stores; the grace is crossed by moving this
process's clock (the killed agent wrote its heartbeat on the real one).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import _decisions
from clearance._clock import ManualClock
from clearance._decisions import Decider
from clearance._guard._governor import Governor
from clearance._guard._record import record_call
from clearance._store import Database
from clearance._store import _approval_waiters as waiters
from clearance._store import _approvals as approvals
from clearance.policy import parse_policy

from .._wait import until
from ..conftest import REPO

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 10m}}
"""
LEAD = Decider("user:lena", frozenset({"approver"}))
CALLBACKS = "on_approval=_done, on_denial=_denied"
# The tool appends a line to a ledger file, so the test counts how often it really ran.
TOOLS = """
import os
import clearance

LEDGER = os.environ["LEDGER"]

def _done(result):
    with open(LEDGER + ".callbacks", "a") as f:
        f.write(f"approval {{result}}\\n")

def _denied(error):
    with open(LEDGER + ".callbacks", "a") as f:
        f.write(f"denial {{type(error).__name__}}\\n")

@clearance.guard({callbacks})
def issue_refund(order_id: str, amount: float) -> str:
    with open(LEDGER, "a") as f:
        f.write(f"{{order_id}} {{amount}}\\n")
    return f"refunded {{amount}}"
"""
AGENT = "import refund_tools\nrefund_tools.issue_refund('A-1', 900)\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "audit.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(url: str) -> Iterator[Database]:
    db = Database(url)
    yield db
    db.close()


def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, *, callbacks: bool) -> dict[str, str]:
    """The agent's files (its tool module, with or without callbacks, and its policy) and environment."""
    (tmp_path / "refund_tools.py").write_text(TOOLS.format(callbacks=CALLBACKS if callbacks else ""))
    (tmp_path / "policy.yaml").write_text(POLICY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "refund_tools", raising=False)  # each test's own module is imported
    monkeypatch.setenv("LEDGER", str(tmp_path / "ledger"))
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{tmp_path}",
        "LEDGER": str(tmp_path / "ledger"),
        "CLEARANCE_POLICY": str(tmp_path / "policy.yaml"),
        "CLEARANCE_DATABASE_URL": url,
        "CLEARANCE_AGENT": "refunds",
    }


def waiting_agent(env: dict[str, str], db: Database) -> tuple[subprocess.Popen[str], approvals.Approval]:
    """A real agent process whose call waits for a human: it, and its approval once its heartbeat is in."""
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    found: list[approvals.Approval] = []

    def heartbeat() -> bool:
        assert agent.poll() is None, agent.communicate()
        found[:] = [a for a in approvals.listing(db) if a.waiter_seen_at_us is not None]
        return bool(found)

    until(heartbeat, "the waiting agent's heartbeat", timeout=30)
    return agent, found[0]


def killed(agent: subprocess.Popen[str]) -> None:
    agent.send_signal(signal.SIGKILL)
    agent.communicate(timeout=10)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def abandoned_records(db: Database) -> list[dict[str, Any]]:
    with db.read() as cur:
        cur.execute(db.sql("SELECT body FROM events WHERE kind = 'approval.abandoned' ORDER BY seq"))
        return [json.loads(r[0]) for r in cur.fetchall()]


def test_a_killed_waiter_is_gone_after_the_grace_and_a_worker_runs_its_approved_call_once(
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    store: Database,
    configure: Callable[..., Governor],
) -> None:
    env = app(tmp_path, monkeypatch, url, callbacks=True)
    agent, a = waiting_agent(env, store)
    assert a.mode == "wait" and a.resumable
    assert a.waiter_seen_at_us is not None
    clock.set(a.waiter_seen_at_us / 1e6)
    assert not waiters.gone(approvals.get(store, a.id), clock.now_ns() // 1000)
    killed(agent)
    clock.advance(waiters.GRACE_SECONDS - 1)
    assert not waiters.gone(approvals.get(store, a.id), clock.now_ns() // 1000)  # within the grace
    clock.advance(2)
    assert waiters.gone(approvals.get(store, a.id), clock.now_ns() // 1000)
    assert "worker" in waiters.why(a)
    _decisions.decide(store, a.id, approve=True, by=LEAD)

    configure(POLICY, database_url=url, agent="refunds")  # `clearance worker --import refund_tools`, in-process
    import refund_tools  # noqa: F401

    assert clearance.run_due() == 1
    assert clearance.run_due() == 0
    with pytest.raises(clearance.ApprovalAlreadyExecuted):
        clearance.resume(a.id)
    assert lines(tmp_path / "ledger") == ["A-1 900.0"]  # ran once
    assert lines(tmp_path / "ledger.callbacks") == ["approval refunded 900.0"]
    done = approvals.get(store, a.id)
    assert done.status == "executed" and not waiters.gone(done, clock.now_ns() // 1000)


def test_with_nothing_to_run_it_the_approval_is_closed_at_its_expiry_saying_why(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, store: Database
) -> None:
    env = app(tmp_path, monkeypatch, url, callbacks=False)
    agent, a = waiting_agent(env, store)
    assert not a.resumable and a.waiter_seen_at_us is not None
    clock.set(a.waiter_seen_at_us / 1e6)
    killed(agent)
    clock.advance(waiters.GRACE_SECONDS + 1)
    gone = approvals.get(store, a.id)
    assert waiters.gone(gone, clock.now_ns() // 1000)
    assert waiters.why(gone).endswith("nothing can run the call")
    approved = _decisions.decide(store, a.id, approve=True, by=LEAD, note="ok")
    assert waiters.gone(approved, clock.now_ns() // 1000)  # approving does not make it run
    assert _decisions.sweep(store) == []  # not before its expiry
    clock.advance(10 * 60)
    [closed] = _decisions.sweep(store)
    assert closed.status == "cancelled" and closed.decided_by == "user:lena" and closed.note == "ok"
    assert closed.error is not None
    assert closed.error.startswith("waiter gone: the process waiting for this approval stopped at ")
    assert closed.error.endswith("; nothing can run the call")
    [record] = abandoned_records(store)
    assert record["approval_id"] == a.id and record["decision"] == "cancelled" and record["was"] == "approved"
    assert record["note"] == closed.error and record["waiter_seen_at_us"] == a.waiter_seen_at_us
    assert not waiters.gone(closed, clock.now_ns() // 1000) and lines(tmp_path / "ledger") == []


def test_a_pending_approval_whose_waiter_is_gone_is_cancelled_not_expired(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, store: Database
) -> None:
    env = app(tmp_path, monkeypatch, url, callbacks=False)
    agent, a = waiting_agent(env, store)
    assert a.waiter_seen_at_us is not None
    clock.set(a.waiter_seen_at_us / 1e6)
    killed(agent)
    clock.advance(10 * 60 + 1)
    [closed] = _decisions.sweep(store)
    assert closed.status == "cancelled" and closed.decided_by == "system"
    assert closed.note is None  # the reason is in `error` alone: nobody left a note
    assert closed.error is not None and closed.error.startswith("waiter gone:")
    assert [r["was"] for r in abandoned_records(store)] == ["pending"]


def test_a_live_waiter_is_never_gone(clock: ManualClock, url: str, configure: Callable[..., Governor]) -> None:
    gov = configure(POLICY, database_url=url, agent="refunds")

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> str:
        return f"refunded {amount}"

    result: list[str] = []
    waiting = threading.Thread(target=lambda: result.append(issue_refund("A-1", 900)))
    waiting.start()
    clock.wait_parked("approval")
    [a] = approvals.listing(gov.db)
    for _ in range(int(3 * waiters.GRACE_SECONDS / waiters.HEARTBEAT_SECONDS)):
        clock.advance(waiters.HEARTBEAT_SECONDS)
        clock.wait_parked("approval")  # it woke, wrote its heartbeat and sleeps again
        seen = approvals.get(gov.db, a.id)
        assert seen.waiter_seen_at_us == clock.now_ns() // 1000
        assert not waiters.gone(seen, clock.now_ns() // 1000)
    _decisions.decide(gov.db, a.id, approve=True, by=LEAD)
    waiting.join(10)
    assert result == ["refunded 900"]


def pending_call(store: Database) -> str:
    """A wait-mode approval recorded as an agent's call would be (nobody waits on it yet)."""
    call = record_call(
        store,
        parse_policy(POLICY, "policy.yaml"),
        agent="refunds",
        environment="test",
        tool="issue_refund",
        args={"order_id": "A-1", "amount": 900},
        session="s",
    )
    assert call.approval_id is not None
    return call.approval_id


def test_a_waiter_that_writes_again_is_no_longer_gone(clock: ManualClock, store: Database) -> None:
    apr = pending_call(store)
    assert waiters.touch(store, apr, now_us=clock.now_ns() // 1000, resumable=False)
    clock.advance(waiters.GRACE_SECONDS + 1)
    assert waiters.gone(approvals.get(store, apr), clock.now_ns() // 1000)
    assert waiters.touch(store, apr, now_us=clock.now_ns() // 1000, resumable=False)
    assert not waiters.gone(approvals.get(store, apr), clock.now_ns() // 1000)
    assert _decisions.sweep(store) == []  # nothing to close: it is waited for


def test_the_cli_lists_and_approves_saying_the_waiter_is_gone(clock: ManualClock, url: str, store: Database) -> None:
    from click.testing import CliRunner

    from clearance.cli import main

    apr = pending_call(store)
    assert waiters.touch(store, apr, now_us=clock.now_ns() // 1000, resumable=False)

    def cli(*args: str) -> tuple[str, str]:
        result = CliRunner().invoke(main, [*args, "--database", url], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout, result.stderr

    out, err = cli("approvals", "list")
    assert out.splitlines()[0].split()[-1] == "WAITER" and out.splitlines()[1].split()[-1] == "-" and err == ""
    clock.advance(waiters.GRACE_SECONDS + 1)
    out, err = cli("approvals", "list")
    assert out.splitlines()[1].split()[-1] == "gone"
    assert err.startswith(f"warning: {apr}: waiter gone: the process waiting for this approval stopped at ")
    assert err.rstrip().endswith("nothing can run the call")
    [listed] = [json.loads(line) for line in cli("approvals", "list", "--json")[0].splitlines()]
    assert listed["waiter_gone"] and not listed["resumable"] and listed["waiter_seen_at_us"] is not None
    out, err = cli("approvals", "approve", apr, "--by", "lena")
    assert out.startswith(f"approved {apr}") and "nothing can run the call" in err


def test_a_waiter_that_finds_its_approval_expired_expires_it_whatever_its_last_heartbeat(
    clock: ManualClock, url: str, configure: Callable[..., Governor]
) -> None:
    # The clock may move between a waiter's heartbeat and its look at the approval: the look
    # then sees a heartbeat older than the grace, but the one looking is the waiter, alive.
    gov = configure(POLICY, database_url=url, agent="refunds")
    ticket = gov.begin("issue_refund", {"order_id": "A-1", "amount": 900}, None)
    assert ticket.approval_id is not None and ticket.waiter is not None
    try:
        assert waiters.touch(gov.db, ticket.approval_id, now_us=clock.now_ns() // 1000, resumable=False)
        clock.advance(10 * 60 + 1)
        assert gov._read(ticket.approval_id).status == "expired"
    finally:
        ticket.waiter.close()
    with gov.db.read() as cur:
        cur.execute(gov.db.sql("SELECT kind FROM events WHERE kind LIKE 'approval.%' ORDER BY seq"))
        assert [r[0] for r in cur.fetchall()] == ["approval.requested", "approval.expired"]
