"""`clearance db backup`: a consistent copy of a SQLite store while another process appends to it,
verified, owner-only, never over an existing file, never migrating an older store; PostgreSQL is
sent to pg_dump. The real command, a real writer process, real files."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clearance._store import HEAD, Database
from clearance._store import _events as events

from ..conftest import REPO, run_cli
from ..store._migrate import migrate

WRITER = textwrap.dedent(
    """
    import sys
    from clearance._store import Database
    from clearance._store import _events as events

    db = Database(sys.argv[1])
    n = 0
    while True:  # until killed: batches of tool calls with hostile text, as fast as it can
        batch = [
            events.make_event("tool_call.decided", 1_790_000_000_000_000 + n + i,
                              {"agent": "a", "environment": "test", "tool": "t", "reason": f"\\u202e\\x00{n + i}"})
            for i in range(20)
        ]
        with db.write() as cur:
            events.append(db, cur, batch)
        n += 20
        if n == 200:
            print("200", flush=True)
    """
)


def _rows(path: Path, upto: int | None = None) -> list[tuple[object, ...]]:
    db = Database(str(path), create=False)
    try:
        with db.read() as cur:
            cur.execute("SELECT seq, id, body, hash FROM events ORDER BY seq")
            rows = [tuple(r) for r in cur.fetchall()]
    finally:
        db.close()
    return rows if upto is None else [r for r in rows if int(str(r[0])) <= upto]


def test_a_backup_taken_while_another_process_writes_is_a_verified_prefix(tmp_path: Path) -> None:
    source = tmp_path / "live.db"
    Database(str(source)).close()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(source)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "200"  # it is writing
        copied = run_cli("db", "backup", str(tmp_path / "copy.db"), db=source, check=True)
    finally:
        writer.kill()
        writer.wait()
        if writer.stdout is not None:
            writer.stdout.close()
    lines = copied.stdout.splitlines()
    assert lines[0].startswith(f"copied {source} to {tmp_path / 'copy.db'} (") and lines[0].endswith(f"schema {HEAD})")
    assert lines[1].startswith("ok: ") and " records verify; head is record " in lines[1]
    head = int(lines[1].split("head is record ")[1].split(",")[0])
    assert head >= 200 and head % 20 == 0  # whole write transactions only
    kept = _rows(tmp_path / "copy.db")
    assert kept == _rows(source, upto=head)  # exactly the source's first records, nothing half-written
    assert len(_rows(source)) >= len(kept)
    assert (tmp_path / "copy.db").stat().st_mode & 0o777 == 0o600  # it holds every call's arguments
    assert not list(tmp_path.glob(".copy.db.partial*"))


def test_it_never_overwrites_and_leaves_nothing_behind_when_it_cannot(tmp_path: Path) -> None:
    source = tmp_path / "s.db"
    Database(str(source)).close()
    target = tmp_path / "old-backup.db"
    target.write_bytes(b"an earlier backup")
    refused = run_cli("db", "backup", str(target), db=source)
    assert refused.returncode == 1
    assert "exists: a backup never overwrites a file" in refused.stderr
    assert target.read_bytes() == b"an earlier backup"
    missing = run_cli("db", "backup", str(tmp_path / "no-such-dir" / "b.db"), db=source)
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    absent = run_cli("db", "backup", str(tmp_path / "b.db"), db=tmp_path / "nothing.db")
    assert absent.returncode == 1 and "no SQLite store at" in absent.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old-backup.db", "s.db"]


def test_an_older_store_is_copied_as_it_is_not_migrated(tmp_path: Path) -> None:
    """A backup is what one takes before an upgrade: neither the store nor the copy is migrated."""
    source = tmp_path / "old.db"
    migrate(f"sqlite:///{source}", "0019")
    done = run_cli("db", "backup", str(tmp_path / "copy.db"), db=source, check=True)
    assert f"not verified: the copy is at schema 0019, this version's is {HEAD}" in done.stdout
    for path in (source, tmp_path / "copy.db"):
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0019",)


def test_a_broken_chain_is_reported_on_the_copy(tmp_path: Path) -> None:
    source = tmp_path / "s.db"
    db = Database(str(source))
    try:
        with db.write() as cur:
            events.append(
                db,
                cur,
                [events.make_event("tool_call.decided", n, {"agent": "a", "environment": "t"}) for n in (1, 2, 3)],
            )
            cur.execute("UPDATE events SET body = replace(body, '\"a\"', '\"b\"') WHERE seq = 2")
    finally:
        db.close()
    done = run_cli("db", "backup", str(tmp_path / "copy.db"), db=source)
    assert done.returncode == 1
    assert "BROKEN: the copy's record 2" in done.stderr and "run clearance audit verify on it" in done.stderr
    assert (tmp_path / "copy.db").exists()  # the copy is the store as it is: kept


@pytest.mark.postgres
def test_postgresql_is_sent_to_pg_dump(pg_url: str, tmp_path: Path) -> None:
    done = run_cli("db", "backup", str(tmp_path / "copy.db"), db=pg_url)
    assert done.returncode == 1
    assert "back up PostgreSQL with pg_dump" in done.stderr
    assert not (tmp_path / "copy.db").exists()


def test_a_backup_killed_midway_is_named_by_the_next_and_the_signing_key_is_found_as_verify_finds_it(
    tmp_path: Path,
) -> None:
    source = tmp_path / "s.db"
    db = Database(str(source))
    try:
        with db.write() as cur:
            events.append(db, cur, [events.make_event("tool_call.decided", 1, {"agent": "a", "environment": "t"})])
    finally:
        db.close()
    key = tmp_path / "keys" / "rotated.pem"  # not beside the store: found through CLEARANCE_SIGNING_KEY
    run_cli("audit", "checkpoint", "--key", str(key), db=source, check=True)
    (tmp_path / ".copy.db.partial").write_bytes(b"half a copy")  # what a kill -9 leaves
    stuck = run_cli("db", "backup", str(tmp_path / "copy.db"), db=source)
    assert stuck.returncode == 1 and ".copy.db.partial exists: another backup to copy.db is running" in stuck.stderr
    assert not (tmp_path / "copy.db").exists()
    (tmp_path / ".copy.db.partial").unlink()
    done = run_cli("db", "backup", str(tmp_path / "copy.db"), db=source, env={"CLEARANCE_SIGNING_KEY": str(key)})
    assert done.returncode == 0, done.stderr
    assert "trusting checkpoints of the signing key ed25519:" in done.stdout and "rotated.pem" in done.stdout
    assert not list(tmp_path.glob(".copy.db.partial*"))
