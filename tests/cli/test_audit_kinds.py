"""`audit tail|export --kind` accepts every kind of record the code writes (one list: `_store._kinds`)."""

from __future__ import annotations

import ast
from collections.abc import Callable, Iterator
from pathlib import Path

import click
from click.testing import CliRunner

from clearance import _decisions
from clearance._cli._audit import export, tail
from clearance._guard._governor import Governor
from clearance._store._kinds import KINDS
from clearance.cli import main

from ..conftest import REPO
from ..integrations._shared import LEAD

WRITERS = {"make_event", "_event"}  # the functions whose first argument is the kind of the record they make


def _literals(node: ast.expr, where: str) -> Iterator[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.IfExp):
        yield from _literals(node.body, where)
        yield from _literals(node.orelse, where)
    else:  # a kind made at run time (an f-string, a variable) escapes both mypy and this test
        raise AssertionError(f"{where}: write the record's kind as a literal, not {ast.unparse(node)}")


def written_kinds() -> set[str]:
    """Every kind the source writes: the kind given to an event maker, or a record body's "kind"."""
    found: set[str] = set()
    for path in (REPO / "src" / "clearance").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and node.args:
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name in WRITERS and not (isinstance(node.args[0], ast.Name) and name == "make_event"):
                    found.update(_literals(node.args[0], where))
            elif isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values, strict=True):
                    is_kind = isinstance(key, ast.Constant) and key.value == "kind" and isinstance(value, ast.Constant)
                    if is_kind and "." in str(value.value):  # a record's kind (a grant's is "calls" or "budget")
                        found.add(str(value.value))
    return found


def kind_choices(command: click.Command) -> set[str]:
    [option] = [p for p in command.params if p.name == "kind"]
    assert isinstance(option.type, click.Choice)
    return set(option.type.choices)


def test_every_kind_the_code_writes_is_a_kind_the_cli_accepts() -> None:
    written = written_kinds()
    assert {"tool_call.decided", "approval.executed", "key.created", "ingest.refused"} <= written  # the scan works
    assert written <= set(KINDS)
    assert kind_choices(tail) == kind_choices(export) == set(KINDS)


def test_audit_tail_kind_approval_executed_shows_the_call_that_ran(
    configure: Callable[..., Governor], db_path: Path
) -> None:
    gov = configure()
    ticket = gov.begin("issue_refund", {"order_id": "A-1", "amount": 900}, "s1")
    assert ticket.approval_id and ticket.waiter
    ticket.waiter.close()
    _decisions.decide(gov.db, ticket.approval_id, by=LEAD, approve=True)
    decided, _, _ = gov.approved_call(ticket.approval_id)
    gov.claim(decided)
    gov.finish(decided, error=None, duration_s=0.01, result="refunded")
    result = CliRunner().invoke(main, ["audit", "tail", "--kind", "approval.executed", "--database", str(db_path)])
    assert result.exit_code == 0, result.output
    [line] = result.stdout.splitlines()
    assert "approval.executed" in line and "issue_refund" in line
