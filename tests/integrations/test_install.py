"""`configure()` governs frameworks without importing them, and `import clearance` imports none."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest

from ._shared import run_python

FRAMEWORKS = (
    "langchain",
    "langgraph",
    "langchain_core",
    "agents",
    "mcp",
    "google",
    "llama_index",
    "ag2",
    "crewai",
    "pydantic_ai",
    "claude_agent_sdk",
    "openai",
    "anthropic",
)


def _run(code: str, tmp_path: Path) -> str:
    return run_python(tmp_path, code, policy="version: 1\ntools: {}\n")


def test_import_clearance_imports_no_framework(tmp_path: Path) -> None:
    code = f"import sys, clearance; print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS}))"
    assert _run(code, tmp_path) == "[]"


def test_configure_imports_no_framework_and_governs_one_imported_later(tmp_path: Path) -> None:
    code = f"""
import sys, clearance
from clearance import integrations
clearance.configure()
print(sorted(m for m in sys.modules if m.split('.')[0] in {FRAMEWORKS}))
import agents  # imports mcp and openai too: all three are governed
print(sorted(integrations._installed))
from clearance.integrations._patching import governed
print(governed(agents.Agent, "get_all_tools"))
"""
    assert _run(code, tmp_path).splitlines() == ["[]", "['agents', 'mcp', 'openai']", "True"]


_ADK_GOVERNED = """
from google.adk.agents import LlmAgent
from google.adk.runners import Runner
from google.adk.sessions import InMemorySessionService
agent = LlmAgent(name="a", model="gemini-2.0-flash")
runner = Runner(app_name="a", agent=agent, session_service=InMemorySessionService())
print(type(runner.plugin_manager.get_plugin("clearance")).__name__)
"""
_LLAMAINDEX_GOVERNED = """
from llama_index.core.agent.workflow import AgentWorkflow, FunctionAgent
from clearance.integrations._patching import governed
print(governed(FunctionAgent, "_call_tool") and governed(AgentWorkflow, "_call_tool"))
"""


def test_a_subpackage_imported_after_configure_is_governed(tmp_path: Path) -> None:
    """`google.adk` / `llama_index.core` are submodules: installed once attached to their parent package."""
    pytest.importorskip("google.adk")
    pytest.importorskip("llama_index.core")
    code = f"""
import clearance
from clearance import integrations
clearance.configure()
import google.adk
from google.adk.runners import Runner
{_ADK_GOVERNED}
import llama_index.core
{_LLAMAINDEX_GOVERNED}
print(sorted(integrations._installed))
"""
    assert _run(code, tmp_path).splitlines() == ["ClearancePlugin", "True", "['adk', 'llamaindex']"]


@pytest.mark.parametrize(
    ("statement", "check"),
    [("from google.adk.runners import Runner", _ADK_GOVERNED), ("import llama_index.core.agent", _LLAMAINDEX_GOVERNED)],
    ids=["adk", "llamaindex"],
)
def test_a_framework_first_imported_by_several_threads_at_once_is_governed(
    tmp_path: Path, statement: str, check: str
) -> None:
    pytest.importorskip(statement.split()[1])
    code = f"""
import threading, clearance
clearance.configure()
errors = []
def load():
    try:
        {statement}
    except BaseException as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=load) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(errors)
{check}
"""
    errors, governed = _run(code, tmp_path).splitlines()
    assert errors == "[]" and governed in ("ClearancePlugin", "True")


def test_a_framework_imported_before_configure_is_installed_at_once(tmp_path: Path) -> None:
    code = """
import agents, clearance
from clearance import integrations
clearance.configure()
print(sorted(integrations._installed))
"""
    assert _run(code, tmp_path) == "['agents', 'mcp', 'openai']"  # the SDK imports mcp and openai


def test_a_replayed_call_key_gets_its_first_ticket_and_other_arguments_are_refused(configure: Any) -> None:
    import pytest

    import clearance
    from clearance.integrations._common import begin

    from ._shared import POLICY, records

    gov = configure(POLICY)
    _, first = begin("issue_refund", {"order_id": "A-1", "amount": 850.0}, call_key="call_9")
    _, again = begin("issue_refund", {"order_id": "A-1", "amount": 850.0}, call_key="call_9")
    assert (again.call_id, again.approval_id) == (first.call_id, first.approval_id) and first.approval_id
    with pytest.raises(clearance.ApprovalError, match="other arguments"):
        begin("issue_refund", {"order_id": "A-1", "amount": 9.0}, call_key="call_9")
    assert len(records(gov, "tool_call.decided")) == 1


def test_an_integration_without_its_framework_says_which_extra_to_install(tmp_path: Path) -> None:
    cases = {
        "langchain": ("langchain", "clearance[langchain]"),
        "agents": ("agents", "clearance[openai-agents]"),
        "mcp": ("mcp", "clearance[mcp]"),
        "adk": ("google.adk", "clearance[adk]"),
        "ag2": ("ag2", "clearance[ag2]"),
        "llamaindex": ("llama_index", "clearance[llamaindex]"),
        "crewai": ("crewai", "clearance[crewai]"),
    }
    code = f"""
