"""The model-call gate in remote mode, against a real `clearance serve` process.

A remote agent keeps no facts: the server decides each model call (`POST /v1/check` of the
reserved tool), by the budgets alone, and records it; an approval is waited for by long poll.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import clearance
from clearance import ApprovalDenied, ModelCallBlocked, ToolCallBlocked
from clearance._guard import _runtime
from clearance.policy._compile import MODEL_CALL
from tests._wait import until
from tests.server.conftest import Server

from ._shared import PRICES

ASKING = """\
version: 1
default: block
tools:
  lookup: {default: allow}
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval, approval: {timeout: 5m}}
"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = Server(tmp_path / "server.db", port, tmp_path / "server.log")
    srv.start()
    yield srv
    clearance.shutdown()
    srv.stop()


def connect(server: Server, tmp_path: Path, policy: str) -> None:
    server.publish(policy)
    clearance.configure(
        server_url=server.base,
        api_key=server.agent,
        spool_path=str(tmp_path / "spool" / "s.db"),
        price_overrides=PRICES,
    )


def spent(usd: float) -> None:
    """Spend `usd` in session s1 and ship it, so the server's facts see it."""
    clearance.record_usage("scripted", round(usd * 1_000_000), 0, session="s1")
    clearance.flush()


def gate() -> None:
    _runtime.current().before_model_call("s1", "gpt-test")


def pending(server: Server) -> list[dict[str, object]]:
    r = httpx.get(f"{server.base}/v1/approvals", headers={"X-API-Key": server.admin})
    return [a for a in r.json() if a["status"] == "pending"]


def test_the_server_decides_a_blocking_budget_with_the_tool_call_s_reason(server: Server, tmp_path: Path) -> None:
    connect(
        server,
        tmp_path,
        "version: 1\ndefault: block\ntools: {lookup: {default: allow}}\nbudgets:\n  session: {max_cost_usd: 1}\n",
    )
    lookup = clearance.guard_tool("lookup", lambda q: q)
    gate()  # nothing spent: the server lets it through (and records it)
    spent(1.0)
    with pytest.raises(ModelCallBlocked) as blocked:
        gate()
    with clearance.session("s1"), pytest.raises(ToolCallBlocked) as by_tool:
        lookup("x")
    assert blocked.value.reason == by_tool.value.reason == "session budget exhausted: $1.0000 spent, limit $1"
    assert blocked.value.rule_ids == ("budget:session",)
    decided = [e for e in server.events(kind="tool_call.decided") if e["tool"] == MODEL_CALL]
    assert [(e["decision"], e["args"]) for e in decided] == [
        ("allow", {"model": "gpt-test"}),
        ("block", {"model": "gpt-test"}),
    ]


def test_a_budget_that_asks_waits_for_the_server_s_approval(server: Server, tmp_path: Path) -> None:
    connect(server, tmp_path, ASKING)
    spent(1.0)
    outcome: list[BaseException | None] = []

    def call() -> None:
        try:
            gate()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    waiting = threading.Thread(target=call, daemon=True)
    waiting.start()
    until(lambda: pending(server), "the model call's approval")
    [asked] = pending(server)
    assert asked["tool"] == MODEL_CALL and asked["args"] == {"model": "gpt-test"} and asked["session"] == "s1"
    assert asked["reason"] == "session budget exhausted: $1.0000 spent, limit $1; an approver may extend it"
    approve = f"{server.base}/v1/approvals/{asked['id']}/approve"
    httpx.post(approve, headers={"X-API-Key": server.approver}, json={}).raise_for_status()
    waiting.join(20)
    assert outcome == [None]  # went ahead: once, no extension

    again = threading.Thread(target=call, daemon=True)
    again.start()
    until(lambda: pending(server), "the next model call's approval")
    [second] = pending(server)
    deny = f"{server.base}/v1/approvals/{second['id']}/deny"
    httpx.post(deny, headers={"X-API-Key": server.approver}, json={"note": "enough"}).raise_for_status()
    again.join(20)
    assert len(outcome) == 2 and isinstance(outcome[1], ApprovalDenied)
    clearance.flush()
    until(
        lambda: (
            httpx.get(f"{server.base}/v1/approvals/{asked['id']}", headers={"X-API-Key": server.admin}).json()["status"]
            == "executed"
        ),
        "the approved model call recorded executed",
    )


def test_without_budgets_no_request_is_made(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.server.test_remote import count_checks

    connect(server, tmp_path, "version: 1\ndefault: block\n")
    checks = count_checks(monkeypatch)
    for _ in range(5):
        gate()
    assert checks == []


def test_an_unreachable_server_fails_the_model_call_closed(server: Server, tmp_path: Path) -> None:
    connect(server, tmp_path, ASKING)
    server.kill()
    with pytest.raises(ModelCallBlocked) as blocked:
        gate()
    assert blocked.value.rule_ids == ("server_unreachable",) and "fails closed" in blocked.value.reason
