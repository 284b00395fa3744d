"""Remote SDK mode against a real `clearance serve` process."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import clearance
from clearance import ConfigurationError, ServerError, ToolCallBlocked
from clearance._guard import _runtime
from clearance._remote._client import Client

from .conftest import Server

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 5m}}
      - {id: cap, when: 'facts.sum_24h_amount + args.amount > 1000', effect: block, reason: daily cap}
  send_email:
    rules:
      - {id: ext, when: '!all_in(domains(args.to), ["acme.com"])', effect: block, reason: outside mail}
  lookup:
    when_server_unreachable: allow
    rules:
      - {id: many, when: 'facts.calls_1h > 100', effect: block}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = Server(tmp_path / "server.db", port, tmp_path / "server.log")
    srv.start()
    srv.publish(POLICY)
    yield srv
    clearance.shutdown()
    srv.stop()


def count_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every `POST /v1/check` the SDK makes."""
    checks: list[str] = []
    real = Client.call

    def counting(self: Client, method: str, path: str, **kw: Any) -> httpx.Response:
        if path == "/v1/check":
            checks.append(path)
        return real(self, method, path, **kw)

    monkeypatch.setattr(Client, "call", counting)
    return checks


def remote(server: Server, tmp_path: Path, **kw: Any) -> None:
    clearance.configure(server_url=server.base, api_key=server.agent, spool_path=str(tmp_path / "spool" / "s.db"), **kw)


def tools(on_pending: Callable[[clearance.PendingApproval], None] | None = None) -> tuple[Any, Any, Any]:
    @clearance.guard
    def send_email(to: str) -> str:
        return "sent"

    @clearance.guard(on_pending=on_pending)
    def issue_refund(order_id: str, amount: float) -> str:
        return f"refunded {amount}"

    @clearance.guard
    def lookup(q: str) -> str:
        return "found"

    return send_email, issue_refund, lookup


