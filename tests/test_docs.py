"""The README and the docs site are tested: their examples run, and every setting and command is documented."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from clearance import Settings
from clearance.cli import main
from clearance.server import ServerSettings

from .conftest import REPO, run_cli

README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
# Everything a reader can search: the front page and every page of the site.
EVERYWHERE = "\n".join([README, *(p.read_text() for p in sorted(DOCS.rglob("*.md")))])


def blocks(language: str, page: str = "README.md") -> list[str]:
    """The code blocks of one language on a page (README.md, or a path under docs/)."""
    text = README if page == "README.md" else (DOCS / page).read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def run_python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=60,
    )


@pytest.fixture
def ran_example(tmp_path: Path) -> Path:
    """A directory in which the quickstart's Python example has run."""
    [example] = [b for b in blocks("python", "quickstart.md") if "configure(policy=" in b]
    result = run_python(example, tmp_path)
    assert result.returncode == 0, result.stderr
    return tmp_path


def test_python_examples_run(ran_example: Path) -> None:
    audit = run_cli("audit", "export", db=ran_example / ".clearance/readme.db", check=True).stdout
    records = [json.loads(line) for line in audit.splitlines()]
    decided = [e for e in records if e["kind"] == "tool_call.decided"]
    assert [e["decision"] for e in decided] == ["allow", "block", "block"]
    assert decided[0]["args"]["card_number"] == "[REDACTED]"
    assert decided[1]["rule_ids"] == ["params:amount"]  # the negative refund
    assert [e["kind"] for e in records].count("llm.call") == 1


def test_policy_examples_validate_and_the_cases_pass(ran_example: Path) -> None:
    [policy_block] = [b for b in blocks("yaml", "concepts/policies.md") if b.startswith("version: 1")]
    (ran_example / "p.yaml").write_text(policy_block)
    assert run_cli("policy", "check", str(ran_example / "p.yaml")).returncode == 0
    [cases] = [b for b in blocks("yaml", "concepts/policies.md") if b.startswith("cases:")]
    (ran_example / "cases.yaml").write_text(cases)
    result = run_cli("policy", "test", str(ran_example / "policy.yaml"), str(ran_example / "cases.yaml"))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("field", sorted(set(Settings.model_fields) | set(ServerSettings.model_fields)))
def test_every_setting_is_documented(field: str) -> None:
    assert f"`CLEARANCE_{field.upper()}`" in EVERYWHERE


def _commands(group: click.Group, prefix: str) -> list[str]:
    found = []
    for name, command in group.commands.items():
        path = f"{prefix} {name}"
        if isinstance(command, click.Group):
            found += _commands(command, path)
        else:
            found.append(path)
    return found


@pytest.mark.parametrize("command", _commands(main, "clearance"))
def test_every_command_is_documented(command: str) -> None:
    assert f"`{command}" in EVERYWHERE


def test_the_readme_set_up_commands_are_the_ci_command() -> None:
    assert "make demo" in README and "make test" in README
    assert "exec make test" in (REPO / ".ci/run").read_text()


def test_the_front_page_example_runs(tmp_path: Path) -> None:
    [example] = blocks("python")
    assert len(example.splitlines()) <= 25  # the README's short example stays short
    result = run_python(example, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["refunded 45 on A-1001", "blocked: Refunds over $200 need a lead"]
    assert (DOCS / "index.md").read_text().count(example) == 1  # the site's home shows the same one


@pytest.mark.parametrize(
    ("page", "example"),
    [
        ("guides/webhooks.md", "examples/webhooks/refund_tools.py"),
        ("guides/webhooks.md", "examples/webhooks/fastapi_app.py"),
        ("guides/celery.md", "examples/celery/tasks.py"),
        ("guides/celery.md", "examples/celery/webhook.py"),
    ],
)
def test_a_guide_shows_the_tested_example_as_it_is(page: str, example: str) -> None:
    """The guides copy examples/ (which the tests run) into the page; the copy must not drift."""
    assert (REPO / example).read_text().rstrip() in [b.rstrip() for b in blocks("python", page)]


def test_the_session_budget_example_runs(tmp_path: Path) -> None:
    [example] = blocks("python", "concepts/sessions-and-cost.md")
    result = run_python(example, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "order A-1: shipped",
        "session budget exhausted: $0.0115 spent, limit $0.01",
        "order A-3: shipped",
    ]
    by_session = run_cli("usage", "--by", "session", db=tmp_path / ".clearance/sessions.db", check=True).stdout
    assert "ticket-4711" in by_session


def test_the_approval_example_runs_the_edited_call(tmp_path: Path) -> None:
    [example] = [b for b in blocks("python", "concepts/approvals.md") if "on_pending=" in b and "import" in b]
    result = run_python(example, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "refunded 150.0 on A-1 (partial refund, per policy)"


def test_the_grant_example_lets_similar_calls_through_within_its_total(tmp_path: Path) -> None:
    [example] = [b for b in blocks("python", "concepts/grants.md") if "dana_decides" in b]
    result = run_python(example, tmp_path)
    assert result.returncode == 0, result.stderr
    asked = [line for line in result.stdout.splitlines() if line.startswith("asked:")]
    assert asked == ["asked: 260", "asked: 230"]  # $240 and $210 went through on the grant


def test_the_shadow_example_reports_what_the_shadow_would_have_blocked(tmp_path: Path) -> None:
    [example] = blocks("python", "concepts/shadow.md")
    result = run_python(example, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "refunded 350 on A-2" in result.stdout  # enforced: allowed
    assert "1 decided otherwise than enforced" in result.stdout
    assert re.search(r"big-next +allow -> block +1 ", result.stdout)


def test_the_sink_example_writes_lines_that_check_against_the_chain(tmp_path: Path) -> None:
    [example] = [b for b in blocks("python", "concepts/audit.md") if "hashlib" in b]
    result = run_python(example, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[1] for line in lines] == ["tool_call.decided", "tool_call.finished"]
    assert all(line.endswith(" chained") for line in lines)
