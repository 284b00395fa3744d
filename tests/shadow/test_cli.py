"""`clearance policy shadow|shadow-report|promote`, end to end on the embedded store."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable
from pathlib import Path

import clearance
from clearance._guard._governor import Governor
from clearance._store import Database
from clearance._store import _policies as policies
from clearance._store import _shadow as shadows
from clearance.policy import parse_policy

from ..conftest import run_cli
from ._policies import ENFORCED, SHADOW, UNCOMPILABLE
from .test_report import HOSTILE


def _calls(configure: Callable[..., Governor], tmp_path: Path) -> dict[float, str]:
    """An embedded agent's calls with the shadow beside its policy: call ids by amount."""
    (tmp_path / "shadow.yaml").write_text(textwrap.dedent(SHADOW))
    gov = configure(ENFORCED, shadow_policy=tmp_path / "shadow.yaml")

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> str:
        return "ok"

    with clearance.session("ses-1"):
        issue_refund("A1", 10)
        issue_refund(HOSTILE, 150)
        issue_refund("A3", 500)
    clearance.flush()
    ids = {}
    with gov.db.read() as cur:
        cur.execute("SELECT body FROM events WHERE kind = 'tool_call.decided' ORDER BY seq")
        for (body,) in cur.fetchall():
            record = json.loads(body)
            ids[record["args"]["amount"]] = record["call_id"]
    clearance.shutdown()
    return ids


def test_shadow_report_table_and_json(configure: Callable[..., Governor], tmp_path: Path, db_path: Path) -> None:
    ids = _calls(configure, tmp_path)
    shown = run_cli("policy", "shadow-report", "--since", "1h", db=db_path, check=True).stdout
    lines = shown.splitlines()
    assert "3 calls decided in shadow" in lines[0] and "2 decided otherwise than enforced" in lines[0]
    row = next(line for line in lines if line.startswith("refund-over-100"))
    assert row.split()[1:5] == ["allow", "->", "block", "2"] and ids[500] in row and ids[150] in row
    monitor = [line for line in lines if line.startswith(("shadow ", "enforced "))]
    assert [m.split()[:5] for m in monitor] == [
        ["shadow", "shadow-watch", "would", "require_approval", "2"],
        ["enforced", "refund-watch", "would", "block", "1"],
    ]
    # The hostile argument is shown escaped: no control reaches the terminal, no forged line.
    assert "\x1b" not in shown and "\u202e" not in shown
    assert not any(line.startswith('"FAKE') or line.startswith("FAKE") for line in lines)
    assert "\\u001b[2J\\n" in shown
    report = json.loads(run_cli("policy", "shadow-report", "--json", db=db_path, check=True).stdout)
    assert (report["calls"], report["differing"]) == (3, 2)
    example = next(e for e in report["differences"][0]["examples"] if e["call_id"] == ids[150])
    assert example["args"]["order_id"] == HOSTILE  # JSON keeps it whole, escaped as JSON
    empty = run_cli("policy", "shadow-report", "--agent", "nobody", db=db_path, check=True).stdout
    assert empty.startswith("0 calls decided in shadow") and "SHADOW RULE" not in empty


def test_shadow_then_promote_on_the_store(configure: Callable[..., Governor], tmp_path: Path, db_path: Path) -> None:
    configure(ENFORCED)
    clearance.shutdown()
    (tmp_path / "next.yaml").write_text(textwrap.dedent(SHADOW))
    revision = parse_policy(textwrap.dedent(SHADOW)).revision
    out = run_cli("policy", "shadow", "next.yaml", "--environment", "test", "--by", "ann", db=db_path, check=True)
    assert out.stdout.startswith(f"shadowing {revision} (next.yaml) for environment:test")
    db = Database(str(db_path))
    try:
        assert [(s.scope, s.revision_id, s.activated_by) for s in shadows.shadows(db)] == [
            ("environment:test", revision, "ann")
        ]
    finally:
        db.close()
    shown = run_cli("policy", "shadow-report", db=db_path, check=True).stdout
    assert shown.splitlines()[0].startswith(f"shadow {revision} active for environment:test since ")
    out = run_cli("policy", "promote", "--environment", "test", "--by", "lee", db=db_path, check=True)
    assert out.stdout.startswith(f"promoted {revision} (next.yaml): now enforced for environment:test")
    db = Database(str(db_path))
    try:
        assert policies.resolve(db, agent="test-agent", environment="test").id == revision  # type: ignore[union-attr]
        assert shadows.shadows(db) == []
    finally:
        db.close()
    again = run_cli("policy", "promote", "--environment", "test", db=db_path)
    assert again.returncode == 1 and "nothing to promote" in again.stderr


def test_clear_and_what_the_cli_refuses(configure: Callable[..., Governor], tmp_path: Path, db_path: Path) -> None:
    configure(ENFORCED)
    clearance.shutdown()
    db = Database(str(db_path))
    try:
        with db.write() as cur:
            cur.execute(
                "INSERT INTO policy_revisions (id, content_hash, source, text, author, parent, created_at_us, status)"
                " VALUES ('rev_0123456789ab', 'h', 'old.yaml', ?, 'old', NULL, 1, 'valid')",
                (textwrap.dedent(UNCOMPILABLE),),
            )
        shadow = policies.create(db, textwrap.dedent(SHADOW), source="s.yaml", author="t").id
    finally:
        db.close()
    broken = run_cli("policy", "shadow", "rev_0123456789ab", db=db_path)
    assert broken.returncode == 1
    assert broken.stderr.startswith("error: revision rev_0123456789ab does not compile; nothing was activated:")
    assert "error: old.yaml:7:" in broken.stderr
    neither = run_cli("policy", "shadow", db=db_path)
    assert neither.returncode == 2 and "not both" in neither.stderr
    assert run_cli("policy", "shadow", "--clear", "--agent", "a", "--environment", "b", db=db_path).returncode == 2
    assert run_cli("policy", "shadow-report", "--since", "1 year", db=db_path).returncode == 2
    missing = run_cli("policy", "shadow", "no-such-file.yaml", db=db_path)
    assert missing.returncode == 2 and "neither a revision id" in missing.stderr
    run_cli("policy", "shadow", shadow, "--agent", "bot", db=db_path, check=True)
    out = run_cli("policy", "shadow", "--clear", "--agent", "bot", db=db_path, check=True)
    assert out.stdout.strip() == f"cleared the shadow of agent:bot (it was {shadow})"
    twice = run_cli("policy", "shadow", "--clear", "--agent", "bot", db=db_path)
    assert twice.returncode == 1 and "no shadow policy is active for agent:bot" in twice.stderr
