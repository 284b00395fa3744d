"""Every code example on the documentation site (docs/**/*.md) runs or is checked.

Each fenced block says its language. Python blocks run, each in a fresh directory holding the
page's `<!-- file: NAME -->` blocks, with PYTHONPATH=src and no network beyond 127.0.0.1; a
policy (a YAML block starting `version: 1`) passes `clearance policy check`; JSON parses; a
shell block's `clearance` commands and options exist, as do its `make` targets, scripts and
`CLEARANCE_*` variables. `text` blocks are output, shown as is; one marked `<!-- output: … -->`
right after a Python block is what that block prints, checked (`…` stands for what varies).

A block that cannot run on its own says so right above it: `<!-- not-run: why -->` (a Python
one is still compiled and its imports from `clearance` must resolve; it names the test that runs
it as shown — only an abridged interface names none). Nothing is skipped
silently: a block with no language, or one in a language this file does not know, fails.
(The README's examples are run by tests/test_docs.py; the framework guides' pause-and-resume
examples by tests/test_docs_frameworks.py, and those that need a service beside them — a web
server, Redis, `clearance serve` — by tests/test_docs_services.py, as their pages show them.)
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import click
import pytest

from clearance import Settings
from clearance.cli import main
from clearance.server import ServerSettings

from .conftest import REPO, run_cli

DOCS = REPO / "docs"
LANGUAGES = {"python", "yaml", "json", "bash", "sh", "text"}
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+)(?P<lang>[A-Za-z0-9_+-]*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>not-run|file|example|output):\s*(?P<value>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page, with the markers in the comment lines right above it."""

    page: Path
    line: int
    language: str
    code: str
    markers: dict[str, str]

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(DOCS)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    found = []
    lines = page.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            i += 1
            continue
        indent, fence = len(m.group("indent")), m.group("fence")
        markers: dict[str, str] = {}
        above = i - 1
        while above >= 0 and (marker := _MARKER.match(lines[above])):
            markers.setdefault(marker.group("kind"), marker.group("value"))
            above -= 1
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == fence)
        body = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
        found.append(Block(page, i + 1, m.group("lang"), body, markers))
        i = end + 1
    return found


PAGES = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)
BLOCKS = [b for page in PAGES for b in blocks(page)]


def of(language: str, *, run: bool) -> list[Block]:
    return [b for b in BLOCKS if b.language == language and ("not-run" in b.markers) != run]


def test_every_block_says_its_language_and_every_opt_out_why() -> None:
    unknown = [f"{b.id} ({b.language or 'no language'})" for b in BLOCKS if b.language not in LANGUAGES]
    assert unknown == [], "give each block a language: python, yaml, json, bash or text (output)"
    assert [b.id for b in BLOCKS if "not-run" in b.markers and len(b.markers["not-run"]) < 10] == []
    checked = [output_of(b) for b in of("python", run=True)]
    assert len([b for b in BLOCKS if "output" in b.markers]) == len([c for c in checked if c is not None]), (
        "an <!-- output: … --> marker goes on a text block right after a Python block that runs"
    )


def test_the_pages_have_examples() -> None:
    assert len(BLOCKS) >= 25 and len(of("yaml", run=True)) >= 3  # the parser finds them


# ---------------------------------------------------------------- Python

# Loaded first in every example's interpreter: any connection beyond this machine fails.
_NO_NETWORK = """
import socket

_LOCAL = {"127.0.0.1", "::1", "localhost", None}
_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _check(address):
    if isinstance(address, tuple) and address[0] not in _LOCAL:
        raise OSError(f"a docs example may not reach {address[0]}: the network is blocked")


def connect(self, address):
    _check(address)
    return _connect(self, address)


def connect_ex(self, address):
    _check(address)
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    _check((host,))
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
"""


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    site = cwd / ".site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(_NO_NETWORK)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO / "src")])}
    env = {k: v for k, v in env.items() if not k.startswith("CLEARANCE_")}
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_an_example_cannot_reach_the_network(tmp_path: Path) -> None:
    result = run_python("import socket; socket.create_connection(('192.0.2.1', 80), timeout=1)", tmp_path)
    assert "the network is blocked" in result.stderr


def output_of(block: Block) -> str | None:
    """The `text` block right after `block` marked `<!-- output: … -->`: what the example prints."""
    after = [b for b in blocks(block.page) if b.line > block.line][:1]
    return after[0].code if after and after[0].language == "text" and "output" in after[0].markers else None