def test_local_decisions_need_no_network_and_are_shipped(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote(server, tmp_path)
    send_email, _, _ = tools()
    checks = count_checks(monkeypatch)
    assert send_email("a@acme.com") == "sent"
    with pytest.raises(ToolCallBlocked, match="outside mail"):
        send_email("eve@evil.com")
    assert checks == []  # decided in-process
    clearance.flush()
    got = [(e["kind"], e.get("decision")) for e in server.events(tool="send_email")]
    assert got == [("tool_call.decided", "allow"), ("tool_call.finished", "ok"), ("tool_call.decided", "block")]
    assert {e["agent"] for e in server.events()} == {"refunds", "*"}


def test_facts_and_approvals_are_the_servers(server: Server, tmp_path: Path) -> None:
    def approve(p: clearance.PendingApproval) -> None:
        threading.Timer(
            0.2,
            lambda: httpx.post(
                f"{server.base}/v1/approvals/{p.approval_id}/approve", headers={"X-API-Key": server.approver}
            ),
        ).start()

    remote(server, tmp_path)
    _, issue_refund, _ = tools(approve)
    assert issue_refund("A", 150) == "refunded 150"  # facts rule: decided on the server
    assert issue_refund("B", 500) == "refunded 500"  # approved on the server
    with pytest.raises(ToolCallBlocked, match="daily cap"):
        issue_refund("C", 400)  # 150 + 500 + 400 > 1000, summed by the server
    clearance.flush()
    kinds = [e["kind"] for e in server.events(tool="issue_refund")]
    assert kinds.count("tool_call.decided") == 3 and kinds.count("tool_call.finished") == 2
    assert kinds.count("approval.decided") == 1


def test_denial_carries_the_note(server: Server, tmp_path: Path) -> None:
    def deny(p: clearance.PendingApproval) -> None:
        threading.Timer(
            0.2,
            lambda: httpx.post(
                f"{server.base}/v1/approvals/{p.approval_id}/deny",
                headers={"X-API-Key": server.approver},
                json={"note": "customer not verified"},
            ),
        ).start()

    remote(server, tmp_path)
    _, issue_refund, _ = tools(deny)
    with pytest.raises(clearance.ApprovalDenied) as info:
        issue_refund("B", 500)
    assert info.value.note == "customer not verified"


def test_an_activated_revision_reaches_the_sdk_promptly(server: Server, tmp_path: Path) -> None:
    remote(server, tmp_path)
    send_email, _, _ = tools()
    assert send_email("a@acme.com") == "sent"
    rev = server.publish("version: 1\ndefault: block\n")
    started = time.monotonic()
    while _runtime.current().policy.revision != rev:
        assert time.monotonic() - started < 10, "the new revision did not arrive"
        time.sleep(0.01)
    with pytest.raises(ToolCallBlocked):
        send_email("a@acme.com")


def test_server_killed_and_restarted_mid_run_loses_and_duplicates_nothing(server: Server, tmp_path: Path) -> None:
    remote(server, tmp_path)
    send_email, _, lookup = tools()
    for _ in range(20):
        send_email("a@acme.com")
    server.kill()
    for _ in range(30):
        send_email("a@acme.com")  # decided locally from the synced policy, spooled
    with pytest.raises(ToolCallBlocked, match="cannot reach the Clearance server.*fails closed"):
        tools()[1]("X", 50)  # needs the server's facts: fails closed
    assert lookup("q") == "found"  # its policy allows calls while the server is unreachable
    server.start()
    clearance.flush()
    decided = server.events(tool="send_email", kind="tool_call.decided")
    finished = server.events(tool="send_email", kind="tool_call.finished")
    assert len(decided) == 50 and len(finished) == 50
    assert len({e["id"] for e in server.events()}) == len(server.events())
    unreachable = [e for e in server.events(kind="tool_call.decided") if e["rule_ids"] == ["server_unreachable"]]
    assert [(e["tool"], e["decision"]) for e in unreachable] == [("issue_refund", "block"), ("lookup", "allow")]
    r = httpx.get(f"{server.base}/v1/audit/verify", headers={"X-API-Key": server.admin}).json()
    assert r["ok"]


def test_a_lost_acknowledgement_is_not_a_duplicate(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote(server, tmp_path)
    send_email, _, _ = tools()
    governor = _runtime.current()
    governor.shipper.close()  # ship by hand
    for _ in range(5):
        send_email("a@acme.com")
    real_drop = governor.spool.drop
    monkeypatch.setattr(governor.spool, "drop", lambda up_to: None)  # the server took it; we forgot
    governor.shipper.ship_once()
    monkeypatch.setattr(governor.spool, "drop", real_drop)
    governor.shipper.ship_once()  # sent again
    assert governor.spool.size() == 0
    assert len(server.events(tool="send_email")) == 10


def test_last_good_snapshot_keeps_deciding_when_the_server_is_down(server: Server, tmp_path: Path) -> None:
    remote(server, tmp_path)
    send_email, _, _ = tools()
    send_email("a@acme.com")
    clearance.shutdown()
    server.kill()
    remote(server, tmp_path)  # a fresh start while the server is down: the snapshot on disk
    assert send_email("a@acme.com") == "sent"
    with pytest.raises(ToolCallBlocked, match="outside mail"):
        send_email("eve@evil.com")
    clearance.shutdown()
    server.start()


def test_no_server_and_no_snapshot_fails_at_configure(server: Server, tmp_path: Path) -> None:
    server.kill()
    with pytest.raises(ConfigurationError, match="no last good snapshot"):
        remote(server, tmp_path)
    server.start()


def test_keys_that_are_not_agent_keys_are_refused(server: Server, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not an agent key"):
        clearance.configure(server_url=server.base, api_key=server.admin, spool_path=str(tmp_path / "s.db"))
    with pytest.raises(ConfigurationError, match="refused the API key"):
        clearance.configure(
            server_url=server.base, api_key="clr_test_0123456789abcdef_" + "x" * 43, spool_path=str(tmp_path / "s.db")
        )
    with pytest.raises(ConfigurationError, match="needs an agent key"):
        clearance.configure(server_url=server.base, spool_path=str(tmp_path / "s.db"))


def test_server_evaluation_decides_every_call_on_the_server(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote(server, tmp_path, evaluation="server")
    send_email, _, _ = tools()
    checks = count_checks(monkeypatch)
    send_email("a@acme.com")
    with pytest.raises(ToolCallBlocked):
        send_email("eve@evil.com")
    assert len(checks) == 2


def test_a_503_from_the_server_takes_the_unreachable_path(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    remote(server, tmp_path)
    _, issue_refund, lookup = tools()
    real = Client.call

    def unavailable(self: Client, method: str, path: str, **kw: Any) -> httpx.Response:
        if path == "/v1/check":
            raise ServerError(
                "the Clearance server answered 503: the store is unavailable", status=503, code="unavailable"
            )
        return real(self, method, path, **kw)

    monkeypatch.setattr(Client, "call", unavailable)
    with pytest.raises(ToolCallBlocked, match="answered 503.*fails closed"):
        issue_refund("A", 50)
    assert lookup("q") == "found"  # when_server_unreachable: allow


def test_an_edit_approved_on_the_server_runs_in_the_remote_agent_once(server: Server, tmp_path: Path) -> None:
    answers: list[httpx.Response] = []

    def approve_with_edit(p: clearance.PendingApproval) -> None:
        def go() -> None:
            h = {"X-API-Key": server.approver}
            url = f"{server.base}/v1/approvals/{p.approval_id}/approve"
            answers.append(httpx.post(url, headers=h, json={"args": {"amount": "lots"}}))
            answers.append(httpx.post(url, headers=h, json={"args": {"amount": 250}, "note": "partial refund"}))

        threading.Timer(0.2, go).start()

    remote(server, tmp_path)
    ran: list[Any] = []

    @clearance.guard(on_pending=approve_with_edit)
    def issue_refund(order_id: str, amount: float) -> str:
        approval = clearance.current_approval()
        ran.append((amount, approval.note if approval else None))
        return f"refunded {amount}"

    assert issue_refund("E", 900) == "refunded 250.0"
    assert ran == [(250.0, "partial refund")]
    assert answers[0].status_code == 422
    assert answers[0].json()["error"]["details"] == [
        {"location": "body.args", "message": 'amount: expected a number, got "lots"'}
    ]
    assert answers[1].status_code == 200 and answers[1].json()["edited_args"] == {"order_id": "E", "amount": 250}
    clearance.flush()
    approval_id = answers[1].json()["id"]
    deadline = time.monotonic() + 10
    while True:  # the outcome reaches the server with the next shipment
        a = httpx.get(f"{server.base}/v1/approvals/{approval_id}", headers={"X-API-Key": server.agent}).json()
        if a["status"] == "executed" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert a["status"] == "executed" and a["result"] == "refunded 250.0" and a["claimed_by"].startswith("key:")
    assert a["executed_args"] == {"order_id": "E", "amount": 250}
    other = httpx.get(f"{server.base}/v1/approvals/{approval_id}", headers={"X-API-Key": server.approver}).json()
    assert other["executed_args"] is None  # the full arguments only to the agent
    assert other["result"] == "refunded 250.0"  # the result to those who decide, as the audit log shows it
    kinds = [e["kind"] for e in server.events(tool="issue_refund")]
    assert kinds[-2:] == ["tool_call.finished", "approval.executed"]
    claim = httpx.post(
        f"{server.base}/v1/approvals/{approval_id}/claim", headers={"X-API-Key": server.agent}, json={"by": "again"}
    )
    assert claim.status_code == 409  # it ran: nobody runs it twice


def test_a_remote_agent_killed_while_waiting_is_resumed_once_from_another_process(
    server: Server, tmp_path: Path
) -> None:
    import os
    import signal
    import subprocess
    import sys

    from ..conftest import REPO

    (tmp_path / "remote_tools.py").write_text(
        "import clearance, os\n"
        "@clearance.guard\n"
        "def issue_refund(order_id: str, amount: float) -> str:\n"
        "    with open(os.environ['LEDGER'], 'a') as f:\n"
        "        f.write(f'{order_id} {amount}\\n')\n"
        "    return f'refunded {amount}'\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{tmp_path}",
        "LEDGER": str(tmp_path / "ledger"),
        "CLEARANCE_SERVER_URL": server.base,
        "CLEARANCE_API_KEY": server.agent,
    }

    def python(code: str, spool: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", code],
            env={**env, "CLEARANCE_SPOOL_PATH": str(tmp_path / spool)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    agent = python("import remote_tools; remote_tools.issue_refund('R-1', 900)", "agent.db")
    headers = {"X-API-Key": server.approver}
    deadline = time.monotonic() + 20
    while not (found := httpx.get(f"{server.base}/v1/approvals", headers=headers).json()):
        assert time.monotonic() < deadline and agent.poll() is None, agent.stderr.read() if agent.stderr else ""
        time.sleep(0.05)
    agent.send_signal(signal.SIGKILL)
    agent.communicate(timeout=10)
    approval_id = found[0]["id"]
    httpx.post(f"{server.base}/v1/approvals/{approval_id}/approve", headers=headers, json={"args": {"amount": 120}})
    code = (
        "import clearance, remote_tools\n"
        "try:\n"
        f"    print('RESULT', clearance.resume({approval_id!r}))\n"
        "except clearance.ApprovalAlreadyExecuted:\n"
        "    print('ALREADY')\n"
        "clearance.shutdown()\n"
    )
    resumes = [python(code, f"resume{i}.db") for i in range(2)]
    outputs = [p.communicate(timeout=60) for p in resumes]
    assert sorted(out.strip() for out, _ in outputs) == ["ALREADY", "RESULT refunded 120.0"], outputs
    assert (tmp_path / "ledger").read_text().splitlines() == ["R-1 120.0"]
    deadline = time.monotonic() + 10
    while (a := httpx.get(f"{server.base}/v1/approvals/{approval_id}", headers=headers).json())["status"] != "executed":
        assert time.monotonic() < deadline, a
        time.sleep(0.05)
    assert a["claimed_by"].startswith("key:")


def test_async_tools_await_the_decision_without_a_waiting_thread(server: Server, tmp_path: Path) -> None:
    import asyncio

    remote(server, tmp_path)

    @clearance.guard
    async def issue_refund(order_id: str, amount: float) -> str:
        return f"refunded {amount}"

    async def main() -> tuple[str, int, list[str]]:
        call = asyncio.ensure_future(issue_refund("A", 900))
        ticks = 0
        headers = {"X-API-Key": server.approver}
        async with httpx.AsyncClient(base_url=server.base, headers=headers) as http:
            while not (found := (await http.get("/v1/approvals")).json()):
                await asyncio.sleep(0.01)
            for _ in range(20):  # the loop keeps running while the call waits
                await asyncio.sleep(0.01)
                ticks += 1
            waiting_threads = [t.name for t in threading.enumerate() if t.name.startswith("asyncio_")]
            await http.post(f"/v1/approvals/{found[0]['id']}/approve")
        return await asyncio.wait_for(call, 10), ticks, waiting_threads

    result, ticks, waiting_threads = asyncio.run(main())
    assert result == "refunded 900" and ticks == 20
    assert waiting_threads == []  # the long poll is awaited, not parked on a worker thread
