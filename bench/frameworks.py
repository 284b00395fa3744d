"""Per-tool-call overhead inside real agents: an OpenAI Agents SDK, a LangGraph and a Pydantic AI agent.

Each run makes CALLS allowed tool calls (scripted model, no network). Measured three ways:
without governance; with Clearance (decided in-process, recorded in SQLite before the tool
runs); and the incumbent's approach — one HTTP round trip per call to a policy service, here a
local keep-alive server that answers "allow" at once (a SaaS adds the internet's latency on
top). Prints figures; asserts nothing.

    .venv/bin/python bench/frameworks.py [--runs 30] [--calls 20]

Timings on a loaded machine move by 2–5× between runs; `--instructions` counts instead (needs
valgrind): each framework and kind runs in a process of its own under callgrind, counted (every
thread) only while the measured runs run, after imports and a warm-up run.

    .venv/bin/python bench/frameworks.py --instructions [--runs 3] [--calls 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

import clearance

POLICY = """version: 1
default: allow
tools:
  lookup:
    rules:
      - {id: long, when: 'size(args.order_id) > 64', effect: block}
"""


class _Allow(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK stalls

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = b'{"decision": "allow"}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def policy_service() -> tuple[str, ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Allow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/check", server


def timed(runs: dict[str, Callable[[], Awaitable[Any]]], repeat: int) -> dict[str, tuple[float, float]]:
    """Median seconds per run of each kind, wall clock and this process's CPU time (every thread's).

    The kinds take turns, so drift hits all alike. CPU time is what a loaded machine (other
    processes taking the cores) disturbs least; a hop to a worker thread costs CPU too.
    """

    async def main() -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = {kind: [] for kind in runs}
        for run in runs.values():
            await run()  # warm-up
        for _ in range(repeat):
            for kind, run in runs.items():
                started, cpu = time.perf_counter(), time.process_time()
                await run()
                out[kind].append((time.perf_counter() - started, time.process_time() - cpu))
        return out

    return {
        kind: (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times))
        for kind, times in asyncio.run(main()).items()
    }


# -- OpenAI Agents SDK ---------------------------------------------------------------------------


def agents_runs(calls: int, url: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    from agents import Agent, FunctionTool, Runner, function_tool
    from agents.testing import ModelStep, ScriptedModel, assistant_message, function_call

    from clearance.integrations import agents as governed
    from clearance.integrations._patching import MARK

    def script() -> ScriptedModel:
        steps = [
            ModelStep(output=[function_call("lookup", {"order_id": f"A-{i}"}, call_id=f"c{i}")]) for i in range(calls)
        ]
        return ScriptedModel([*steps, ModelStep(output=[assistant_message("done")])])

    def make(kind: str) -> Callable[[], Awaitable[Any]]:
        @function_tool
        def lookup(order_id: str) -> str:
            """Look an order up."""
            return f"order {order_id}: shipped"

        if kind == "incumbent":
            inner = lookup.on_invoke_tool
            client = httpx.AsyncClient()

            async def checked(ctx: Any, raw: str) -> Any:
                answer = await client.post(url, json={"tool": "lookup", "args": json.loads(raw)})
                assert answer.json()["decision"] == "allow"
                return await inner(ctx, raw)

            lookup = FunctionTool(lookup.name, lookup.description, lookup.params_json_schema, checked)
        if kind == "clearance":
            governed.govern_tool(lookup)
        else:
            setattr(lookup.on_invoke_tool, MARK, True)  # marked as governed: install() leaves it alone

        async def run() -> Any:
            agent = Agent(name="bench", tools=[lookup], model=script())
            return await Runner.run(agent, "look up the orders", max_turns=calls + 2)

        return run

    return {kind: make(kind) for kind in ("without", "clearance", "incumbent")}


# -- LangGraph -----------------------------------------------------------------------------------


def langgraph_runs(calls: int, url: str, *, middleware: bool = True) -> dict[str, Callable[[], Awaitable[Any]]]:
    """A LangGraph agent's runs: without Clearance, governed, and checked over HTTP.

    With `middleware`, Clearance governs through `ClearanceMiddleware` (edits and pauses need
    it); without, through what `configure()` alone installs (LangChain's callbacks).
    """
    from langchain.agents import create_agent
    from langchain.agents.middleware import AgentMiddleware
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult

    from clearance.integrations.langchain import ClearanceMiddleware

    class Scripted(BaseChatModel):
        @property
        def _llm_type(self) -> str:
            return "scripted"

        def bind_tools(self, tools: Any, **kwargs: Any) -> Scripted:
            return self

        def _generate(self, messages: list[Any], stop: Any = None, run_manager: Any = None, **kw: Any) -> ChatResult:
            done = sum(isinstance(m, ToolMessage) for m in messages)
            if done >= calls:
                return ChatResult(generations=[ChatGeneration(message=AIMessage(content="done"))])
            call = {"name": "lookup", "args": {"order_id": f"A-{done}"}, "id": f"c{done}"}
            return ChatResult(generations=[ChatGeneration(message=AIMessage(content="", tool_calls=[call]))])

    def lookup(order_id: str) -> str:
        """Look an order up."""
        return f"order {order_id}: shipped"

    class Incumbent(AgentMiddleware):
        def __init__(self) -> None:
            super().__init__()
            self.client = httpx.AsyncClient()

        async def awrap_tool_call(self, request: Any, handler: Any) -> Any:
            answer = await self.client.post(url, json={"tool": "lookup", "args": request.tool_call["args"]})
            assert answer.json()["decision"] == "allow"
            return await handler(request)

    stacks = {
        "without": [],
        "clearance": [ClearanceMiddleware()] if middleware else [],
        "incumbent": [Incumbent()],
    }
    graphs = {kind: create_agent(Scripted(), tools=[lookup], middleware=m) for kind, m in stacks.items()}

    def make(kind: str) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            # configure() installs process-wide callbacks (ToolGate governs every tool call no
            # middleware governs): the other kinds run without them, as without Clearance.
            hooks = [] if kind == "clearance" else [(v, v.set(None)) for v in _langchain_hooks()]
            try:
                return await graphs[kind].ainvoke(
                    {"messages": [("user", "look up the orders")]}, {"recursion_limit": 4 * calls + 10}
                )
            finally:
                for var, token in reversed(hooks):
                    var.reset(token)

        return run

    return {kind: make(kind) for kind in stacks}


# -- Pydantic AI ---------------------------------------------------------------------------------


def pydantic_ai_runs(calls: int, url: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    from pydantic_ai import Agent, RunContext
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel
    from pydantic_ai.toolsets import WrapperToolset

    from clearance.integrations.pydantic_ai import Clearance

    def scripted(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        done = sum(isinstance(p, ToolReturnPart) for m in messages for p in getattr(m, "parts", ()))
        if done >= calls:
            return ModelResponse(parts=[TextPart("done")])
        return ModelResponse(parts=[ToolCallPart("lookup", {"order_id": f"A-{done}"}, tool_call_id=f"c{done}")])

    class Checked(WrapperToolset[Any]):
        client: httpx.AsyncClient | None = None

        async def call_tool(self, name: str, tool_args: dict[str, Any], ctx: RunContext[Any], tool: Any) -> Any:
            if Checked.client is None:
                Checked.client = httpx.AsyncClient()
            answer = await Checked.client.post(url, json={"tool": name, "args": tool_args})
            assert answer.json()["decision"] == "allow"
            return await self.wrapped.call_tool(name, tool_args, ctx, tool)

    class Ungoverned(Clearance):
        """Counts as the run's Clearance capability (configure() adds none) and governs nothing."""

        def get_wrapper_toolset(self, toolset: Any) -> Any:
            return Checked(toolset) if self.on_block == "raise" else None  # "raise": the incumbent's check

        def get_wrapper_model(self, model: Any) -> Any:
            return None

        async def before_model_request(self, ctx: Any, request_context: Any) -> Any:
            return request_context

    capabilities: dict[str, list[Any]] = {
        "without": [Ungoverned()],
        "clearance": [],  # configure() adds Clearance() to every run
        "incumbent": [Ungoverned(on_block="raise")],
    }

    def lookup(order_id: str) -> str:
        """Look an order up."""
        return f"order {order_id}: shipped"

    agent = Agent(FunctionModel(scripted), tools=[lookup])

    def make(kind: str) -> Callable[[], Awaitable[Any]]:
        async def run() -> Any:
            return await agent.run("look up the orders", capabilities=capabilities[kind])

        return run

    return {kind: make(kind) for kind in capabilities}


def _langchain_hooks() -> list[Any]:
    """The context variables through which `configure()` gave LangChain Clearance's callbacks."""
    from clearance.integrations import langchain as governed

    return [v for v in (governed._USAGE, governed._GATE, governed._MODEL_GATE) if v is not None]


FRAMEWORKS: dict[str, Callable[[int, str], dict[str, Callable[[], Awaitable[Any]]]]] = {
    "Agents SDK": agents_runs,
    "LangGraph": lambda calls, url: langgraph_runs(calls, url, middleware=False),
    "LangGraph + mw": langgraph_runs,
    "Pydantic AI": pydantic_ai_runs,
}
KINDS = ("without", "clearance", "incumbent")


def one_counted(name: str, kind: str, runs: int, calls: int) -> None:
    """Run one framework's `kind` under callgrind: ready, counted runs, done (the parent toggles counting)."""
    url, server = policy_service()
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp, "policy.yaml")
        policy.write_text(POLICY)
        clearance.configure(policy=str(policy), database_url=str(Path(tmp, "bench.db")), agent="bench")
        run = FRAMEWORKS[name](calls, url)[kind]

        async def go() -> None:
            await run()  # warm-up, not counted
            print("ready", flush=True)
            sys.stdin.readline()
            for _ in range(runs):
                await run()
            print("done", flush=True)
            sys.stdin.readline()

        asyncio.run(go())
        clearance.shutdown()
    server.shutdown()


