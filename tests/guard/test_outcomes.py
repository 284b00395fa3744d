from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

import clearance
from clearance import StoreError
from clearance._clock import ManualClock
from clearance._guard._governor import Governor

from ..conftest import REPO


def kinds(db_path: Path) -> list[str]:
    with sqlite3.connect(db_path) as conn:
        return [k for (k,) in conn.execute("SELECT kind FROM events WHERE tool IS NOT NULL ORDER BY seq")]


def tool() -> Callable[[str], str]:
    @clearance.guard
    def send_email(to: str) -> str:
        return "sent"

    return send_email


def test_outcome_joins_the_next_decision_commit(configure: Callable[..., Governor], db_path: Path) -> None:
    configure(outcome_delay=30)
    send = tool()
    send("a@acme.com")
    assert kinds(db_path) == ["tool_call.decided"]  # outcome still queued
    send("a@acme.com")
    assert kinds(db_path) == ["tool_call.decided", "tool_call.finished", "tool_call.decided"]


def test_outcome_is_flushed_after_the_delay(
    clock: ManualClock, configure: Callable[..., Governor], db_path: Path
) -> None:
    gov = configure(outcome_delay=0.1)
    tool()("a@acme.com")
    clock.wait_parked("outcome flush")  # the flusher sleeps out the delay
    clock.advance(0.09)
    clock.wait_parked("outcome flush")  # woken, and asleep again: not yet
    assert kinds(db_path) == ["tool_call.decided"]
    clock.advance(0.02)  # past it (not to the float's last digit)
    clock.wait_parked("outcome flush")  # flushed, and idle
    assert kinds(db_path) == ["tool_call.decided", "tool_call.finished"]
    assert gov._outcomes.flushes == 1


def test_zero_delay_commits_before_the_call_returns(configure: Callable[..., Governor], db_path: Path) -> None:
    configure(outcome_delay=0)
    tool()("a@acme.com")
    assert kinds(db_path) == ["tool_call.decided", "tool_call.finished"]


def test_shutdown_and_reconfigure_commit_queued_outcomes(configure: Callable[..., Governor], db_path: Path) -> None:
    configure(outcome_delay=30)
    tool()("a@acme.com")
    clearance.shutdown()
    assert kinds(db_path)[-1] == "tool_call.finished"


def test_process_exit_commits_queued_outcomes(tmp_path: Path, db_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\n")
    script = textwrap.dedent(f"""
        import clearance
        clearance.configure(policy={str(policy)!r}, database_url={str(db_path)!r}, outcome_delay=60)

        @clearance.guard
        def ping() -> str:
            return "pong"

        ping()
    """)
    subprocess.run([sys.executable, "-c", script], check=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert kinds(db_path) == ["tool_call.decided", "tool_call.finished"]


def test_a_failed_transaction_keeps_queued_outcomes(configure: Callable[..., Governor], db_path: Path) -> None:
    configure(outcome_delay=30, busy_timeout=0.2)
    send = tool()
    send("a@acme.com")
    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    with pytest.raises(StoreError):
        send("a@acme.com")  # its decision cannot be recorded, so it does not run
    locker.execute("ROLLBACK")
    locker.close()
    send("a@acme.com")
    assert kinds(db_path) == ["tool_call.decided", "tool_call.finished", "tool_call.decided"]


def test_an_unwritable_outcome_does_not_hide_the_tools_result(
    configure: Callable[..., Governor], db_path: Path
) -> None:
    configure(outcome_delay=0, busy_timeout=0.2)
    locker = sqlite3.connect(db_path, isolation_level=None)

    @clearance.guard
    def send_email(to: str) -> str:
        locker.execute("BEGIN EXCLUSIVE")  # the store locks up while the tool runs
        return "sent"

    assert send_email("a@acme.com") == "sent"
    locker.execute("ROLLBACK")
    locker.close()
    clearance.flush()
    assert kinds(db_path) == ["tool_call.decided", "tool_call.finished"]


def test_a_commit_that_fails_records_nothing_of_the_call(
    configure: Callable[..., Governor], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(outcome_delay=30)
    ran: list[str] = []

    @clearance.guard
    def send_email(to: str) -> None:
        ran.append(to)

    send_email("first@acme.com")  # its outcome is queued
    from clearance._store import _events

    real_append = _events.append

    def failing_append(*args: object) -> None:
        real_append(*args)  # type: ignore[arg-type]
        raise StoreError("disk full")  # fails after the rows were written, before COMMIT

    monkeypatch.setattr(_events, "append", failing_append)
    with pytest.raises(StoreError, match="disk full"):
        send_email("second@acme.com")
    monkeypatch.setattr(_events, "append", real_append)
    clearance.flush()
    assert ran == ["first@acme.com"]
    assert kinds(db_path) == ["tool_call.decided", "tool_call.finished"]  # the outcome survived; no ghost


def test_a_failed_approval_request_releases_its_waiter(
    configure: Callable[..., Governor], monkeypatch: pytest.MonkeyPatch
) -> None:
    configure()
    from clearance import _notify
    from clearance._store import _approvals

    opened: list[_notify.Waiter] = []
    real_waiter = _notify.Waiter

    class Tracked(real_waiter):  # type: ignore[valid-type, misc]
        def __init__(self) -> None:
            super().__init__()
            opened.append(self)

    import clearance._guard._governor as governor_module

    monkeypatch.setattr(governor_module, "Waiter", Tracked)
    monkeypatch.setattr(_approvals, "insert", lambda *a: (_ for _ in ()).throw(StoreError("no space")))

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> None: ...

    with pytest.raises(StoreError):
        issue_refund("A", 900)
    assert len(opened) == 1 and opened[0]._sock.fileno() == -1  # closed


def test_configuring_again_commits_the_old_configurations_outcomes(
    configure: Callable[..., Governor], db_path: Path
) -> None:
    configure(outcome_delay=30)
    tool()("a@acme.com")
    configure(outcome_delay=30)  # swaps in a new governor; the old one flushes as it closes
    assert kinds(db_path) == ["tool_call.decided", "tool_call.finished"]
