"""The CLI reads every record: `clearance audit` on records no encoder returns whole.

Records an older version wrote (or that were put in the file by hand): nested 1,000 deep, not
JSON, lone surrogate escapes, numbers beyond a double. Every command answers; none crashes.
"""

from __future__ import annotations

import json
from pathlib import Path

from clearance._store import Database

from ..conftest import run_cli
from ..server.test_hostile_records import HOSTILE, _seed


def test_every_audit_command_reads_every_record(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    db = Database(str(path))
    try:
        made = _seed(db)
    finally:
        db.close()
    exported = run_cli("audit", "export", "--format", "jsonl", db=path)
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in exported.stdout.splitlines()]
    decided = [e for e in lines if e.get("kind") == "tool_call.decided" or "$unreadable" in e]
    assert len(decided) == len(HOSTILE)
    assert any("$degraded" in e for e in lines)
    tail = run_cli("audit", "tail", "-n", "50", db=path)
    assert tail.returncode == 0, tail.stderr
    for name, event_id in made["events"].items():
        shown = run_cli("audit", "show", event_id, db=path)
        assert shown.returncode == 0, (name, shown.stderr)
    verified = run_cli("audit", "verify", db=path)
    assert "Traceback" not in verified.stderr
    assert "is not valid JSON" in verified.stdout + verified.stderr  # the hand-made record, named
