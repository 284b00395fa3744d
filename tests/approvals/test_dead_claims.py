"""A resumer killed inside the tool: its claim is seen to be dead, nothing re-runs the call, a person resolves it.

Real processes on both stores: an agent waits for the approval and is killed, a resumer claims
the approved call and is killed with SIGKILL inside the tool's body. The claim's lease is crossed
by moving this process's clock (the killed resumer renewed it on the real one). Before the
lease, every later resume said "is running in agent:refunds (pid N)" for ever, and nothing could
resolve it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

import clearance
from clearance import _decisions
from clearance._clock import ManualClock
from clearance._decisions import Decider
from clearance._guard._governor import Governor
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store import _claims as claims
from clearance._store import _keys as keys
from clearance.cli import main
from clearance.server import ServerSettings, create_app

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
# The tool appends a line to a ledger file (so the test counts how often it really ran), then,
# in the resumer the test kills, hangs inside its body.
TOOLS = """
import os, time
import clearance

LEDGER = os.environ["LEDGER"]

def _done(result):
    pass

@clearance.guard(on_approval=_done)
def issue_refund(order_id: str, amount: float) -> str:
    with open(LEDGER, "a") as f:
        f.write(f"{order_id} {amount}\\n")
    if os.environ.get("HANG"):
        time.sleep(600)
    return f"refunded {amount}"
