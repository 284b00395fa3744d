"""`clearance mcp-proxy` outlives its upstreams: real upstream processes killed with SIGKILL.

Every combination of the proxy's transport (stdio, --http) and the upstream's (stdio, HTTP):
the proxy stays up and keeps its client's session; while the upstream is down a call is
decided, recorded, and answered with a tool error naming the upstream, and the tools stay
listed; a stdio upstream is restarted and an HTTP one reconnected once it is back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters  # noqa: E402

from clearance._guard._recording import RUNNING  # noqa: E402
from clearance._store import EventFilter  # noqa: E402
from clearance._store._events import query  # noqa: E402
from clearance.integrations._mcp_upstream import SAFE_ENV, upstream_env  # noqa: E402

from ..server.conftest import _free_port  # noqa: E402
from ..test_docs_examples import DOCS, blocks  # noqa: E402
from . import test_mcp  # noqa: E402
from .test_mcp import UPSTREAM, _wait_for_port, db_of, text  # noqa: E402

proxy_env = test_mcp.proxy_env  # the fixture: configured by environment, on tmp_path's store

REPO_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mcp" / "refunds_server.py"
PROXY = [sys.executable, "-m", "clearance.cli", "mcp-proxy"]


async def eventually(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 30) -> None:
    """Await `check()` every 50 ms until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"never: {what}"
        await asyncio.sleep(0.05)


def pids(ledger: Path) -> list[int]:
    """The upstream processes started so far, oldest first."""
    path = ledger.with_suffix(".pids")
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def decided(env: dict[str, str]) -> list[dict[str, Any]]:
    return [e.body for e in query(db_of(env), EventFilter(kind="tool_call.decided"))]


class Rig:
    """A proxy (stdio or --http) fronting one upstream (stdio or HTTP), whose upstream can be killed."""

    def __init__(self, tmp_path: Path, env: dict[str, str], proxy: str, upstream: str) -> None:
        self.env, self.proxy_kind, self.upstream_kind = env, proxy, upstream
        self.ledger = tmp_path / "ledger.txt"
        self.ledger.touch()
        self.up_port = _free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.http_upstream: subprocess.Popen[bytes] | None = None
        self.proxy: subprocess.Popen[bytes] | None = None

    def start_http_upstream(self) -> None:
        argv = [sys.executable, str(UPSTREAM), str(self.ledger), str(self.up_port)]
        self.http_upstream = subprocess.Popen(argv, env=self.env)
        self.processes.append(self.http_upstream)
        _wait_for_port(self.up_port)

    @contextmanager
    def running(self) -> Iterator[Any]:
        """The target an MCP client connects to (the proxy), for the life of the block."""
        if self.upstream_kind == "http":
            self.start_http_upstream()
            upstream = f"refunds=http://127.0.0.1:{self.up_port}/mcp"
        else:
            upstream = f"refunds={sys.executable} {UPSTREAM} {self.ledger}"
        argv = [*PROXY, "--upstream", upstream]
        try:
            if self.proxy_kind == "stdio":
                yield StdioServerParameters(command=argv[0], args=argv[1:], env=self.env)
            else:
                port = _free_port()
                self.proxy = subprocess.Popen([*argv, "--http", f"127.0.0.1:{port}"], env=self.env)
                self.processes.append(self.proxy)
                _wait_for_port(port)
                yield f"http://127.0.0.1:{port}/mcp"
        finally:
            for process in self.processes:
                process.terminate()
                process.wait(15)

    def kill_upstream(self, *, stay_down: bool) -> None:
        """SIGKILL the upstream; with `stay_down`, a stdio one cannot be restarted until `bring_back`."""
        if stay_down:
            self.ledger.with_suffix(".down").touch()
        if self.upstream_kind == "http":
            assert self.http_upstream is not None
            os.kill(self.http_upstream.pid, signal.SIGKILL)
            self.http_upstream.wait(10)
        else:
            os.kill(pids(self.ledger)[-1], signal.SIGKILL)

    def bring_back(self) -> None:
        self.ledger.with_suffix(".down").unlink()
        if self.upstream_kind == "http":
            self.start_http_upstream()

    def proxy_alive(self) -> bool:
        return self.proxy is None or self.proxy.poll() is None


@asynccontextmanager
async def client_of(target: Any) -> AsyncIterator[Client]:
    # The client stands for a desktop assistant: the proxy governs its calls, not this process's hook.
    RUNNING.set("issue_refund")
    async with Client(target) as client:
        yield client


async def ungoverned(client: Client, name: str, args: dict[str, Any]) -> Any:
    """`client.call_tool`, not governed by this process's own hook (earlier tests install it): the proxy governs."""
    RUNNING.set(name)
    return await client.call_tool(name, args)


