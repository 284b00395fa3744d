"""The framework guides are tested: the policy and durable-pause examples of docs/guides/adk.md,
langgraph.md, openai-agents.md and pydantic-ai.md run, paused in one process and resumed in
another, against a scripted OpenAI-compatible server on 127.0.0.1; the Pydantic AI and Claude
Agent SDK minimal examples run as shown against a scripted model (the Claude one drives the CLI
its wheel bundles) while the test approves; each guide's complete example runs alone; and every
extra docs/frameworks.md and the guides name exists."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from clearance import _decisions
from clearance._guard._governor import Governor
from clearance._store import _approvals as approvals

from .conftest import REPO, run_cli
from .fake_openai import FakeOpenAI
from .integrations._shared import LEAD, records, while_deciding

DOCS = REPO / "docs"
GUIDE = {
    "adk": "guides/adk.md",
    "langgraph": "guides/langgraph.md",
    "agents": "guides/openai-agents.md",
    "pydantic": "guides/pydantic-ai.md",
    "claude": "guides/claude-agent-sdk.md",
    "ag2": "guides/ag2.md",
    "llamaindex": "guides/llamaindex.md",
    "custom": "guides/custom.md",
    "mcp": "guides/mcp.md",
}


def page(name: str) -> str:
    return (DOCS / name).read_text()


def example(name: str) -> str:
    """The Python block after `<!-- example: name -->` on its framework's guide."""
    doc = page(GUIDE[name.split("-")[0]])
    [code] = re.findall(rf"<!-- example: {name} -->\n(?:<!-- not-run: .*? -->\n)?```python\n(.*?)```", doc, flags=re.S)
    return str(code)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(amount=850)
    yield server
    server.close()


def run(tmp_path: Path, fake: FakeOpenAI, *names: str) -> str:
    """Run the examples, one after the other, in a fresh process in tmp_path; what it printed."""
    env = {
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "sk-test",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    return run_in(tmp_path, "\n".join(example(n) for n in names), env)


def run_in(tmp_path: Path, code: str, extra: dict[str, str]) -> str:
    """Run `code` in a fresh process in tmp_path, on the test's store; what it printed."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "CLEARANCE_DATABASE_URL": str(tmp_path / "audit.db"),
        **extra,
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("framework", ["adk", "langgraph", "agents", "pydantic"])
def test_a_paused_run_is_listed_decided_and_resumed_in_another_process(
    configure: Callable[..., Governor], tmp_path: Path, fake: FakeOpenAI, framework: str
) -> None:
    clients = {"adk": "litellm", "langgraph": "langchain_openai", "agents": "agents", "pydantic": "pydantic_ai"}
    client = clients[framework]
    if importlib.util.find_spec(client) is None:  # not imported here
        pytest.skip("the example's model client is not installed")
    [policy] = re.findall(r"```yaml\n(version: 1\n.*?)```", page(GUIDE[framework]), flags=re.S)
    gov = configure(policy)
    (tmp_path / "policy.yaml").write_text(policy)
    started = run(tmp_path, fake, f"{framework}-setup", f"{framework}-start")
    [line] = [x for x in started.splitlines() if x.startswith("apr_")]
    approval_id, tool, reason = line.split(" ", 2)
    assert (tool, reason) == ("issue_refund", "Refunds over $200 need a lead")
    _decisions.decide(gov.db, approval_id, by=LEAD, approve=True)
    assert "refunded 850" in run(tmp_path, fake, f"{framework}-setup", f"{framework}-resume")
    assert approvals.get(gov.db, approval_id).status == "executed"


@pytest.mark.parametrize(("framework", "module"), [("pydantic", "pydantic_ai"), ("langgraph", "langchain_openai")])
def test_a_minimal_example_waits_for_the_approval_then_runs(
    configure: Callable[..., Governor], tmp_path: Path, fake: FakeOpenAI, framework: str, module: str
) -> None:
    """A guide's first example at the scripted endpoint (Pydantic AI's `openai:…` is the Responses API)."""
    pytest.importorskip(module)
    [policy] = re.findall(r"```yaml\n(version: 1\n.*?)```", page(GUIDE[framework]), flags=re.S)
    gov = configure(policy)
    (tmp_path / "policy.yaml").write_text(policy)
    out = while_deciding(gov, lambda: run(tmp_path, fake, f"{framework}-minimal"), approve=True)
    assert out == "Done. The tool said: refunded 850.0 on A-1\n"
    assert [r["decision"] for r in records(gov, "tool_call.decided", "ticket-4711")] == ["require_approval"]
    assert len(records(gov, "llm.call", "ticket-4711")) == 2  # the tool call, then the answer
    assert approvals.listing(gov.db, status="executed")


def test_the_pydantic_ai_explicit_capability_example_raises_a_refusal_out_of_the_run(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    """The page's agent, given a tool the policy blocks at $850: the refusal raises out of `run_sync`."""
    pytest.importorskip("pydantic_ai")
    (tmp_path / "policy.yaml").write_text(
        "version: 1\ntools:\n  issue_refund:\n    rules:\n"
        "      - {id: big, when: 'args.amount > 200', effect: block, reason: Refunds over $200 need a lead}\n"
    )
    ran = tmp_path / "ran"
    drive = f"""
import clearance
clearance.configure(policy="policy.yaml")

@agent.tool_plain
def issue_refund(order_id: str, amount: float) -> str:
    open({str(ran)!r}, "w").close()
    return "refunded"

try:
    agent.run_sync("Refund order A-1")
except clearance.ToolCallBlocked as refused:
    print("raised:", refused.reason)
"""
    out = run_in(tmp_path, example("pydantic-explicit") + drive, {"OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": "sk"})
    assert out == "raised: Refunds over $200 need a lead\n" and not ran.exists()


