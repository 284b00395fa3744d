"""What `clearance mcp-proxy` adds to an allowed MCP tool call, over stdio and streamable HTTP.

One run: the example upstream (`examples/mcp/refunds_server.py`) is called CALLS times directly
and CALLS times through the proxy (decided by a policy with a rule on the tool, recorded in
SQLite), the two clients taking turns call by call so drift hits both alike; for each transport
it prints the median per call and what the proxy adds. Prints figures; asserts nothing.

    .venv/bin/python bench/mcp_proxy.py [--calls 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters

REPO = Path(__file__).resolve().parents[1]
UPSTREAM = REPO / "examples" / "mcp" / "refunds_server.py"
POLICY = """version: 1
default: allow
tools:
  lookup_order:
    rules:
      - {id: long, when: 'size(args.order_id) > 64', effect: block, reason: not an order id}
"""
PROXY = [sys.executable, "-m", "clearance.cli", "mcp-proxy"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@contextmanager
def serving(argv: list[str], port: int, env: dict[str, str]) -> Iterator[str]:
    """`argv` running until the block ends, once it listens on `port`; its /mcp URL."""
    process = subprocess.Popen(argv, env=env)
    try:
        wait_for_port(port)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        process.wait(10)


def proxy_cpu() -> float:
    """CPU seconds the proxy processes under this one have used (Linux /proc; 0 elsewhere)."""
    tick, total = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100, 0.0
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        try:
            if pid.isdigit() and b"mcp-proxy" in Path(f"/proc/{pid}/cmdline").read_bytes():
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / tick
        except OSError:
            continue
    return total


async def per_call(direct: Any, proxied: Any, calls: int) -> tuple[float, float, float]:
    """Median seconds per call of each target (taking turns call by call), and the proxy's CPU per call."""
    times: dict[str, list[float]] = {"direct": [], "proxied": []}
    async with Client(direct) as a, Client(proxied) as b:
        clients = {"direct": a, "proxied": b}
        cpu = 0.0
        for i in range(calls + 20):  # the first 20 warm up
            if i == 20:
                cpu = proxy_cpu()
            for kind, client in clients.items():
                started = time.perf_counter()
                result = await client.call_tool("lookup_order", {"order_id": f"A-{i}"})
                elapsed = time.perf_counter() - started
                assert not result.is_error, result
                if i >= 20:
                    times[kind].append(elapsed)
        cpu = (proxy_cpu() - cpu) / calls
    return statistics.median(times["direct"]), statistics.median(times["proxied"]), cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "policy.yaml").write_text(POLICY)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CLEARANCE_")},
            "PYTHONPATH": str(REPO / "src"),
            "CLEARANCE_POLICY": str(Path(tmp, "policy.yaml")),
            "CLEARANCE_DATABASE_URL": str(Path(tmp, "audit.db")),
            "CLEARANCE_AGENT": "bench",
        }
        upstream = [sys.executable, str(UPSTREAM)]
        figures = {}
        stdio_direct = StdioServerParameters(command=upstream[0], args=upstream[1:])
        proxy = [*PROXY, "--upstream", f"refunds={' '.join(upstream)}"]
        stdio_proxied = StdioServerParameters(command=proxy[0], args=proxy[1:], env=env)
        figures["stdio"] = asyncio.run(per_call(stdio_direct, stdio_proxied, a.calls))
        up_port, port = free_port(), free_port()
        with serving([*upstream, "--http", str(up_port)], up_port, env) as direct:
            argv = [*PROXY, "--upstream", f"refunds={direct}", "--http", f"127.0.0.1:{port}"]
            with serving(argv, port, env) as proxied:
                figures["streamable HTTP"] = asyncio.run(per_call(direct, proxied, a.calls))
    print(f"per allowed tools/call, median of {a.calls} (decided, recorded in SQLite)")
    print(f"{'transport':<18}{'direct':>10}{'via proxy':>12}{'added':>10}{'ratio':>8}{'proxy CPU':>12}")
    for name, (direct_s, proxied_s, cpu) in figures.items():
        added, ratio = proxied_s - direct_s, proxied_s / direct_s
        print(
            f"{name:<18}{direct_s * 1e3:>8.2f}ms{proxied_s * 1e3:>10.2f}ms{added * 1e3:>+8.2f}ms{ratio:>7.1f}x"
            f"{cpu * 1e3:>10.2f}ms"
        )
    print("(direct: the client straight to the upstream; via proxy: the same upstream behind clearance mcp-proxy,")
    print(" fronted over the same transport the client uses; proxy CPU: the proxy process's CPU time per call.)")


if __name__ == "__main__":
    main()
