"""`clearance db rebuild-usage`: the hourly usage sums, changed by hand, summed again from the
records by the real command, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from clearance._store import Database
from clearance._store import _events as events
from clearance._store import _rollup as rollup

from ..conftest import run_cli

AT = 1_790_000_000_000_000


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "usage.db")
    return str(request.getfixturevalue("pg_url"))


def test_rebuild_usage_sums_the_hours_again_from_the_records(any_store: str) -> None:
    db = Database(any_store)
    try:
        calls = [
            events.make_event(
                "llm.call",
                AT + n,
                {"agent": "refunds", "environment": "test", "model": "gpt\u202e-4o", "cost_nusd": 5, "input_tokens": n},
            )
            for n in range(3)
        ]
        with db.write() as cur:
            events.append(db, cur, calls)
            cur.execute("UPDATE usage_hours SET calls = 99")
        assert rollup.differences(db)[0] == 1
    finally:
        db.close()
    found = run_cli("audit", "verify", db=any_store)
    assert found.returncode == 1
    assert found.stdout.startswith("ok: 3 records verified")  # the records are intact
    assert "USAGE SUMS DIFFER: 1 hourly usage sums" in found.stderr
    assert "agent 'refunds', model 'gpt\\u202e-4o': calls 99 where the records sum to 3" in found.stderr
    assert "\u202e" not in found.stderr  # shown escaped, never as a live override
    assert "`clearance db rebuild-usage` sums them again" in found.stderr
    done = run_cli("db", "rebuild-usage", db=any_store, check=True)
    assert done.stdout.strip() == "ok: the hourly usage sums were rebuilt from the records (1 differed)"
    db = Database(any_store)
    try:
        assert rollup.differences(db) == (0, [])
    finally:
        db.close()
    again = run_cli("db", "rebuild-usage", db=any_store, check=True)
    assert "(0 differed)" in again.stdout
    assert run_cli("audit", "verify", db=any_store, check=True).stderr == ""