async def refund(client: Client, order: str, made: list[str] | None = None) -> Any:
    if made is not None:
        made.append(order)
    return await client.call_tool("issue_refund", {"order_id": order, "amount": 20})


KINDS = [("stdio", "stdio"), ("stdio", "http"), ("http", "stdio"), ("http", "http")]


@pytest.mark.parametrize(("proxy", "upstream"), KINDS, ids=[f"proxy-{p}-upstream-{u}" for p, u in KINDS])
def test_the_proxy_outlives_a_killed_upstream_and_gets_it_back(
    tmp_path: Path, proxy_env: dict[str, str], proxy: str, upstream: str
) -> None:
    rig = Rig(tmp_path, proxy_env, proxy, upstream)

    async def main(target: Any) -> None:
        made: list[str] = []
        async with client_of(target) as client:
            first = await refund(client, "A-1", made)
            assert not first.is_error, text(first)
            started = pids(rig.ledger)
            rig.kill_upstream(stay_down=True)

            down: list[Any] = []

            async def answered_down() -> bool:
                result = await refund(client, f"A-down-{len(down)}", made)
                down.append(result)
                return bool(result.is_error)

            await eventually(answered_down, "a call answered while the upstream is down")
            result = down[-1]
            assert "'refunds'" in text(result) and ("is down" in text(result) or "went away" in text(result))
            assert rig.proxy_alive()
            listed = [t.name for t in (await client.list_tools()).tools]
            assert "issue_refund" in listed  # still listed, as last seen
            again = await refund(client, "A-down-again", made)
            assert again.is_error and "'refunds'" in text(again) and "is down" in text(again)

            rig.bring_back()

            async def answered() -> bool:
                return not (await refund(client, "A-2", made)).is_error

            await eventually(answered, "a call answered once the upstream is back")
            assert rig.proxy_alive()
            if upstream == "stdio":
                assert len(pids(rig.ledger)) == len(started) + 1  # restarted once it could be
            records = decided(proxy_env)
            # Every call was decided and recorded, the ones made while the upstream was down too.
            assert [r["args"]["order_id"] for r in records] == made
            assert all(r["decision"] == "allow" for r in records)

    with rig.running() as target:
        asyncio.run(main(target))
    assert [line for line in rig.ledger.read_text().splitlines() if line.startswith("A-")][0] == "A-1 20.0"


@pytest.mark.parametrize("proxy", ["stdio", "http"])
def test_a_stdio_upstream_killed_between_calls_is_restarted_without_waiting_for_a_call(
    tmp_path: Path, proxy_env: dict[str, str], proxy: str
) -> None:
    """The proxy sees the crash itself (its output ended) and restarts it at once, no backoff the first time."""
    rig = Rig(tmp_path, proxy_env, proxy, "stdio")

    async def main(target: Any) -> None:
        async with client_of(target) as client:
            assert not (await refund(client, "A-1")).is_error
            rig.kill_upstream(stay_down=False)
            await eventually(lambda: _restarted(rig), "the upstream restarted, with no call made", timeout=10)

            async def answered() -> bool:
                return not (await refund(client, "A-2")).is_error

            await eventually(answered, "a call answered by the restarted upstream", timeout=10)
            assert rig.proxy_alive()

    with rig.running() as target:
        asyncio.run(main(target))
    assert rig.ledger.read_text().splitlines() == ["A-1 20.0", "A-2 20.0"]


async def _restarted(rig: Rig) -> bool:
    return len(pids(rig.ledger)) >= 2


HOSTILE = ["no_such_tool", "bad\x00name", "\u202eevil_tool", "x" * 10_000]


@pytest.mark.parametrize("proxy", ["stdio", "http"])
def test_calls_to_unknown_tools_are_refused_and_recorded(tmp_path: Path, proxy_env: dict[str, str], proxy: str) -> None:
    rig = Rig(tmp_path, proxy_env, proxy, "stdio")

    async def main(target: Any) -> list[Any]:
        async with client_of(target) as client:
            return [await ungoverned(client, name, {"note": "\u202ehi\x00"}) for name in HOSTILE]

    with rig.running() as target:
        results = asyncio.run(main(target))
    assert all(r.is_error and "Blocked by policy" in text(r) for r in results)
    assert "no MCP server behind this proxy has a tool called 'no_such_tool'" in text(results[0])
    records = decided(proxy_env)
    assert len(records) == len(HOSTILE)
    for record in records:
        assert record["decision"] == "block"
        assert "no MCP server behind this proxy has a tool called" in record["reason"]
        # Readable: no raw NUL or bidirectional override in the tool name or the reason.
        assert not any(c in record["reason"] + record["tool"] for c in "\x00\u202e")
        assert len(record["reason"]) < 2000
    assert records[0]["tool"] == "no_such_tool"
    assert rig.ledger.read_text() == ""


