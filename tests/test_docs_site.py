"""The documentation site builds strictly, and its reference covers every setting, policy key,
helper, fact, command, option and route, each with a description written in the code."""

from __future__ import annotations

import functools
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path
from types import ModuleType

import click
import pytest
from pydantic import BaseModel

import clearance
import clearance.server
import clearance.sinks
from clearance import Settings
from clearance.policy import _facts, _model
from clearance.server import ServerSettings

from .conftest import REPO


def _reference() -> ModuleType:
    """docs/_hooks/reference.py, the MkDocs hook that writes the reference pages."""
    spec = importlib.util.spec_from_file_location("docs_reference", REPO / "docs" / "_hooks" / "reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    spec.loader.exec_module(module)
    return module


ref = _reference()


@functools.cache
def rendered(name: str) -> str:
    """A generated page, rendered once for all the tests."""
    return str(getattr(ref, f"{name}_page")())


@functools.cache
def routes() -> dict[str, typing.Any]:
    return {e.name: e for e in ref.route_entries()}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`mkdocs build --strict`, once for the tests that read the built site."""
    built = tmp_path_factory.mktemp("docs") / "site"
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(built)],
        cwd=REPO,
        capture_output=True,
        text=True,
        # No PYTHONPATH: the hook finds this checkout's src/ itself, whatever the virtualenv holds.
        env={**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr, result.stderr
    return built


def test_the_site_builds_strictly(site: Path) -> None:
    """`mkdocs build --strict`: a broken link, a page missing from the files or a bad reference fails."""
    for page in ("settings", "policy", "cli", "rest-api", "python"):
        assert (site / "reference" / page / "index.html").is_file()
    policy = (site / "reference" / "policy" / "index.html").read_text()
    for entry in ref.policy_entries():  # described from this checkout's code
        assert html.escape(entry.description.split("`")[0].rstrip(), quote=False) in policy, entry.name
    python_api = (site / "reference" / "python" / "index.html").read_text()
    exported = [f"{m.__name__}.{n}" for m in (clearance, clearance.sinks, clearance.server) for n in m.__all__]
    missing = [name for name in exported if f'id="{name}"' not in python_api and name != "clearance.__version__"]
    assert missing == [], "give them a docstring"


# ---------------------------------------------------------------- finding the answers

# The built site's own search (Material's worker, on the built index), run in node as a browser would.
SEARCH = """
const fs = require("fs");
const [site, ...queries] = process.argv.slice(1);
const dir = `${site}/assets/javascripts/workers`;
let handler;
const answers = [];
Object.assign(globalThis, {
  self: globalThis,
  addEventListener: (type, listener) => { handler = listener; },
  postMessage: (message) => answers.push(message),
  importScripts: () => {},
});
eval(fs.readFileSync(`${dir}/${fs.readdirSync(dir).find((f) => f.endsWith(".min.js"))}`, "utf8"));
const index = JSON.parse(fs.readFileSync(`${site}/search/search_index.json`, "utf8"));
(async () => {
  await handler({ data: { type: 0, data: { ...index, options: { suggest: false } } } });
  const found = {};
  for (const query of queries) {
    answers.length = 0;
    await handler({ data: { type: 2, data: query } });
    found[query] = answers[0].data.items.map((page) => page.map((section) => section.location));
  }
  console.log(JSON.stringify(found));
})();
"""

# What new users asked (issue 19), and the section of the site that answers it.
FRICTION = {
    "LiteLlm": "guides/adk/#a-complete-example-litellm-and-a-durable-session-service",
    "durable session service": "guides/adk/#a-complete-example-litellm-and-a-durable-session-service",
    "SqliteSaver": "guides/langgraph/#the-sqlite-checkpointer-sqlitesaver-and-its-connection",
    "SqliteSaver connection": "guides/langgraph/#the-sqlite-checkpointer-sqlitesaver-and-its-connection",
    "install CrewAI": "frameworks/#installing",
    "CrewAI": "guides/crewai/",
    "pinned": "setup/",
}


def test_each_friction_point_is_a_heading_the_site_s_search_puts_first(site: Path) -> None:
    """A section titled with the answer (so it is in the page's table of contents), in the first page found."""
    index = json.loads((site / "search" / "search_index.json").read_text())
    titles = {d["location"]: html.unescape(re.sub("<[^>]+>", "", d["title"])) for d in index["docs"]}
    assert "LiteLlm and a durable session service" in titles[FRICTION["LiteLlm"]]
    assert "SqliteSaver and its connection" in titles[FRICTION["SqliteSaver"]]
    assert "a virtualenv of its own" in titles["guides/crewai/#install-a-virtualenv-of-its-own"]
    setup = next(d["text"] for d in index["docs"] if d["location"] == "setup/")
    assert ".venv-pinned" in setup and "make test-pinned" in setup
    if shutil.which("node") is None:
        pytest.skip("node runs the site's search worker")
    out = subprocess.run(
        ["node", "-e", SEARCH, str(site), *FRICTION], capture_output=True, text=True, timeout=120, check=True
    )
    found = json.loads(out.stdout)
    missed = {query: pages[:1] for query, pages in found.items() if FRICTION[query] not in (pages[:1] or [[]])[0]}
    assert missed == {}, "the first page the search shows has no section answering these"


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize(("model", "field"), [(m, f) for m in (Settings, ServerSettings) for f in m.model_fields])
def test_every_setting_is_in_the_reference_with_a_description(model: type[BaseModel], field: str) -> None:
    [entry] = [e for e in ref.settings_entries(model) if e.name == f"CLEARANCE_{field.upper()}"]
    assert entry.description.strip(), f"describe {model.__name__}.{field} (its docstring's Attributes)"
    assert f"`CLEARANCE_{field.upper()}`" in rendered("settings")


# ---------------------------------------------------------------- the policy


def _policy_models() -> list[type[BaseModel]]:
    return [
        v
        for v in vars(_model).values()
        if isinstance(v, type) and issubclass(v, BaseModel) and v.__module__ == _model.__name__
        if v is not _model._Strict
    ]


@pytest.mark.parametrize(("model", "field"), [(m, f) for m in _policy_models() for f in m.model_fields])
def test_every_policy_key_is_described(model: type[BaseModel], field: str) -> None:
    described = ref.attributes(model).get(field, "")
    assert described.strip(), f"describe {model.__name__}.{field} (its docstring's Attributes)"


def test_every_policy_key_is_in_the_reference() -> None:
    entries = ref.policy_entries()
    named = {e.name.rsplit(".", 1)[-1] for e in entries}
    assert named >= {f for m in _policy_models() for f in m.model_fields}
    assert [e.name for e in entries if not e.description.strip()] == []
    page = rendered("policy")
    for key in ("`tools.<tool>.rules[].approval.grants.max_total`", "`budgets.agent.window`", "`redact`"):
        assert key in page


def test_every_helper_is_in_the_reference_and_conditions_may_call_it() -> None:
    from clearance.policy._compile import engine

    helpers = ref.helper_entries()
    assert {"domain", "domains", "all_in", "any_in", "dec_cmp", "num", "dec_gt", "dec_eq"} <= {e.name for e in helpers}
    for helper in helpers:
        assert helper.description.strip(), helper.name
        args = "args.x" if helper.name in ("num", "domain", "domains") else "args.x, args.y"
        assert engine().check(f"{helper.name}({args}) == {helper.name}({args})", None) == [], helper.name
    assert engine().check("no_such_helper(args.x) == 1", None) != []  # what an undeclared one gives


def test_every_fact_is_in_the_reference() -> None:
    assert ref.fact_kinds_documented() == set(typing.get_args(_facts.FactKind))
    assert all(e.description.strip() for e in ref.fact_entries())


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize(("path", "command"), list(ref.commands()), ids=[p for p, _ in ref.commands()])
def test_every_command_and_option_is_in_the_reference_with_help(path: str, command: click.Command) -> None:
    assert (command.help or "").strip(), f"{path} has no help"
    page = rendered("cli")
    if path != "clearance":
        assert f"# {path}\n" in page
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"{path} {param.opts[0]} has no help="
            assert f"`{param.opts[0]}" in page


# ---------------------------------------------------------------- the REST API


@pytest.mark.parametrize("route", list(routes()))
def test_every_route_is_in_the_reference_with_a_summary_and_description(route: str) -> None:
    entry = routes()[route]
    assert entry.default.strip() and entry.description.strip(), f"{route}: give it a summary and a description"
    assert f"### `{route}`" in rendered("api")


def test_every_served_route_is_in_the_reference_with_who_may_call_it() -> None:
    from fastapi.routing import APIRoute

    served = {
        f"{method} {path}"
        for path, methods, route in ref.served_routes()
        if isinstance(route, APIRoute) and route.include_in_schema
        for method in methods - {"HEAD", "OPTIONS"}
    }
    assert len(served) >= 60  # the included routers were walked
    assert served == set(routes())
    who = ref.access()
    assert who["GET /v1/events"] == "any key or signed-in person"
    assert who["POST /v1/check"] == "a key or signed-in person with the `agent` scope"
    assert who["GET /healthz"] == "anyone: no key"
    assert "**Who may call**: a key or signed-in person with the `admin` scope." in rendered("api")


# ---------------------------------------------------------------- escaping


def test_text_from_the_code_is_escaped() -> None:
    assert ref.cell("a | b <script> *x* `c | d`") == "a \\| b &lt;script&gt; \\*x\\* `c | d`"
    assert ref.code("a ` b") == "``a ` b``"
    assert ref.code("`x`") == "`` `x` ``"
