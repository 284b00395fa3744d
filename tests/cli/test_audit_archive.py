"""`clearance audit archive` and `audit verify --archive` (issue 18), as a user runs them.

A real `clearance` process is killed with SIGKILL at each point of its work (the test-only
CLEARANCE_TEST_ARCHIVE_CRASH hook): every record is then still in the database or in a
verified segment, and running the command again finishes the work.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from clearance import _archive
from clearance import _signing as signing
from clearance._store import Database
from clearance._store import _archives as archives
from clearance._store import _events as events
from clearance._store import _seals as seals

from ..conftest import run_cli

DAY_US = 86_400 * 10**6
_ALL = f"SELECT {', '.join(events.ROW_COLUMNS)} FROM events ORDER BY seq"

AT, BODY, HASH = (events.ROW_COLUMNS.index(c) for c in ("at_us", "body", "hash"))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return str(tmp_path / "audit.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))


def seed(url: str, old: int = 25, new: int = 5) -> list[tuple[Any, ...]]:
    """`old` records 100 days old and `new` 10 days old; every stored row, oldest first."""
    now = time.time_ns() // 1000
    db = Database(url)
    try:
        with db.write() as cur:
            events.append(
                db,
                cur,
                [
                    events.make_event(
                        "tool_call.decided",
                        now - (100 if i < old else 10) * DAY_US + i,
                        {"agent": "a", "environment": "t", "tool": "t", "decision": "allow", "reason": "r\u202e\x00"},
                    )
                    for i in range(old + new)
                ],
            )
        return rows(db)
    finally:
        db.close()


def rows(db: Database) -> list[tuple[Any, ...]]:
    with db.read() as cur:
        cur.execute(_ALL)
        return [tuple(r) for r in cur.fetchall()]


def test_archive_then_verify_from_the_boundary_and_offline(store: str, tmp_path: Path) -> None:
    original = seed(store)
    arch = tmp_path / "arch"
    out = run_cli("audit", "archive", "--before", "90d", "--segment-records", "10", str(arch), db=store, check=True)
    assert "archived 25 records in 3 segments" in out.stdout
    assert f"starts after record 25, hash {original[24][HASH]}" in out.stdout
    assert "events-000000000001-000000000010.jsonl.gz: records 1 to 10 (10), sha256 " in out.stdout
    verified = run_cli("audit", "verify", db=store, check=True).stdout
    assert f"records up to 25 are archived: the chain here starts at their last hash {original[24][HASH]}" in verified
    assert "ok: 5 records verified; no signed checkpoint" in verified and "head is record 30" in verified
    offline = run_cli("audit", "verify", "--archive", str(arch), check=True).stdout
    assert "ok: 3 segments, 25 records verified from GENESIS" in offline
    assert f"the last archived record is 25, hash {original[24][HASH]}" in offline
    both = run_cli("audit", "verify", "--archive", str(arch), db=store, check=True).stdout
    assert f"they chain to the database: head is record 30, hash {original[-1][HASH]}" in both
    gone = run_cli("audit", "show", original[0][1], db=store)
    assert gone.returncode == 1 and "(records up to 25 are archived: see `clearance audit archive`)" in gone.stderr
    again = run_cli("audit", "archive", "--before", "90d", str(arch), db=store, check=True).stdout
    assert "nothing to archive before" in again
    db = Database(store)
    with db.write() as cur:  # as a store archived before migration 0021 (archived_ids) would be
        cur.execute("DELETE FROM archived_ids WHERE seq > 10")
        cur.execute("UPDATE archives SET ids_listed = 0 WHERE first_seq > 10")
    db.close()
    last = "events-000000000021-000000000025"
    (arch / f"{last}.json").rename(tmp_path / "aside.json")
    listed = run_cli("audit", "archive", "--before", "90d", str(arch), db=store, check=True).stdout
    assert "listed the ids of 10 records archived before this version" in listed
    assert f"{last}.jsonl.gz is not in {arch}" in listed and "would append a re-sent copy" in listed
    (tmp_path / "aside.json").rename(arch / f"{last}.json")
    assert "listed the ids of 5 records" in run_cli("audit", "archive", "--before", "90d", str(arch), db=store).stdout
    # Deleting the first record left is found by `verify`; a changed segment by `verify --archive`.
    db = Database(store)
    with db.write() as cur:
        cur.execute("DELETE FROM events WHERE seq = 26")
    db.close()
    broken = run_cli("audit", "verify", db=store)
    assert broken.returncode == 1 and "BROKEN: record 27: records 26 to 26 before it are missing" in broken.stderr
    assert run_cli("audit", "verify", "--archive", str(arch), db=store).returncode == 1
    seg = arch / "events-000000000011-000000000020.jsonl.gz"
    seg.write_bytes(seg.read_bytes()[:-1])
    cut = run_cli("audit", "verify", "--archive", str(arch))
    assert cut.returncode == 1
    assert "BROKEN: events-000000000011-000000000020.jsonl.gz: its SHA-256 or size differs" in cut.stderr


def test_an_absolute_date_and_bad_cuts(tmp_path: Path) -> None:
    store = str(tmp_path / "audit.db")
    original = seed(store, old=3, new=2)
    at = time.strftime("%Y-%m-%d", time.gmtime((original[3][AT] - DAY_US) / 1e6))  # between old and new
    db = Database(store)
    with db.write() as cur:
        cur.execute("INSERT INTO sink_positions (sink, position, updated_at_us) VALUES ('siem', 2, 0)")
    db.close()
    out = run_cli("audit", "archive", "--before", at, str(tmp_path / "a"), db=store, check=True)
    assert "archived 2 records in 1 segments" in out.stdout
    assert "event sink 'siem' has delivered records up to 2 only" in out.stdout
    out = run_cli("audit", "archive", "--before", at, "--past-sinks", str(tmp_path / "a"), db=store, check=True)
    assert "archived 1 records in 1 segments" in out.stdout and "siem" not in out.stdout
    for bad, says in (("soon", "is not an ISO date"), ("2999-01-01", "is in the future"), ("90y", "not an ISO")):
        r = run_cli("audit", "archive", "--before", bad, str(tmp_path / "a"), db=store)
        assert r.returncode == 2 and says in r.stderr, r.stderr
    assert run_cli("audit", "archive", str(tmp_path / "a"), db=store).returncode == 2  # --before is required


@pytest.mark.parametrize("point", ["segment-partial", "segment-written", "segment-removed"])
def test_a_kill_at_any_point_loses_nothing_and_a_rerun_finishes(store: str, tmp_path: Path, point: str) -> None:
    original = seed(store)
    arch = tmp_path / "arch"
    args = ("audit", "archive", "--before", "90d", "--segment-records", "10", str(arch))
    killed = run_cli(*args, db=store, env={_archive.CRASH_ENV: point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    db = Database(store)
    try:
        left = rows(db)
        recorded = archives.recorded(db)
        segments = [
            r for a in recorded for r in _archive.read_segment(arch / a.segment.replace(".jsonl.gz", ".json"))[1]
        ]
        assert segments + left == original  # every record is in the database or in a verified segment
        assert events.verify(db).ok
        assert len(recorded) == (1 if point == "segment-removed" else 0)
        if point == "segment-partial":
            assert [p.name for p in arch.glob(".*.tmp")] == [".events-000000000001-000000000010.jsonl.gz.tmp"]
        if point == "segment-written":  # complete on disk, its records not yet deleted
            assert _archive.check(arch).ok and not _archive.check(arch, db).ok
    finally:
        db.close()
    # Run again (with another segment size): it finishes, and what the first run left is gone.
    run_cli(*args[:-2], "7", str(arch), db=store, check=True)
    assert run_cli("audit", "verify", "--archive", str(arch), db=store, check=True).returncode == 0
    db = Database(store)
    try:
        assert rows(db) == original[25:]
        archived = [
            r
            for a in archives.recorded(db)
            for r in _archive.read_segment(arch / a.segment.replace(".jsonl.gz", ".json"))[1]
        ]
        assert archived == original[:25]
    finally:
        db.close()
    assert not list(arch.glob(".*.tmp"))
    names = sorted(p.name for p in arch.glob("events-*.json"))
    first = ["events-000000000001-000000000010.json"] if point == "segment-removed" else []
    assert names[: len(first)] == first and len(names) == len(set(names))
    manifests = [json.loads((arch / n).read_text()) for n in names]
    assert sum(m["records"] for m in manifests) == 25


def _sign(url: str, key: signing.SigningKey, at_us: int) -> None:
    db = Database(url)
    try:
        assert seals.sign(db, key, now_us=at_us) is not None
    finally:
        db.close()


def test_verify_archive_trusts_the_signing_key_file_as_verify_on_a_store_does(store: str, tmp_path: Path) -> None:
    """Archived checkpoints are checked against the key file: one by another key counts only when a
    checkpoint of the key file's key follows it, in the segments or in the database after them."""
    mine, forger = tmp_path / "mine.pem", tmp_path / "forger.pem"
    key, other = signing.load_or_create(mine), signing.load_or_create(forger)
    old = time.time_ns() // 1000 - 100 * DAY_US
    seed(store, old=5, new=0)
    _sign(store, key, old)
    seed(store, old=2, new=0)
    _sign(store, other, old)  # the chain introduces the other key itself
    seed(store, old=1, new=0)
    _sign(store, other, old)  # the newest checkpoint's records stay in the database (`audit archive`)
    seed(store, old=0, new=3)
    arch = tmp_path / "arch"
    run_cli("audit", "archive", "--before", "90d", str(arch), db=store, check=True)

    refused = run_cli("audit", "verify", "--archive", str(arch), "--key", str(mine))
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert f"signed by key {other.id}, which is not trusted" in refused.stderr
    assert f"trusting checkpoints of the signing key {key.id} ({mine})" in refused.stderr
    theirs = run_cli("audit", "verify", "--archive", str(arch), "--key", str(forger), check=True).stdout
    assert "; 2 signed checkpoints verify" in theirs and f"signing key {other.id} ({forger})" in theirs
    strict = run_cli("audit", "verify", "--archive", str(arch), "--public-key", str(mine))
    assert strict.returncode == 1 and "it is not one of the public keys given" in strict.stderr
    alone = run_cli("audit", "verify", "--archive", str(arch), check=True)  # no key file where the default is
    assert f"no signing key file at {tmp_path / '.clearance' / 'signing-key.pem'}" in alone.stdout
    assert "only shown to be self-consistent" in alone.stdout

    _sign(store, key, time.time_ns() // 1000)  # the key file's key signs after them, in the database
    both = run_cli("audit", "verify", "--archive", str(arch), "--key", str(mine), db=store, check=True).stdout
    assert "; 4 signed checkpoints verify" in both and "they chain to the database" in both
    seed(store, old=0, new=1)
    _sign(store, other, time.time_ns() // 1000)  # and the other key again, with none of the key file's after it
    after = run_cli("audit", "verify", "--archive", str(arch), "--key", str(mine), db=store)
    assert after.returncode == 1 and f"signed by key {other.id}, which is not trusted" in after.stderr


def test_verify_archive_with_no_checkpoint_warns_and_with_public_key_fails(tmp_path: Path) -> None:
    store = str(tmp_path / "audit.db")
    seed(store, old=5, new=1)
    arch = tmp_path / "arch"
    run_cli("audit", "archive", "--before", "90d", str(arch), db=store, check=True)
    mine = tmp_path / "mine.pem"
    signing.load_or_create(mine)
    looked = run_cli("audit", "verify", "--archive", str(arch), "--key", str(mine), check=True)
    assert "; no signed checkpoint" in looked.stdout
    assert "WARNING: no checkpoint is in the archive: nothing here is signed" in looked.stderr
    strict = run_cli("audit", "verify", "--archive", str(arch), "--public-key", str(mine))
    assert strict.returncode == 1 and "no checkpoint signed by the keys given is in the segments" in strict.stderr
