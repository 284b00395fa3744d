"""`clearance approvals approve --grant-*/--extend-*` and `clearance grants list|show|revoke` on the embedded store."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

import clearance
from clearance._clock import ManualClock
from clearance._guard._governor import Governor
from clearance._store import Database
from clearance._store._events import EventFilter, query
from clearance._visible import describe
from clearance.cli import main

from ..conftest import run_cli

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {amount: number, order_id: string}
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        reason: big refund
        approval: {grants: {scopes: [session, agent], max_duration: 8h, max_calls: 20, max_total: {amount: 5000}}}
  send_email:
    rules:
      - {id: mail, effect: require_approval}
budgets:
  session: {max_tokens: 1000, on_exceed: require_approval}
"""
HOSTILE_NOTE = "ok\x1b[2J\u202eFAKE\nLINE"


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def no_hidden(text: str) -> None:
    assert "\x1b" not in text
    assert [f"U+{ord(c):04X}" for c in text if describe(c) is not None and c != "\n"] == []


@pytest.fixture
def gov(configure: Callable[..., Governor]) -> Governor:
    return configure(POLICY, agent="refunds")


def ask(gov: Governor, amount: float = 300, order_id: str = "A-1", session: str = "s1") -> str:
    ticket = gov.begin("issue_refund", {"amount": amount, "order_id": order_id}, session)
    assert ticket.approval_id and ticket.waiter, ticket.decision
    ticket.waiter.close()
    return ticket.approval_id


def decided(gov: Governor, amount: float = 300, order_id: str = "A-1", session: str = "s1") -> str:
    ticket = gov.begin("issue_refund", {"amount": amount, "order_id": order_id}, session)
    if ticket.waiter is not None:
        ticket.waiter.close()
    return str(ticket.decision.effect)


def records(db_path: Path, kind: str) -> list[dict[str, object]]:
    db = Database(str(db_path))
    try:
        return [e.body for e in query(db, EventFilter(kind=kind))]
    finally:
        db.close()


def test_approve_with_a_grant_then_list_show_and_revoke_it(gov: Governor, db_path: Path) -> None:
    approval_id = ask(gov)
    db = ["--database", str(db_path)]
    code, out, err = cli("approvals", "list", "--json", *db)
    assert code == 0 and json.loads(out)["grant_limits"]["max_total"] == {"amount": "5000"}
    code, out, err = cli(
        "approvals",
        "approve",
        approval_id,
        "--by",
        "lena",
        "--note",
        HOSTILE_NOTE,
        "--grant-scope",
        "session",
        "--grant-for",
        "1h",
        "--grant-max-calls",
        "2",
        "--grant-max-total",
        "amount=700",
        "--grant-same",
        "order_id",
        "--grant-constraint",
        'amount={"maximum": 400}',
        *db,
    )
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"approved {approval_id}: issue_refund(")
    granted = out.splitlines()[1]
    assert granted.startswith("granted grt_") and "calls of session s1 until" in granted
    assert "at most 2 calls" in granted and "amount totalling at most 700" in granted
    grant_id = granted.split()[1].rstrip(":")

    assert decided(gov) == "allow"
    assert decided(gov, order_id="B-2") == "require_approval"  # not the approved order
    assert decided(gov, amount=450) == "require_approval"  # above the grant's maximum

    code, out, _ = cli("grants", "list", *db)
    assert code == 0 and grant_id in out and "live" in out and "1/2 calls, 300/700 amount" in out
    code, out, _ = cli("grants", "list", "--json", "--agent", "refunds", *db)
    listed = json.loads(out)
    assert (
        listed["id"] == grant_id
        and listed["calls_used"] == 1
        and listed["constraints"]["order_id"] == {"enum": ["A-1"], "required": True}
    )
    assert cli("grants", "list", "--agent", "mailer", *db)[1].strip() == "no grants"
    code, out, _ = cli("grants", "show", grant_id, *db)
    assert code == 0 and f"approval         {approval_id}" in out and "granted by       lena" in out
    assert "note             ok⟨U+001B ESC⟩[2J⟨U+202E RLO⟩FAKE\\nLINE" in out
    no_hidden(out)

    code, out, _ = cli("grants", "revoke", grant_id, "--reason", "order closed", "--by", "omar", *db)
    assert code == 0 and out.startswith(f"revoked {grant_id} by omar at ")
    assert decided(gov) == "require_approval"
    code, _, err = cli("grants", "revoke", grant_id, "--by", "omar", *db)
    assert code == 1 and err.strip() == f"error: grant {grant_id} has ended already (revoked)"
    assert cli("grants", "list", "--live", *db)[1].strip() == "no live grants"
    code, out, _ = cli("grants", "show", grant_id, *db)
    assert "revoked" in out and "reason           order closed" in out
    code, _, err = cli("grants", "show", "grt_nope", *db)
    assert code == 1 and err.strip() == "error: no grant has the id 'grt_nope'"
    assert [e["grant_id"] for e in records(db_path, "grant.revoked")] == [grant_id]


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (
            ["--grant-scope", "session", "--grant-for", "9h", "--grant-max-calls", "50"],
            ["duration: 32400s", "max_calls: 50"],
        ),
        (["--grant-scope", "session", "--grant-for", "1h", "--grant-max-total", "amount=NaN"], ["finite"]),
        (["--grant-scope", "session", "--grant-for", "1h", "--grant-same", "colour"], ["no argument 'colour'"]),
        (["--grant-scope", "session", "--grant-for", "1h", "--extend-usd", "1"], ["not both"]),
        (["--extend-tokens", "100"], ["only an approval an exhausted budget asked for"]),
    ],
)
def test_a_refused_grant_prints_each_problem_and_decides_nothing(
    gov: Governor, db_path: Path, flags: list[str], says: list[str]
) -> None:
    approval_id = ask(gov)
    code, out, err = cli("approve", approval_id, "--by", "lena", *flags, "--database", str(db_path))
    assert code == 2 and out == "", err
    lines = err.splitlines()
    assert "the grant was refused:" in err
    for said in says:
        assert any(line.startswith("  ") and said in line for line in lines), err
    code, out, _ = cli("approvals", "list", "--database", str(db_path))
    assert approval_id in out and "pending" in out
    assert len(records(db_path, "approval.refused")) == 1
    assert cli("grants", "list", "--database", str(db_path))[1].strip() == "no grants"