def test_the_claude_agent_sdk_minimal_example_runs_the_bundled_cli_and_waits_for_the_approval(
    configure: Callable[..., Governor], tmp_path: Path
) -> None:
    """docs/guides/claude-agent-sdk.md's first example: the CLI its wheel bundles, at a scripted Messages API."""
    pytest.importorskip("claude_agent_sdk")
    from .integrations.claude_fake import ScriptedClaude

    [policy] = re.findall(r"```yaml\n(version: 1\n.*?)```", page(GUIDE["claude"]), flags=re.S)
    gov = configure(policy)
    (tmp_path / "policy.yaml").write_text(policy)
    home = tmp_path / "home"
    home.mkdir()
    model = ScriptedClaude("mcp__shop__issue_refund", {"order_id": "A-1", "amount": 850})
    env = {
        "ANTHROPIC_BASE_URL": model.url,
        "ANTHROPIC_API_KEY": "test",
        "HOME": str(home),  # the CLI keeps its settings and sessions there
        "CLAUDE_CONFIG_DIR": str(home),
        "DISABLE_TELEMETRY": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    try:
        out = while_deciding(gov, lambda: run_in(tmp_path, example("claude-minimal"), env), approve=True)
    finally:
        model.close()
    assert "Done. The tool said: refunded 850" in out
    assert [r["decision"] for r in records(gov, "tool_call.decided", "ticket-4711")] == ["require_approval"]
    assert len(records(gov, "tool_call.finished", "ticket-4711")) == 1
    assert records(gov, "llm.call", "ticket-4711")  # the turn's usage


def run_example(name: str, module: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """A guide's complete example run alone in `cwd`, as the page says; it must succeed."""
    if importlib.util.find_spec(module.split(".")[0]) is None:
        pytest.skip(f"{module} is not installed")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    out = subprocess.run(
        [sys.executable, "-c", example(name)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("agents-complete", "agents"),
        ("pydantic-complete", "pydantic_ai"),
        ("custom-complete", "clearance"),
        ("langgraph-complete", "langgraph"),
        ("adk-complete", "google.adk"),
    ],
)
def test_a_guide_s_complete_example_pauses_is_approved_and_resumes(tmp_path: Path, name: str, module: str) -> None:
    """Runs as the page says, alone, with a scripted model: no endpoint, no environment."""
    out = run_example(name, module, tmp_path)
    assert out.stdout.startswith("paused: issue_refund")
    answer = out.stdout.rstrip().splitlines()[-1]
    assert "refunded 850" in answer or answer == "The refund is done."
    db = next((tmp_path / ".clearance").glob("*.db"))
    kinds = [json.loads(line)["kind"] for line in run_cli("audit", "export", db=db, check=True).stdout.splitlines()]
    assert kinds.count("approval.executed") == 1 and kinds.count("tool_call.finished") == 1  # ran exactly once


@pytest.mark.parametrize(
    ("name", "module", "decisions"),
    [
        ("ag2-complete", "ag2", ["block"]),
        ("llamaindex-complete", "llama_index.core", ["block"]),
        ("mcp-complete", "mcp", ["allow", "block"]),
    ],
)
def test_a_guide_s_complete_example_blocks_the_refund_and_tells_the_model(
    tmp_path: Path, name: str, module: str, decisions: list[str]
) -> None:
    out = run_example(name, module, tmp_path)
    assert "Blocked by policy: Refunds over $200 go through a lead" in out.stdout
    db = next((tmp_path / ".clearance").glob("*.db"))
    records = [json.loads(line) for line in run_cli("audit", "export", db=db, check=True).stdout.splitlines()]
    assert [r["decision"] for r in records if r["kind"] == "tool_call.decided"] == decisions
    assert len([r for r in records if r["kind"] == "tool_call.finished"]) == decisions.count(
        "allow"
    )  # blocked: never ran


def test_every_extra_the_page_names_exists() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pages = [page("frameworks.md"), *(p.read_text() for p in (DOCS / "guides").glob("*.md"))]
    named = set(re.findall(r"clearance\[([a-z-]+)\]", "\n".join(pages)))
    assert {"crewai", "llamaindex-openai", "langchain", "adk"} <= named
    assert named <= set(extras)
    assert any(r.startswith("langgraph-checkpoint-sqlite") for r in extras["langchain"])  # SqliteSaver comes with it