@pytest.mark.parametrize("block", of("python", run=True), ids=lambda b: b.id)
def test_python_examples_run(block: Block, tmp_path: Path) -> None:
    for other in blocks(block.page):
        if "file" in other.markers:
            (tmp_path / other.markers["file"]).write_text(other.code)
    result = run_python(block.code, tmp_path)
    assert result.returncode == 0, result.stderr
    if (shown := output_of(block)) is not None:  # what the page says it prints ("…" for what varies)
        assert re.fullmatch(".*?".join(map(re.escape, shown.split("…"))), result.stdout, re.S), result.stdout
    if block.page.name == "index.md":  # the home page's example: what it says it does
        assert result.stdout == "refunded 45 on A-1001\nblocked: Refunds over $200 need a lead\n"
        audit = run_cli("audit", "export", db=tmp_path / ".clearance/front.db", check=True).stdout
        decided = [json.loads(r) for r in audit.splitlines() if json.loads(r)["kind"] == "tool_call.decided"]
        assert [r["decision"] for r in decided] == ["allow", "block"]


def test_a_python_block_not_run_here_names_the_test_that_runs_it() -> None:
    """A block is only compiled when its reason names no test of this repository: kept to what cannot run."""
    for block in of("python", run=False):
        for named in re.findall(r"tests/[\w/]+\.py", block.markers["not-run"]):
            assert (REPO / named).is_file(), f"{block.id}: no {named}"
    only_compiled = [b for b in of("python", run=False) if "tests/" not in b.markers["not-run"]]
    assert [str(b.page.relative_to(DOCS)) for b in only_compiled] == ["extending.md"]  # the Channel interface, abridged


@pytest.mark.parametrize("block", of("python", run=False), ids=lambda b: b.id)
def test_python_examples_not_run_compile_and_import_what_exists(block: Block) -> None:
    tree = compile(block.code, block.id, "exec", ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "clearance":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}"), (
                    f"{block.id}: {node.module} has no {alias.name}"
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "clearance":
                    importlib.import_module(alias.name)


# ---------------------------------------------------------------- YAML and JSON


@pytest.mark.parametrize("block", of("yaml", run=True), ids=lambda b: b.id)
def test_policies_pass_the_check(block: Block, tmp_path: Path) -> None:
    assert block.code.startswith("version: 1"), f"{block.id}: not a policy; say what it is with <!-- not-run: … -->"
    (tmp_path / "policy.yaml").write_text(block.code)
    result = run_cli("policy", "check", str(tmp_path / "policy.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_json_parses() -> None:
    for block in of("json", run=True):
        json.loads(block.code)


# ---------------------------------------------------------------- shell

SETTINGS = {f"CLEARANCE_{f.upper()}" for f in (*Settings.model_fields, *ServerSettings.model_fields)}
# Commands an example may use beside `clearance`, make and scripts of the repository.
OTHER_COMMANDS = {"pip", "npx", "curl", "cd", "export", "uvicorn", "celery", "docker", ".", "source"}


def commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuations joined, `&&` and `;` split, comments dropped."""
    found = []
    code = re.sub(r"\$\([^()]*\)", "VALUE", code)  # a command substitution is a value here
    for line in re.sub(r"\\\n\s*", " ", code).splitlines():
        words = shlex.split(line, comments=True)
        while words:
            ends = [i for i, w in enumerate(words) if w in ("&&", ";")]
            end = ends[0] if ends else len(words)
            found.append(words[:end])
            words = words[end + 1 :]
    return [c for c in found if c]


def check_clearance(words: list[str], where: str) -> None:
    command: click.Command = main
    args = words[1:]
    while isinstance(command, click.Group) and args and not args[0].startswith("-"):
        assert args[0] in command.commands, f"{where}: no command {' '.join(words[: words.index(args[0]) + 1])}"
        command, args = command.commands[args[0]], args[1:]
    options = {o for p in command.params if isinstance(p, click.Option) for o in (*p.opts, *p.secondary_opts)}
    for word in args:
        if word.startswith("-") and word not in ("-h", "--help"):
            assert word.split("=")[0] in options, f"{where}: {command.name} has no option {word}"


@pytest.mark.parametrize("block", of("bash", run=True) + of("sh", run=True), ids=lambda b: b.id)
def test_shell_commands_exist(block: Block) -> None:
    makefile = (REPO / "Makefile").read_text()
    for words in commands(block.code):
        if words[0] == "export":
            words = words[1:]
        while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", words[0]):
            name = words.pop(0).split("=")[0]
            if name.startswith("CLEARANCE_"):
                assert name in SETTINGS, f"{block.id}: no setting {name}"
        if not words:
            continue
        program = os.path.basename(words[0])
        if program == "clearance":
            check_clearance(words, block.id)
        elif program == "make":
            for target in words[1:]:
                assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), (
                    f"{block.id}: no make target {target}"
                )
        elif program in ("python", "python3"):
            if words[1] == "-m":
                assert importlib.util.find_spec(words[2]), f"{block.id}: no module {words[2]}"
            else:
                assert (REPO / words[1]).is_file(), f"{block.id}: no script {words[1]}"
        else:
            assert program in OTHER_COMMANDS, f"{block.id}: {program} is not a command the docs may use"