import importlib, sys
for module, (blocked, _) in {cases!r}.items():
    saved = {{k: v for k, v in sys.modules.items() if k == blocked or k.startswith(blocked + ".")}}
    sys.modules[blocked] = None  # as if it were not installed
    try:
        importlib.import_module("clearance.integrations." + module)
    except ImportError as exc:
        print(module, "|", str(exc).replace(chr(10), " "))
    else:
        print(module, "| imported")
    del sys.modules[blocked]
    sys.modules.update(saved)
"""
    lines = dict(line.split(" | ", 1) for line in _run(code, tmp_path).splitlines())
    for module, (_, extra) in cases.items():
        assert lines[module].endswith(f'pip install "{extra}"'), lines[module]


def test_a_framework_version_outside_the_tested_range_fails_loudly() -> None:
    import pytest

    import clearance
    from clearance.integrations._patching import check_version, wrap_method

    check_version("mcp", "2.3.0", minimum=(1, 20), below=(3, 0))  # inside: nothing happens
    for version, why in (("1.19.2", "is installed"), ("3.0.0", "is installed"), ("dev", "cannot read")):
        with pytest.raises(clearance.ConfigurationError, match=why) as raised:
            check_version("mcp", version, minimum=(1, 20), below=(3, 0))
        assert why == "cannot read" or 'pip install "mcp>=1.20,<3.0"' in str(raised.value)

    class Framework:
        def run(self) -> str:
            return "ran"

        @classmethod
        def make(cls, name: str) -> str:
            return f"{cls.__name__} {name}"

        async def arun(self) -> str:
            return "ran"

    class Subclass(Framework):
        pass

    def govern(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return "governed " + wrapped(*args, **kwargs)

    async def agovern(wrapped: Any, instance: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return "governed " + await wrapped(*args, **kwargs)

    assert wrap_method(Framework, "run", govern) and not wrap_method(Framework, "run", govern)  # wrapped once only
    assert not wrap_method(Subclass, "run", govern)  # nor again through a subclass
    assert wrap_method(Framework, "make", govern) and wrap_method(Framework, "arun", agovern)
    assert Framework().run() == "governed ran" and Subclass().run() == "governed ran"
    assert Subclass.make("x") == "governed Subclass x" and Framework().make("y") == "governed Framework y"
    assert inspect.iscoroutinefunction(Framework().arun) and asyncio.run(Framework().arun()) == "governed ran"


def test_pydantic_ai_and_the_claude_agent_sdk_imported_after_configure_are_governed(tmp_path: Path) -> None:
    code = """
import clearance
from clearance import integrations
clearance.configure()
import pydantic_ai, claude_agent_sdk
print(sorted(m for m in integrations._installed if m in ("pydantic_ai", "claude_agent")))
from clearance.integrations._patching import governed
print(governed(pydantic_ai.Agent, "iter"))
"""
    assert _run(code, tmp_path).splitlines() == ["['claude_agent', 'pydantic_ai']", "True"]


def test_an_integration_module_imported_after_configure_before_its_framework_installs(tmp_path: Path) -> None:
    """`import clearance.integrations.langchain` imports LangChain first: it was half-imported when the hook ran."""
    code = """
import clearance
from clearance import integrations
clearance.configure()
import clearance.integrations.langchain
from clearance.integrations import agents
print(sorted(integrations._installed & {"langchain", "agents"}))
"""
    assert _run(code, tmp_path).splitlines() == ["['agents', 'langchain']"]


def test_a_framework_version_the_integration_cannot_import_fails_loudly(tmp_path: Path) -> None:
    """An older Pydantic AI lacks names the integration imports: importing it says so, never runs ungoverned."""
    stub = tmp_path / "pydantic_ai"  # (the process runs in tmp_path: this stands in for pydantic_ai 2.60)
    stub.mkdir()
    (stub / "__init__.py").write_text('__version__ = "2.60.0"\n\nclass Agent:\n    pass\n')
    code = """
import clearance
clearance.configure()
try:
    import pydantic_ai
except clearance.ConfigurationError as exc:
    print("refused:", exc)
else:
    print("imported ungoverned")
"""
    out = _run(code, tmp_path)
    assert out.startswith("refused: Clearance cannot govern this version of pydantic_ai"), out


def test_an_integration_module_imported_without_its_framework_waits_for_it(tmp_path: Path) -> None:
    """`clearance.integrations.openai` does not import `openai`: importing it alone installs nothing yet."""
    code = """
import sys, clearance
from clearance import integrations
clearance.configure()
import clearance.integrations.openai
print("openai" in sys.modules, "openai" in integrations._installed)
import openai
print("openai" in integrations._installed)
"""
    assert _run(code, tmp_path).splitlines() == ["False False", "True"]