def counted(name: str, kind: str, runs: int, calls: int) -> int:
    """Instructions (every thread) that `runs` runs of `kind` took, counted by callgrind."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "callgrind.out")
        child = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
            + [sys.executable, __file__, "--one", name, kind, "--runs", str(runs), "--calls", str(calls)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert child.stdin is not None and child.stdout is not None
        for step, toggle in (("ready", "on"), ("done", "off")):
            line = child.stdout.readline().strip()
            if line != step:
                child.kill()
                raise SystemExit(f"{name} / {kind}: expected {step!r} from the counted process, got {line!r}")
            subprocess.run(["callgrind_control", "-i", toggle, str(child.pid)], check=True, capture_output=True)
            child.stdin.write("go\n")
            child.stdin.flush()
        child.wait()
        totals = re.search(r"^totals: (\d+)", out.read_text(), re.M)
        assert totals is not None, "callgrind wrote no totals"
        return int(totals.group(1))


def instructions(runs: int, calls: int) -> None:
    print(f"instructions per tool call, {runs} runs of {calls} allowed calls each, every thread (callgrind)")
    print(f"{'':<18}{'without':>12}{'Clearance':>12}{'HTTP':>12}{'ratio':>8}")
    for name in FRAMEWORKS:
        per = {kind: counted(name, kind, runs, calls) / (runs * calls) for kind in KINDS}
        ours, theirs = per["clearance"] - per["without"], per["incumbent"] - per["without"]
        ratio = f"{theirs / ours:>7.1f}×" if ours > 0 else f"{'-':>8}"
        print(f"{name:<18}{per['without'] / 1e6:>11.2f}M{ours / 1e6:>+11.2f}M{theirs / 1e6:>+11.2f}M{ratio}")
    print("(ratio: instructions one HTTP check adds over those Clearance adds; the policy service's threads")
    print(" are counted too, its kernel time is not: valgrind counts user-space instructions only.)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=None, help="30 timed; 3 counted")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--instructions", action="store_true", help="count instructions under valgrind")
    parser.add_argument("--one", nargs=2, metavar=("FRAMEWORK", "KIND"), help=argparse.SUPPRESS)
    a = parser.parse_args()
    from agents import set_trace_processors

    set_trace_processors([])  # no exporter: offline
    if a.one:
        one_counted(a.one[0], a.one[1], a.runs or 3, a.calls)
        return
    if a.instructions:
        instructions(a.runs or 3, a.calls)
        return
    a.runs = a.runs or 30
    url, server = policy_service()
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp, "policy.yaml")
        policy.write_text(POLICY)
        clearance.configure(policy=str(policy), database_url=str(Path(tmp, "bench.db")), agent="bench")
        print(f"per tool call, median of {a.runs} runs of {a.calls} allowed calls each (scripted model, SQLite)")
        heads = ("wall: without", "Clearance", "HTTP", "CPU: without", "Clearance", "HTTP")
        print(f"{'':<18}" + "".join(f"{h:>{w}}" for h, w in zip(heads, (14, 11, 10, 18, 11, 10), strict=True)))
        for name, make in FRAMEWORKS.items():
            runs = make(a.calls, url)
            medians = timed(runs, a.runs)
            line = f"{name:<18}"
            for i in (0, 1):  # wall, then CPU
                base = medians["without"][i]
                ours, theirs = medians["clearance"][i] - base, medians["incumbent"][i] - base
                line += "      " if i else ""
                base, ours, theirs = (x / a.calls * 1e6 for x in (base, ours, theirs))
                line += f"{base:>10.0f}µs{ours:>+9.0f}µs{theirs:>+8.0f}µs"
            print(line)
        clearance.shutdown()
    server.shutdown()
    print("(without: the framework's own cost per call; the others: what governing each call adds.")
    print(" LangGraph: governed by what configure() installs; + mw: by ClearanceMiddleware (edits, pauses).")
    print(" The HTTP column is a round trip to a policy service on this machine; over the internet add its RTT.")
    print(" CPU: this process's CPU time per call, every thread's; the policy service's threads are in it too.)")


if __name__ == "__main__":
    main()
