from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

import clearance
from clearance._clock import ManualClock
from clearance._guard._governor import Governor
from clearance.cli import main

from ..conftest import CLI, REFUND_POLICY, REPO, run_cli
from ..server.conftest import _free_port, wait_ready

HOSTILE = "\x1b[2J<script>alert(1)</script>\nFAKE LINE\u202e"


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def no_traceback(*outputs: str) -> None:
    for out in outputs:
        assert "Traceback" not in out


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(REFUND_POLICY)
    return path


def test_policy_check_ok_and_bad(policy_file: Path, tmp_path: Path) -> None:
    code, out, _ = cli("policy", "check", str(policy_file))
    assert code == 0 and out.startswith(f"ok: {policy_file} is valid (rev_") and "3 tools, 3 rules" in out
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\ntools:\n  t:\n    rules:\n      - {id: r, when: 'args.x >', effect: nope}\n")
    code, out, err = cli("policy", "check", str(bad))
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"error: {bad}:5:43: rule 'r': 'effect' should be 'allow', 'require_approval' or 'block', not the text 'nope'"
    ]
    code, _, err = cli("policy", "check", str(tmp_path / "missing.yaml"))
    assert code == 1 and "cannot read the policy file" in err
    no_traceback(out, err)


def test_policy_test_reports_each_case_and_fails_on_a_mismatch(policy_file: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.yaml"
    cases.write_text("""
cases:
  - {name: small refund, tool: issue_refund, args: {order_id: A, amount: 50}, expect: allow}
  - name: big refund
    tool: issue_refund
    args: {order_id: A, amount: 500}
    expect: require_approval
    rules: [refund-needs-approval]
  - {name: over the cap, tool: issue_refund, args: {amount: 100}, facts: {sum_24h_amount: 950}, expect: block}
  - {name: outside mail, tool: send_email, args: {to: "Eve <eve@evil.com>"}, expect: block}
""")
    code, out, _ = cli("policy", "test", str(policy_file), str(cases))
    assert code == 0 and out.count("PASS") == 4 and "4 of 4 cases passed, 0 failed" in out
    cases.write_text("cases:\n  - {name: wrong, tool: db.drop, args: {}, expect: allow}\n")
    code, out, _ = cli("policy", "test", str(policy_file), str(cases))
    assert code == 1 and "FAIL" in out and "0 of 1 cases passed, 1 failed" in out
    cases.write_text("cases:\n  - {tool: t, expect: maybe}\n")
    code, _, err = cli("policy", "test", str(policy_file), str(cases))
    assert code == 1 and err.startswith(f"error: {cases}:2:") and "expect" in err
    no_traceback(err)


@pytest.fixture
def pending(configure: Callable[..., Governor]) -> tuple[Governor, str]:
    """A governor with one pending approval whose arguments are hostile text."""
    gov = configure()
    ticket = gov.begin("issue_refund", {"order_id": HOSTILE, "amount": 900}, "s1")
    assert ticket.approval_id and ticket.waiter
    ticket.waiter.close()
    return gov, ticket.approval_id


def test_approvals_list_is_safe_to_print(pending: tuple[Governor, str], db_path: Path) -> None:
    _, approval_id = pending
    code, out, _ = cli("approvals", "list", "--database", str(db_path))
    assert code == 0 and approval_id in out
    assert "\x1b" not in out and "\u202e" not in out and "\\u001b[2J<script>" in out
    assert len(out.strip().splitlines()) == 2  # header + one row: the newline did not forge a line
    code, out, _ = cli("approvals", "list", "--json", "--database", str(db_path))
    row = json.loads(out)
    assert row["id"] == approval_id and row["args"]["order_id"] == HOSTILE and "\x1b" not in out


def test_approve_deny_and_decide_once(pending: tuple[Governor, str], db_path: Path) -> None:
    _, approval_id = pending
    code, out, _ = cli("approve", approval_id, "--by", "alice", "--note", "ok", "--database", str(db_path))
    assert code == 0 and out.startswith(f"approved {approval_id}: issue_refund(") and "by alice" in out
    code, out, err = cli("approvals", "deny", approval_id, "--by", "bob", "--database", str(db_path))
    assert code == 1 and err.strip() == f"error: approval {approval_id} is already approved by alice"
    code, _, err = cli("deny", "apr_nope", "--by", "bob", "--database", str(db_path))
    assert code == 1 and err.strip() == "error: no approval has the id 'apr_nope'"
    code, out, _ = cli("approvals", "list", "--all", "--database", str(db_path))
    assert "approved" in out and "alice" in out


def test_decider_defaults_to_clearance_user(
    pending: tuple[Governor, str], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, approval_id = pending
    monkeypatch.setenv("CLEARANCE_USER", "carol")
    monkeypatch.setenv("CLEARANCE_DATABASE_URL", str(db_path))
    code, out, _ = cli("deny", approval_id, "--note", "no")
    assert code == 0 and "by carol" in out


def test_expired_approvals_are_swept_by_list(
    clock: ManualClock, configure: Callable[..., Governor], db_path: Path
) -> None:
    gov = configure(REFUND_POLICY.replace("approval: {timeout: 30m}", "approval: {timeout: 1s}"))
    ticket = gov.begin("issue_refund", {"order_id": "A", "amount": 900}, "s1")
    assert ticket.waiter
    ticket.waiter.close()
    clock.advance(1.1)
    code, out, _ = cli("approvals", "list", "--database", str(db_path))
    assert code == 0 and out.strip() == "no pending approvals"
    code, _, err = cli("approve", ticket.approval_id or "", "--by", "a", "--database", str(db_path))
    assert code == 1 and "is already expired by system" in err


def test_audit_tail_show_export_and_verify(pending: tuple[Governor, str], db_path: Path, tmp_path: Path) -> None:
    gov, approval_id = pending
    clearance.record_usage("gpt-4o", 100, 10, provider="openai")
    code, out, _ = cli("audit", "tail", "-n", "3", "--database", str(db_path))
    lines = out.strip().splitlines()
    assert code == 0 and len(lines) == 3 and "llm.call" in lines[-1] and "\x1b" not in out
    code, out, _ = cli("audit", "tail", "--kind", "approval.requested", "--database", str(db_path))
    assert approval_id in out and len(out.strip().splitlines()) == 1

    code, out, _ = cli("audit", "show", approval_id, "--database", str(db_path))
    assert code == 0 and out.count("# record ") == 2 and '"kind": "approval.requested"' in out and "\x1b" not in out
    code, _, err = cli("audit", "show", "evt_nope", "--database", str(db_path))
    assert code == 1 and "no event, call or approval has the id" in err

    code, out, _ = cli("audit", "export", "--format", "jsonl", "--tool", "issue_refund", "--database", str(db_path))
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["kind"] for r in rows] == ["tool_call.decided", "approval.requested"]
    assert rows[0]["args"]["order_id"] == HOSTILE and rows[0]["seq"] > 0 and len(rows[0]["hash"]) == 64

    target = tmp_path / "out.csv"
    code, _, err = cli("audit", "export", "--format", "csv", "-o", str(target), "--database", str(db_path))
    assert code == 0 and "wrote 4 events" in err
    parsed = list(csv.DictReader(io.StringIO(target.read_text())))
    assert len(parsed) == 4 and parsed[1]["tool"] == "issue_refund"

    code, out, _ = cli("audit", "verify", "--database", str(db_path))
    assert code == 0 and out.startswith("ok: 4 records verified")
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE events SET body = replace(body, '900', '90') WHERE seq = 2")
    code, out, err = cli("audit", "verify", "--database", str(db_path))
    assert code == 1 and err.startswith("BROKEN: record 2: its content does not match its hash")


def test_csv_export_neutralises_formulas(configure: Callable[..., Governor], db_path: Path, tmp_path: Path) -> None:
    gov = configure()
    gov.begin("send_email", {"to": "a@acme.com", "subject": '=HYPERLINK("http://evil")'}, "=cmd|' /C calc'!A0")
    code, out, _ = cli("audit", "export", "--format", "csv", "--kind", "tool_call.decided", "--database", str(db_path))
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert row["session"] == "'=cmd|' /C calc'!A0"
    assert json.loads(row["args"])["subject"].startswith("=HYPERLINK")  # inside JSON, not a cell start


def test_export_filters_by_time(pending: tuple[Governor, str], db_path: Path) -> None:
    code, out, _ = cli("audit", "export", "--since", "2999-01-01", "--database", str(db_path))
    assert code == 0 and out == ""
    code, _, err = cli("audit", "export", "--since", "yesterday", "--database", str(db_path))
    assert code == 2 and "'yesterday' is not an ISO date" in err


def test_usage_groups_and_flags_unpriced(configure: Callable[..., Governor], db_path: Path) -> None:
    configure()
    with clearance.session("s1"):
        clearance.record_usage("gpt-4o", 1000, 500, provider="openai")
        clearance.record_usage("mystery-model", 10, 10)
    code, out, _ = cli("usage", "--database", str(db_path))
    assert code == 0
    assert re.search(r"gpt-4o\s+1\s+1000\s+0\s+500\s+0\s+\$0\.007500", out)
    assert re.search(r"mystery-model\s+1\s+10\s+0\s+10\s+0\s+unpriced", out)
    assert "total $0.007500 (+ 1 unpriced calls, cost unknown)" in out
    code, out, _ = cli("usage", "--by", "session", "--database", str(db_path))
    assert "s1" in out and "$0.007500 + 1 unpriced" in out
    code, out, _ = cli("usage", "--by", "day", "--agent", "nobody", "--database", str(db_path))
    assert out.strip() == "no LLM usage recorded"


def test_store_commands_need_an_existing_database(tmp_path: Path) -> None:
    for args in (["approvals", "list"], ["audit", "tail"], ["audit", "verify"], ["usage"]):
        code, out, err = cli(*args, "--database", str(tmp_path / "none.db"))
        assert code == 1 and err.startswith("error: no audit database at ") and not (tmp_path / "none.db").exists()


def test_the_real_command_reports_errors_in_one_line(tmp_path: Path) -> None:
    result = run_cli("approve", "apr_x", "--by", "a", db=tmp_path / "none.db")
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr


def test_demo_seeds_a_realistic_history_and_serves_it(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    port = _free_port()
    demo = subprocess.Popen(
        [*CLI, "demo", "--database", str(db), "--port", str(port), "--password", "demo-password-1", "--no-agents"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        cwd=tmp_path,
    )
    try:
        assert demo.stdout is not None
        lines = [demo.stdout.readline() for _ in range(6)]
        assert f"Dashboard: http://127.0.0.1:{port}/\n" in lines and "Sign in as: demo / demo-password-1\n" in lines
        base = f"http://127.0.0.1:{port}"
        wait_ready(base, demo, lambda: "the demo stopped")
        with httpx.Client(base_url=base) as web:
            assert web.post("/v1/login", json={"username": "demo", "password": "demo-password-1"}).status_code == 200
            sessions = web.get("/v1/sessions").json()
            assert len(sessions) == 10 and {s["agent"] for s in sessions} == {
                "support-bot",
                "billing-bot",
                "outreach-bot",
            }
            decided = web.get("/v1/events", params={"kind": "approval.decided"}).json()["events"]
            assert {e["decision"] for e in decided} == {"approved", "denied"}
            assert any(e.get("edited_args", {}).get("amount") == 450.0 for e in decided)  # an approver's edit
            assert {e["by"] for e in decided} == {"user:dana", "user:sam"}
            granted = [e for e in decided if e.get("grant_id")]  # a lead granted a session's next refunds
            assert len(granted) == 1 and "passed without waiting" in "".join(lines)
            used = web.get("/v1/events", params={"kind": "tool_call.decided", "tool": "issue_refund"}).json()["events"]
            assert sum(1 for e in used if e.get("grant_id") == granted[0]["grant_id"]) == 2
            blocked = web.get("/v1/events", params={"decision": "block"}).json()["events"]
            assert {e["tool"] for e in blocked} >= {"db.drop_table", "send_email", "db.delete_rows"}
            models = {u["key"]: u for u in web.get("/v1/usage", params={"by": "model"}).json()}
            assert models["acme-llm-large"]["unpriced_calls"] == 2 and float(models["gpt-4o-mini"]["cost_usd"]) > 0
            assert web.get("/v1/policies/assignments").json()[0]["scope"] == "default"
            assert web.get("/v1/budgets").json()  # the session budget, with what each session spent
    finally:
        demo.send_signal(signal.SIGINT)
        demo.communicate(timeout=30)
    assert demo.returncode == 0
    assert run_cli("audit", "verify", db=db, check=True).stdout.startswith("ok: ")
