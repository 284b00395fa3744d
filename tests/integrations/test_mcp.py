"""MCP: `clearance mcp-proxy` between a real MCP client and a real upstream server, and the client hook."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.server.mcpserver import MCPServer  # noqa: E402

from clearance._guard._governor import Governor  # noqa: E402
from clearance._guard._recording import RUNNING  # noqa: E402
from clearance._store import Database  # noqa: E402
from clearance._store import _approvals as approvals  # noqa: E402

from ..conftest import REPO  # noqa: E402
from ..server.conftest import _free_port  # noqa: E402
from ._shared import POLICY, decide_when_pending, records, while_deciding  # noqa: E402

UPSTREAM = Path(__file__).with_name("mcp_upstream.py")


@pytest.fixture
def proxy_env(tmp_path: Path) -> dict[str, str]:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLEARANCE_")},
        "PYTHONPATH": str(REPO / "src"),
        "CLEARANCE_POLICY": str(policy),
        "CLEARANCE_DATABASE_URL": str(tmp_path / "audit.db"),
        "CLEARANCE_AGENT": "mcp-proxy",
    }


def proxy_command(ledger: Path, *extra: str) -> list[str]:
    upstream = f"refunds={sys.executable} {UPSTREAM} {ledger}"
    return [sys.executable, "-m", "clearance.cli", "mcp-proxy", "--upstream", upstream, *extra]


def text(result: Any) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content)


async def call(target: Any, amount: float, *, times: int = 1) -> tuple[list[str], list[Any]]:
    if not isinstance(target, MCPServer):
        # The client stands for a desktop assistant: this process's own MCP hook (installed by
        # earlier tests) must not govern it — the proxy does — so it runs as governed already.
        RUNNING.set("issue_refund")
    async with Client(target) as client:
        names = [t.name for t in (await client.list_tools()).tools]
        results = [await client.call_tool("issue_refund", {"order_id": "A-1", "amount": amount}) for _ in range(times)]
    return names, results


def stdio(ledger: Path, env: dict[str, str], *extra: str) -> StdioServerParameters:
    command, *args = proxy_command(ledger, *extra)
    return StdioServerParameters(command=command, args=args, env=env)


def db_of(env: dict[str, str]) -> Database:
    return Database(env["CLEARANCE_DATABASE_URL"])


def test_denied_over_stdio_the_refund_never_reaches_the_upstream(tmp_path: Path, proxy_env: dict[str, str]) -> None:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    subprocess.run([*proxy_command(ledger), "--help"], env=proxy_env, check=True, capture_output=True)
    db = db_of(proxy_env)
    names, [result] = while_deciding(
        db, lambda: asyncio.run(call(stdio(ledger, proxy_env), 850)), approve=False, note="customer already refunded"
    )
    assert names == ["issue_refund", "environment"]
    assert result.is_error and "customer already refunded" in text(result) and "denied by user:lena" in text(result)
    assert ledger.read_text() == ""


def test_approved_over_stdio_runs_once_with_the_edit(tmp_path: Path, proxy_env: dict[str, str]) -> None:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    db = db_of(proxy_env)
    thread = decide_when_pending(db, approve=True, args={"amount": 300})
    _, [result] = asyncio.run(call(stdio(ledger, proxy_env), 850))
    thread.join(30)
    assert not result.is_error and "refunded 300.0 on A-1" in text(result)
    assert ledger.read_text() == "A-1 300.0\n"
    [a] = approvals.listing(db, status=None)
    assert a.status == "executed"


def test_blocked_calls_and_allowed_calls(tmp_path: Path, proxy_env: dict[str, str]) -> None:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    _, [blocked] = asyncio.run(call(stdio(ledger, proxy_env), 9000))
    assert blocked.is_error and "Blocked by policy: Refunds over $5000 are never issued" in text(blocked)
    _, [allowed] = asyncio.run(call(stdio(ledger, proxy_env), 50))
    assert not allowed.is_error and ledger.read_text() == "A-1 50.0\n"


def test_an_undecided_call_answers_pending_and_a_retry_picks_up_its_approval(
    tmp_path: Path, proxy_env: dict[str, str]
) -> None:
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    db = db_of(proxy_env)

    async def main() -> tuple[Any, Any]:
        RUNNING.set("issue_refund")  # as in call()
        async with Client(stdio(ledger, proxy_env, "--approval-wait", "0.5")) as client:
            args = {"order_id": "A-1", "amount": 850}
            first = await client.call_tool("issue_refund", args)
            assert ledger.read_text() == ""  # nothing ran while undecided
            [pending] = approvals.listing(db)
            from clearance import _decisions

            from ._shared import LEAD

            _decisions.decide(db, pending.id, by=LEAD, approve=True)
            second = await client.call_tool("issue_refund", args)
            return first, second

    first, second = asyncio.run(main())
    assert first.is_error and "Waiting for approval apr_" in text(first)
    assert not second.is_error and ledger.read_text() == "A-1 850.0\n"
    assert len(approvals.listing(db, status=None)) == 1  # the retry asked no second approval


@pytest.fixture
def http_proxy(tmp_path: Path, proxy_env: dict[str, str]) -> Iterator[tuple[str, Path]]:
    """The proxy serving streamable HTTP, fronting an upstream that is itself served over HTTP."""
    ledger = tmp_path / "ledger.txt"
    ledger.touch()
    up_port, port = _free_port(), _free_port()
    upstream = subprocess.Popen([sys.executable, str(UPSTREAM), str(ledger), str(up_port)], env=proxy_env)
    _wait_for_port(up_port)
    argv = [sys.executable, "-m", "clearance.cli", "mcp-proxy", "--upstream", f"refunds=http://127.0.0.1:{up_port}/mcp"]
    proxy = subprocess.Popen([*argv, "--http", f"127.0.0.1:{port}"], env=proxy_env)
    try:
        _wait_for_port(port)
        yield f"http://127.0.0.1:{port}/mcp", ledger
    finally:
        for process in (proxy, upstream):
            process.terminate()
            process.wait(10)


def _wait_for_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


def test_streamable_http_both_ways(http_proxy: tuple[str, Path], proxy_env: dict[str, str]) -> None:
    url, ledger = http_proxy
    db = db_of(proxy_env)
    thread = decide_when_pending(db, approve=True)
    _, [result] = asyncio.run(call(url, 850))
    thread.join(30)
    assert not result.is_error and ledger.read_text() == "A-1 850.0\n"


def test_bad_upstreams_are_usage_errors(proxy_env: dict[str, str]) -> None:
    argv = [sys.executable, "-m", "clearance.cli", "mcp-proxy"]
    bad_ones = (
        ["--upstream", "nonamehere"],
        ["--upstream", "a=x", "--upstream", "a=y"],
        ["--upstream", "a= "],
        ["--upstream", "a=python 'unbalanced"],
        ["--upstream", "a=x", "--http", "nowhere"],
    )
    for bad in bad_ones:
        out = subprocess.run([*argv, *bad], env=proxy_env, capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "error" in out.stderr.lower() and "Traceback" not in out.stderr, out.stderr


def test_the_client_hook_governs_call_tool_in_process(configure: Callable[..., Governor], tmp_path: Path) -> None:
    """With no proxy: `configure()` governs `ClientSession.call_tool` of the application's own client."""
    gov = configure(POLICY)
    ran: list[Any] = []
    server = MCPServer("refunds")

    @server.tool()
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return "refunded"

    thread = decide_when_pending(gov, approve=False, note="no")
    _, [denied] = asyncio.run(call(server, 850))
    thread.join(30)
    assert denied.is_error and "denied by user:lena: no" in text(denied) and ran == []
    _, [ok] = asyncio.run(call(server, 20))
    assert not ok.is_error and ran == [("A-1", 20)]
    decided = records(gov, "tool_call.decided")
    assert [d["decision"] for d in decided] == ["require_approval", "allow"]


