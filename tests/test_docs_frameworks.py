"""docs/frameworks.md is tested: its policy, and its ADK and LangGraph examples run, paused in one
process and resumed in another, against a scripted OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
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

from .conftest import REPO
from .fake_openai import FakeOpenAI
from .integrations._shared import LEAD

DOC = (REPO / "docs" / "frameworks.md").read_text()


def example(name: str) -> str:
    """The Python block after `<!-- example: name -->`."""
    [code] = re.findall(rf"<!-- example: {name} -->\n```python\n(.*?)```", DOC, flags=re.S)
    return str(code)


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(amount=850)
    yield server
    server.close()


def run(tmp_path: Path, fake: FakeOpenAI, *names: str) -> str:
    """Run the examples, one after the other, in a fresh process in tmp_path; what it printed."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "CLEARANCE_DATABASE_URL": str(tmp_path / "audit.db"),
        "OPENAI_BASE_URL": fake.url,
        "OPENAI_API_KEY": "sk-test",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    code = "\n".join(example(n) for n in names)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.parametrize("framework", ["adk", "langgraph"])
def test_a_paused_run_is_listed_decided_and_resumed_in_another_process(
    configure: Callable[..., Governor], tmp_path: Path, fake: FakeOpenAI, framework: str
) -> None:
    if importlib.util.find_spec("litellm" if framework == "adk" else "langchain_openai") is None:  # not imported here
        pytest.skip("the example's model client is not installed")
    [policy] = re.findall(r"```yaml\n(version: 1\n.*?)```", DOC, flags=re.S)
    gov = configure(policy)
    (tmp_path / "policy.yaml").write_text(policy)
    started = run(tmp_path, fake, f"{framework}-setup", f"{framework}-start")
    [line] = [x for x in started.splitlines() if x.startswith("apr_")]
    approval_id, tool, reason = line.split(" ", 2)
    assert (tool, reason) == ("issue_refund", "Refunds over $200 need a lead")
    _decisions.decide(gov.db, approval_id, by=LEAD, approve=True)
    assert "refunded 850" in run(tmp_path, fake, f"{framework}-setup", f"{framework}-resume")
    assert approvals.get(gov.db, approval_id).status == "executed"


def test_every_extra_the_page_names_exists() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = set(re.findall(r"clearance\[([a-z-]+)\]", DOC))
    assert {"crewai", "llamaindex-openai", "langchain", "adk"} <= named
    assert named <= set(extras)
    assert any(r.startswith("langgraph-checkpoint-sqlite") for r in extras["langchain"])  # SqliteSaver comes with it