"""
AGENT = "import refund_tools\nrefund_tools.issue_refund('A-1', 900)\n"
RESUMER = "import sys, clearance, refund_tools\nclearance.resume(sys.argv[1])\n"


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "audit.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


@pytest.fixture
def store(url: str) -> Iterator[Database]:
    db = Database(url)
    yield db
    db.close()


def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> dict[str, str]:
    (tmp_path / "refund_tools.py").write_text(TOOLS)
    (tmp_path / "policy.yaml").write_text(POLICY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "refund_tools", raising=False)
    monkeypatch.setenv("LEDGER", str(tmp_path / "ledger"))
    monkeypatch.delenv("HANG", raising=False)
    return {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{tmp_path}",
        "LEDGER": str(tmp_path / "ledger"),
        "CLEARANCE_POLICY": str(tmp_path / "policy.yaml"),
        "CLEARANCE_DATABASE_URL": url,
        "CLEARANCE_AGENT": "refunds",
    }


def _run(env: dict[str, str], code: str, *argv: str, **more: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        env={**env, **more},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _killed(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=10)


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def dead_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, store: Database) -> approvals.Approval:
    """An approved call whose resumer was killed inside the tool: the approval, as the killed resumer left it."""
    env = _env(tmp_path, monkeypatch, url)
    agent = _run(env, AGENT)
    found: list[approvals.Approval] = []

    def waiting() -> bool:
        assert agent.poll() is None, agent.communicate()
        found[:] = [a for a in approvals.listing(store) if a.waiter_seen_at_us is not None]
        return bool(found)

    until(waiting, "the agent waiting for the approval", timeout=30)
    _killed(agent)
    _decisions.decide(store, found[0].id, approve=True, by=LEAD)
    resumer = _run(env, RESUMER, found[0].id, HANG="1")
    try:
        until(
            lambda: _lines(tmp_path / "ledger") == ["A-1 900.0"] or resumer.poll() is not None,
            "the tool running",
            timeout=90,
        )
        assert resumer.poll() is None, resumer.communicate()
    finally:
        _killed(resumer)  # inside the tool's body
    left = approvals.get(store, found[0].id)
    assert left.claimed_by is not None and left.claim_seen_at_us is not None and left.status == "approved"
    return left


def _cli(url: str, *args: str) -> Any:
    return CliRunner().invoke(main, [*args, "--database", url], catch_exceptions=False)


def _resolved(store: Database) -> list[dict[str, Any]]:
    with store.read() as cur:
        cur.execute(store.sql("SELECT body FROM events WHERE kind = 'approval.claim_resolved' ORDER BY seq"))
        return [json.loads(r[0]) for r in cur.fetchall()]


def test_a_claim_killed_inside_the_tool_is_dead_after_the_lease_and_runs_again_only_after_did_not_run(
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    store: Database,
    configure: Callable[..., Governor],
) -> None:
    a = dead_claim(tmp_path, monkeypatch, url, store)
    assert a.claim_seen_at_us is not None
    clock.set(a.claim_seen_at_us / 1e6)
    configure(POLICY, database_url=url, agent="refunds")  # another process, later: a resume or a worker
    import refund_tools  # noqa: F401

    with pytest.raises(clearance.ApprovalAlreadyExecuted) as running:
        clearance.resume(a.id)
    assert running.value.dead is None and "is running in" in str(running.value)  # within the lease
    clock.advance(claims.GRACE_SECONDS - 1)
    assert not claims.dead(approvals.get(store, a.id), clock.now_ns() // 1000)
    assert "outcome unknown" not in _cli(url, "approvals", "list").stdout
    clock.advance(2)
    assert claims.dead(approvals.get(store, a.id), clock.now_ns() // 1000)

    with pytest.raises(clearance.ApprovalAlreadyExecuted) as dead:
        clearance.resume(a.id)
    assert dead.value.dead is not None and "claimed by a dead process" in str(dead.value)
    assert f"clearance approvals resolve {a.id} --ran|--did-not-run" in str(dead.value)
    assert clearance.run_due() == 0  # the worker does not re-run it either: it may have run
    assert _lines(tmp_path / "ledger") == ["A-1 900.0"]

    listed = _cli(url, "approvals", "list")
    assert a.id in listed.stdout and "outcome unknown" in listed.stdout
    assert f"warning: {a.id}: claimed by a dead process" in listed.stderr
    [row] = [json.loads(line) for line in _cli(url, "approvals", "list", "--json").stdout.splitlines()]
    assert row["id"] == a.id and row["claim_dead"] is True

    released = _cli(url, "approvals", "resolve", a.id, "--did-not-run", "--by", "lena", "--note", "no refund seen")
    assert released.exit_code == 0 and f"released {a.id}" in released.stdout
    [record] = _resolved(store)
    assert record["approval_id"] == a.id and record["decision"] == "did_not_run" and record["by"] == "lena"
    assert record["claimed_by"] == a.claimed_by and record["claim_seen_at_us"] == a.claim_seen_at_us
    assert record["note"] == "no refund seen"
    assert "outcome unknown" not in _cli(url, "approvals", "list").stdout

    assert clearance.run_due() == 1  # its waiter is gone and it is runnable again: the worker runs it
    assert _lines(tmp_path / "ledger") == ["A-1 900.0", "A-1 900.0"]  # exactly once more
    assert clearance.run_due() == 0
    with pytest.raises(clearance.ApprovalAlreadyExecuted):
        clearance.resume(a.id)
    assert approvals.get(store, a.id).status == "executed"
    assert _lines(tmp_path / "ledger") == ["A-1 900.0", "A-1 900.0"]


def test_ran_closes_it_as_executed_with_an_unknown_result_and_nothing_runs_it(
    clock: ManualClock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    store: Database,
    configure: Callable[..., Governor],
) -> None:
    a = dead_claim(tmp_path, monkeypatch, url, store)
    assert a.claim_seen_at_us is not None
    clock.set(a.claim_seen_at_us / 1e6)
    early = _cli(url, "approvals", "resolve", a.id, "--ran", "--by", "lena")
    assert early.exit_code != 0 and "not claimed by a dead process" in early.output  # its claimant may be alive
    clock.advance(claims.GRACE_SECONDS + 1)
    assert _cli(url, "approvals", "resolve", a.id, "--by", "lena").exit_code != 0  # say which

    closed = _cli(url, "approvals", "resolve", a.id, "--ran", "--by", "lena")
    assert closed.exit_code == 0 and f"closed {a.id}" in closed.stdout
    done = approvals.get(store, a.id)
    assert done.status == "executed" and done.error == "result unknown: lena confirmed it ran"
    assert not claims.dead(done, clock.now_ns() // 1000)
    [record] = _resolved(store)
    assert record["decision"] == "ran"

    configure(POLICY, database_url=url, agent="refunds")
    import refund_tools  # noqa: F401

    assert clearance.run_due() == 0
    with pytest.raises(clearance.ApprovalAlreadyExecuted) as ran:
        clearance.resume(a.id)
    assert ran.value.status == "executed" and ran.value.dead is None
    assert _lines(tmp_path / "ledger") == ["A-1 900.0"]
    again = _cli(url, "approvals", "resolve", a.id, "--did-not-run", "--by", "lena")
    assert again.exit_code != 0  # resolved once: nothing left to resolve


def test_the_api_shows_the_dead_claim_and_an_approver_resolves_it(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str, store: Database
) -> None:
    a = dead_claim(tmp_path, monkeypatch, url, store)
    assert a.claim_seen_at_us is not None
    clock.set(a.claim_seen_at_us / 1e6 + claims.GRACE_SECONDS + 1)
    _, approver = keys.create(store, name="p", scopes=["approver"], agent=None, environment="test", created_by="t")
    _, agent = keys.create(store, name="g", scopes=["agent"], agent="refunds", environment="test", created_by="t")
    _, own = keys.create(store, name="o", scopes=["approver"], agent="refunds", environment="test", created_by="t")
    with TestClient(create_app(ServerSettings(database_url=url))) as client:
        shown = client.get(f"/v1/approvals/{a.id}", headers={"X-API-Key": approver}).json()
        assert shown["claim_dead"] is True and shown["claim_seen_at_us"] == a.claim_seen_at_us
        by_agent = client.post(f"/v1/approvals/{a.id}/resolve", json={"ran": False}, headers={"X-API-Key": agent})
        assert by_agent.status_code == 403  # the agent's credentials never resolve it
        # Saying "it did not run" lets it run again: only who may decide the approval may say it.
        forbidden = client.post(f"/v1/approvals/{a.id}/resolve", json={"ran": False}, headers={"X-API-Key": own})
        assert forbidden.status_code == 403 and "requesting agent" in forbidden.json()["error"]["message"]
        bad = client.post(f"/v1/approvals/{a.id}/resolve", json={"ran": "maybe"}, headers={"X-API-Key": approver})
        assert bad.status_code == 422
        done = client.post(f"/v1/approvals/{a.id}/resolve", json={"ran": False}, headers={"X-API-Key": approver})
        assert done.status_code == 200, done.text
        assert done.json()["claim_dead"] is False and done.json()["claimed_by"] is None
        again = client.post(f"/v1/approvals/{a.id}/resolve", json={"ran": False}, headers={"X-API-Key": approver})
        assert again.status_code == 409 and again.json()["error"]["code"]
        missing = client.post("/v1/approvals/apr_nope/resolve", json={"ran": True}, headers={"X-API-Key": approver})
        assert missing.status_code == 404
    [record] = _resolved(store)
    assert record["decision"] == "did_not_run" and record["by"].startswith("key:")


REMOTE_POLICY = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 10m}}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """A real `clearance serve` with `REMOTE_POLICY` active, on each store."""
    from ..server.conftest import Server, _free_port

    url = str(tmp_path / "server.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    srv = Server(url, _free_port(), tmp_path / "server.log")
    srv.start_timeout = 120
    srv.start()
    srv.publish(REMOTE_POLICY)
    yield srv
    clearance.shutdown()
    srv.stop()


def test_a_remote_resumer_keeps_its_lease_through_the_server_and_its_death_shows_the_same(
    clock: ManualClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, served: Any
) -> None:
    import httpx

    env = _env(tmp_path, monkeypatch, str(served.db))
    for name in ("CLEARANCE_POLICY", "CLEARANCE_DATABASE_URL"):
        env.pop(name)
    env.update(CLEARANCE_SERVER_URL=served.base, CLEARANCE_API_KEY=served.agent)
    asked = httpx.post(
        f"{served.base}/v1/check",
        headers={"X-API-Key": served.agent},
        json={"tool": "issue_refund", "args": {"order_id": "A-1", "amount": 900}, "approval_mode": "async"},
    ).json()
    approval_id = asked["approval_id"]
    ok = httpx.post(f"{served.base}/v1/approvals/{approval_id}/approve", headers={"X-API-Key": served.approver})
    assert ok.status_code == 200, ok.text

    resumer = _run(env, RESUMER, approval_id, HANG="1", CLEARANCE_SPOOL_PATH=str(tmp_path / "r.db"))
    try:
        until(
            lambda: _lines(tmp_path / "ledger") == ["A-1 900.0"] or resumer.poll() is not None,
            "the tool running",
            timeout=90,
        )
        assert resumer.poll() is None, resumer.communicate()
    finally:
        _killed(resumer)
    store = Database(str(served.db))
    try:
        left = approvals.get(store, approval_id)
        assert left.claim_seen_at_us is not None  # the remote claimant took a lease
        clock.set(left.claim_seen_at_us / 1e6 + claims.GRACE_SECONDS + 1)
        assert claims.dead(left, clock.now_ns() // 1000)
        released = _cli(str(served.db), "approvals", "resolve", approval_id, "--did-not-run", "--by", "lena")
        assert released.exit_code == 0, released.output
    finally:
        store.close()

    clearance.configure(server_url=served.base, api_key=served.agent, spool_path=str(tmp_path / "s.db"))
    import refund_tools  # noqa: F401

    assert clearance.resume(approval_id) == "refunded 900.0"
    assert _lines(tmp_path / "ledger") == ["A-1 900.0", "A-1 900.0"]  # exactly once more
    with pytest.raises(clearance.ApprovalAlreadyExecuted):
        clearance.resume(approval_id)


def test_a_process_forked_after_configure_claims_as_itself(url: str, configure: Any) -> None:
    gov = configure(POLICY, database_url=url, agent="refunds")
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # a Celery prefork child, say: configured by its parent
        os.write(write, gov.executor.encode())
        os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    theirs = os.read(read, 1000).decode()
    os.close(read)
    assert theirs != gov.executor and f"(pid {child} on " in theirs
