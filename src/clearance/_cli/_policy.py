"""`clearance policy check|test|shadow|shadow-report|promote`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .._canonical import to_plain
from .._guard._record import decide_admitted
from ..errors import PolicyError, PolicyProblem
from ..policy import Effect, load_policy
from ..policy._load import Locator, parse_tree
from ._common import compact_json, friendly, safe, table
from ._shadow import promote, shadow, shadow_report


class _Case(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    tool: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    facts: dict[str, float] = Field(default_factory=dict)
    expect: Effect
    rules: list[str] | None = None


class _Cases(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cases: list[_Case] = Field(min_length=1)


@click.group("policy")
def policy_group() -> None:
    """Check policy files and test them against expected decisions; shadow and promote revisions."""


policy_group.add_command(shadow)
policy_group.add_command(shadow_report)
policy_group.add_command(promote)


@policy_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@friendly
def check(file: Path) -> None:
    """Validate and compile FILE; print every problem as file:line:column."""
    policy = load_policy(file)
    tools = policy.document.tools
    rules = sum(len(t.rules) for t in tools.values())
    click.echo(f"ok: {safe(file)} is valid ({policy.revision}, {len(tools)} tools, {rules} rules)")


def _load_cases(path: Path) -> _Cases:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([PolicyProblem(f"cannot read the cases file: {exc.strerror}", str(path))]) from None
    tree = parse_tree(text, str(path))
    try:
        return _Cases.model_validate(to_plain(tree))
    except ValidationError as exc:
        locator = Locator(tree, str(path), text)
        problems = []
        for e in exc.errors():
            loc = [p for p in e["loc"] if isinstance(p, str | int)]
            msg = str(e["msg"]).removeprefix("Value error, ")
            problems.append(locator.problem(f"{'.'.join(map(str, loc)) or 'cases'}: {msg[:1].lower()}{msg[1:]}", loc))
        raise PolicyError(problems) from None


@policy_group.command("test")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("cases_file", metavar="CASES", type=click.Path(dir_okay=False, path_type=Path))
@friendly
def test(file: Path, cases_file: Path) -> None:
    """Decide every case in CASES with the policy FILE; exit 1 if any decision differs.

    CASES is YAML or JSON: `cases: [{name, tool, args, facts, expect, rules}]`, where `expect`
    is allow, block or require_approval, `rules` (optional) the rule ids expected to decide,
    and facts that a case does not give are 0.
    """
    policy = load_policy(file)
    cases = _load_cases(cases_file).cases
    rows, failed = [], 0
    for i, case in enumerate(cases, 1):
        plan = policy.plan(case.tool)
        facts = {spec.name: 0 for spec in plan.facts} | dict(case.facts)
        decision = decide_admitted(policy, case.tool, to_plain(case.args), facts)
        ok = decision.effect is case.expect
        if case.rules is not None:
            ok = ok and sorted(decision.rule_ids) == sorted(case.rules)
        failed += not ok
        got = decision.effect.value + (f" {list(decision.rule_ids)}" if decision.rule_ids else "")
        want = case.expect.value + (f" {case.rules}" if case.rules is not None else "")
        rows.append(
            ["PASS" if ok else "FAIL", case.name or f"case {i}", f"{case.tool}({compact_json(case.args)})", want, got]
        )
    click.echo(table(["result", "case", "call", "expected", "decided"], rows))
    passed = len(cases) - failed
    click.echo(f"\n{passed} of {len(cases)} cases passed, {failed} failed")
    if failed:
        raise SystemExit(1)