@pytest.mark.parametrize(
    ("flags", "says"),
    [
        (["--grant-scope", "session"], "needs both --grant-scope and --grant-for"),
        (["--grant-max-calls", "3"], "needs --grant-scope and --grant-for"),
        (["--grant-scope", "forever", "--grant-for", "1h"], "'forever' is not one of"),
        (["--grant-scope", "session", "--grant-for", "1h", "--grant-max-total", "500"], "write NAME=AMOUNT"),
        (["--grant-scope", "session", "--grant-for", "1h", "--grant-constraint", "amount"], "write NAME=JSON"),
        (
            ["--grant-scope", "session", "--grant-for", "1h", "--grant-constraint", 'amount={"maximum": 1e999}'],
            "amount:",
        ),
        (["--grant-scope", "session", "--grant-for", "1h", "--grant-constraint", "amount={" * 5000], "amount:"),
        (["--grant-scope", "session", "--grant-for", "1h", "--grant-constraint", 'amount={"colour": 1}'], "amount:"),
    ],
)
def test_malformed_grant_options_are_usage_errors(gov: Governor, db_path: Path, flags: list[str], says: str) -> None:
    approval_id = ask(gov)
    code, _, err = cli("approve", approval_id, "--by", "lena", *flags, "--database", str(db_path))
    assert code == 2 and says in err, err
    assert "Traceback" not in err
    assert cli("approvals", "list", "--database", str(db_path))[1].count("pending") == 1


def test_extending_an_exhausted_budget_lets_the_session_go_on(gov: Governor, db_path: Path) -> None:
    assert decided(gov, amount=5, session="b1") == "allow"
    clearance.record_usage("gpt-4o", 1200, 0, session="b1")
    approval_id = ask(gov, amount=5, session="b1")
    code, out, _ = cli("approvals", "list", "--json", "--database", str(db_path))
    row = json.loads(out)
    assert row["budget"] == "session" and row["grant_limits"] is None
    code, out, err = cli("approve", approval_id, "--by", "lena", "--extend-tokens", "10000", "--database", str(db_path))
    assert code == 0, err
    assert out.splitlines()[1].startswith("extended the budget of session b1 by 10000 tokens (grt_")
    assert decided(gov, amount=5, session="b1") == "allow"
    code, out, _ = cli("grants", "list", "--session", "b1", "--database", str(db_path))
    assert "budget" in out and "10000 tok" in out


def test_grants_list_records_expiries_once(
    clock: ManualClock, configure: Callable[..., Governor], db_path: Path
) -> None:
    gov = configure(POLICY, agent="refunds")
    approval_id = ask(gov)
    db = ["--database", str(db_path)]
    code, _, err = cli("approve", approval_id, "--by", "lena", "--grant-scope", "agent", "--grant-for", "60", *db)
    assert code == 0, err
    assert decided(gov, session="s2") == "allow"
    clock.advance(61)
    assert records(db_path, "grant.expired") == []
    code, out, _ = cli("grants", "list", *db)
    assert code == 0 and "expired" in out
    cli("grants", "list", *db)
    assert len(records(db_path, "grant.expired")) == 1
    assert decided(gov, session="s2") == "require_approval"


def test_the_real_command_grants(gov: Governor, db_path: Path) -> None:
    approval_id = ask(gov)
    result = run_cli(
        "approve", approval_id, "--by", "lena", "--grant-scope", "session", "--grant-for", "30m", db=db_path, check=True
    )
    assert "granted grt_" in result.stdout
    listed = run_cli("grants", "list", "--json", db=db_path, check=True).stdout
    assert json.loads(listed)["status"] == "live"