def test_a_call_governed_above_is_not_decided_again_by_the_client_hook(configure: Callable[..., Governor]) -> None:
    """An MCP call made while a governed tool of the same name runs (an Agents SDK MCP tool) is decided once."""
    from clearance._guard._recording import Recording
    from clearance.integrations._common import begin

    gov = configure(POLICY)
    server = MCPServer("refunds")
    ran: list[Any] = []

    @server.tool()
    def issue_refund(order_id: str, amount: float) -> str:
        """Refund an order."""
        ran.append((order_id, amount))
        return "refunded"

    @server.tool()
    def lookup(order_id: str) -> str:
        """Look an order up."""
        return "shipped"

    async def main() -> None:
        governor, ticket = begin("issue_refund", {"order_id": "A-1", "amount": 20})
        with Recording(governor, ticket, None) as recording:
            async with Client(server) as client:
                await client.call_tool("issue_refund", {"order_id": "A-1", "amount": 20})
                await client.call_tool("lookup", {"order_id": "A-1"})  # another tool: decided here
            recording.done("refunded")

    asyncio.run(main())
    assert ran == [("A-1", 20)]
    assert [d["tool"] for d in records(gov, "tool_call.decided")] == ["issue_refund", "lookup"]


def test_several_upstreams_name_their_tools_by_upstream(tmp_path: Path, proxy_env: dict[str, str]) -> None:
    """With two upstreams each tool is `<upstream>__<tool>`, and policy decides by that name."""
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.touch()
    b.touch()
    (tmp_path / "policy.yaml").write_text(
        "version: 1\ndefault: allow\ntools:\n  eu__issue_refund:\n    rules:\n"
        "      - {id: eu, when: 'true', effect: block, reason: EU refunds go by hand}\n"
    )
    argv = [sys.executable, "-m", "clearance.cli", "mcp-proxy"]
    argv += ["--upstream", f"us={sys.executable} {UPSTREAM} {a}", "--upstream", f"eu={sys.executable} {UPSTREAM} {b}"]

    async def main() -> tuple[list[str], Any, Any]:
        async with Client(StdioServerParameters(command=argv[0], args=argv[1:], env=proxy_env)) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            RUNNING.set("us__issue_refund")  # as in call(): the proxy governs these, not this process
            us = await client.call_tool("us__issue_refund", {"order_id": "A-1", "amount": 50})
            RUNNING.set("eu__issue_refund")
            eu = await client.call_tool("eu__issue_refund", {"order_id": "A-2", "amount": 50})
            return names, us, eu

    names, us, eu = asyncio.run(main())
    assert names == ["eu__environment", "eu__issue_refund", "us__environment", "us__issue_refund"]
    assert not us.is_error and a.read_text() == "A-1 50.0\n"
    assert eu.is_error and "EU refunds go by hand" in text(eu) and b.read_text() == ""
