"""The README is tested: its examples run, and every setting and command is documented."""

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


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


@pytest.fixture
def ran_example(tmp_path: Path) -> Path:
    """A directory in which the README's Python example has run."""
    # The self-contained example; the remote-mode one needs a server (tests/server/test_remote.py).
    [example] = [b for b in blocks("python") if "configure(policy=" in b]
    result = subprocess.run(
        [sys.executable, "-c", example],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        timeout=60,
    )
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
    [policy_block] = [b for b in blocks("yaml") if b.startswith("version: 1")]
    (ran_example / "p.yaml").write_text(policy_block)
    assert run_cli("policy", "check", str(ran_example / "p.yaml")).returncode == 0
    [cases] = [b for b in blocks("yaml") if b.startswith("cases:")]
    (ran_example / "cases.yaml").write_text(cases)
    result = run_cli("policy", "test", str(ran_example / "policy.yaml"), str(ran_example / "cases.yaml"))
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize("field", sorted(set(Settings.model_fields) | set(ServerSettings.model_fields)))
def test_every_setting_is_documented(field: str) -> None:
    assert f"`CLEARANCE_{field.upper()}`" in README


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
    assert f"`{command}" in README


def test_the_readme_set_up_commands_are_the_ci_command() -> None:
    assert "make demo" in README and "make test" in README
    assert "exec make test" in (REPO / ".ci/run").read_text()