def test_stdio_upstreams_get_a_safe_environment_and_what_env_passes(tmp_path: Path, proxy_env: dict[str, str]) -> None:
    ledger = tmp_path / "ledger.txt"
    env = {**proxy_env, "AWS_SECRET_ACCESS_KEY": "s3cr3t", "PASS_ME": "from-the-proxy"}
    argv = [*PROXY, "--upstream", f"refunds={sys.executable} {UPSTREAM} {ledger}"]
    argv += ["--env", "PASS_ME", "--env", "SET_ME=set=here"]

    async def main() -> dict[str, str]:
        async with client_of(StdioServerParameters(command=argv[0], args=argv[1:], env=env)) as client:
            names = ["PATH", "PASS_ME", "SET_ME", "AWS_SECRET_ACCESS_KEY", "CLEARANCE_DATABASE_URL", "CLEARANCE_POLICY"]
            return {n: text(await ungoverned(client, "environment", {"name": n})) for n in names}

    seen = asyncio.run(main())
    assert seen["PATH"] == os.environ["PATH"]
    assert seen["PASS_ME"] == "from-the-proxy" and seen["SET_ME"] == "set=here"
    assert seen["AWS_SECRET_ACCESS_KEY"] == seen["CLEARANCE_DATABASE_URL"] == seen["CLEARANCE_POLICY"] == "<unset>"


def test_the_upstream_environment_allow_list() -> None:
    environ = {"PATH": "/bin", "LANG": "C.UTF-8", "CLEARANCE_API_KEY": "key", "GITHUB_TOKEN": "t", "X": "1"}
    assert upstream_env((), environ) == {"PATH": "/bin", "LANG": "C.UTF-8"}
    assert upstream_env(("X", "Y=2", "GITHUB_TOKEN"), environ) == {
        "PATH": "/bin",
        "LANG": "C.UTF-8",
        "X": "1",
        "Y": "2",
        "GITHUB_TOKEN": "t",
    }
    assert not any(("KEY" in n or "TOKEN" in n or "SECRET" in n) for n in SAFE_ENV)


def test_bad_env_options_are_usage_errors(proxy_env: dict[str, str]) -> None:
    for bad in (["--env", "=x"], ["--env", "NOT_SET_ANYWHERE_HERE"]):
        argv = [*PROXY, "--upstream", "a=x", *bad]
        out = subprocess.run(argv, env=proxy_env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "--env" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_the_mcp2_example_upstream_runs_behind_the_proxy(proxy_env: dict[str, str]) -> None:
    """docs/guides/mcp.md's upstream (examples/mcp/refunds_server.py, `MCPServer` of mcp 2.x)."""
    argv = [*PROXY, "--upstream", f"refunds={sys.executable} {REPO_EXAMPLE}"]

    async def main() -> tuple[list[str], Any]:
        async with client_of(StdioServerParameters(command=argv[0], args=argv[1:], env=proxy_env)) as client:
            names = sorted(t.name for t in (await client.list_tools()).tools)
            return names, await ungoverned(client, "lookup_order", {"order_id": "A-7"})

    names, result = asyncio.run(main())
    assert names == ["issue_refund", "lookup_order"]
    assert not result.is_error and text(result) == "order A-7: shipped"


def test_the_guide_s_upstream_runs_behind_the_proxy_as_shown(tmp_path: Path, proxy_env: dict[str, str]) -> None:
    """docs/guides/mcp.md's `refunds_server.py`, as the page shows it, started by the proxy as the page says."""
    [shown] = [b for b in blocks(DOCS / "guides/mcp.md") if b.markers.get("file") == "refunds_server.py"]
    (tmp_path / "refunds_server.py").write_text(shown.code)
    argv = [*PROXY, "--upstream", f"refunds={sys.executable} refunds_server.py"]  # the page's `python`
    server = StdioServerParameters(command=argv[0], args=argv[1:], env=proxy_env, cwd=tmp_path)

    async def main() -> tuple[Any, Any]:
        async with client_of(server) as client:
            allowed = await ungoverned(client, "issue_refund", {"order_id": "A-1", "amount": 45})
            return allowed, await ungoverned(client, "issue_refund", {"order_id": "A-2", "amount": 9000})

    allowed, blocked = asyncio.run(main())
    assert not allowed.is_error and text(allowed) == "refunded 45.0 on A-1"
    assert blocked.is_error and "Refunds over $5000 are never issued" in text(blocked)
    assert [e["decision"] for e in decided(proxy_env)] == ["allow", "block"]
