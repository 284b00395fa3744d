from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

import clearance
from clearance import StoreError
from clearance._guard._governor import Governor
from clearance._store import HEAD, Database
from clearance._store._events import make_event, verify
from clearance._store._schema import Base

from ..conftest import REPO


def test_head_constant_is_the_chain_head() -> None:
    config = Config()
    config.set_main_option("script_location", str(REPO / "src/clearance/_store/migrations"))
    assert ScriptDirectory.from_config(config).get_heads() == [HEAD]


def _no_drift(url: str) -> None:
    engine = create_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == []


def test_models_match_the_migrations_on_sqlite(db_path: Path) -> None:
    Database(str(db_path)).close()
    _no_drift(f"sqlite:///{db_path}")


@pytest.mark.postgres
def test_migrations_and_the_chain_on_postgresql(pg_url: str) -> None:
    db = Database(pg_url)
    with db.write() as cur:
        from clearance._store._events import append

        append(db, cur, [make_event("llm.call", 1, {"agent": "a", "environment": "t"}) for _ in range(3)])
    assert verify(db).checked == 3
    db.close()
    _no_drift(pg_url)
    Database(pg_url).close()  # already at head: nothing to do


@pytest.mark.postgres
def test_guard_and_approvals_run_on_postgresql(pg_url: str, configure: Callable[..., Governor]) -> None:
    gov = configure(database_url=pg_url)
    from clearance import _decisions

    @clearance.guard(
        on_pending=lambda p: _decisions.decide(
            gov.db, p.approval_id, approve=True, by=_decisions.Decider("lead", trusted=True)
        )
    )
    def issue_refund(order_id: str, amount: float) -> str:
        return "done"

    assert issue_refund("A", 50) == "done"
    assert issue_refund("B", 500) == "done"  # approved
    with pytest.raises(clearance.ToolCallBlocked):
        issue_refund("C", 600)  # daily cap from facts read on PostgreSQL
    assert verify(gov.db).ok


def _tamper(db_path: Path, sql: str) -> None:
    with sqlite3.connect(db_path) as conn:
        conn.execute(sql)


def _seeded(configure: Callable[..., Governor]) -> Governor:
    gov = configure()

    @clearance.guard
    def send_email(to: str) -> None:
        pass

    for _ in range(5):
        send_email("a@acme.com")
    clearance.shutdown()
    return gov


@pytest.mark.parametrize(
    "sql, seq, problem",
    [
        (
            "UPDATE events SET body = replace(body, 'a@acme.com', 'b@acme.com') WHERE seq = 4",
            4,
            "content does not match",
        ),
        ("UPDATE events SET decision = 'block' WHERE seq = 4", 4, "indexed columns disagree"),
        ("DELETE FROM events WHERE seq = 4", 5, "records 4 to 4 before it are missing"),
        ("DELETE FROM events WHERE seq = 1", 2, "records 1 to 1 before it are missing"),
    ],
)
def test_verify_finds_the_first_edited_or_deleted_record(
    configure: Callable[..., Governor], db_path: Path, sql: str, seq: int, problem: str
) -> None:
    _seeded(configure)
    assert verify(Database(str(db_path))).ok
    _tamper(db_path, sql)
    report = verify(Database(str(db_path)))
    assert not report.ok and report.broken_seq == seq and problem in (report.problem or "")


def test_a_rehashed_edit_is_caught_by_the_next_record(configure: Callable[..., Governor], db_path: Path) -> None:
    _seeded(configure)
    from clearance._store._events import chain_hash

    with sqlite3.connect(db_path) as conn:
        prev, body = conn.execute("SELECT prev_hash, body FROM events WHERE seq = 2").fetchone()
        forged = body.replace('"reason":"', '"reason":"forged ')
        assert forged != body
        conn.execute("UPDATE events SET body = ?, hash = ? WHERE seq = 2", (forged, chain_hash(prev, forged)))
    report = verify(Database(str(db_path)))
    assert report.broken_seq == 3 and "does not follow record 2" in (report.problem or "")


def test_rewritten_arguments_are_caught_by_their_own_hash(configure: Callable[..., Governor], db_path: Path) -> None:
    """The record's args_hash (RFC 8785) no longer matches arguments rewritten in place."""
    _seeded(configure)
    from clearance._store._events import chain_hash

    with sqlite3.connect(db_path) as conn:
        prev, body = conn.execute("SELECT prev_hash, body FROM events WHERE seq = 2").fetchone()
        forged = body.replace("a@acme.com", "z@acme.com")
        assert forged != body
        conn.execute("UPDATE events SET body = ?, hash = ? WHERE seq = 2", (forged, chain_hash(prev, forged)))
    report = verify(Database(str(db_path)))
    assert report.broken_seq == 2 and report.problem == "its args_hash does not match the arguments it records"


def test_records_hashed_before_rfc8785_still_verify(db_path: Path) -> None:
    """A decided call written by an earlier version: no args_hash_alg, the hash over orjson's sorted text."""
    from clearance._canonical import canonical_json, sha256_hex
    from clearance._store._events import append, make_event

    db = Database(str(db_path))
    args = {"amount": 850.0, "to": "bob@acme.com"}
    old = {"agent": "a", "environment": "test", "session": "s", "tool": "t", "call_id": "c", "decision": "allow"}
    with db.write() as cur:
        append(
            db,
            cur,
            [make_event("tool_call.decided", 1, {**old, "args": args, "args_hash": sha256_hex(canonical_json(args))})],
        )
    assert verify(db).ok
    with db.write() as cur:
        append(db, cur, [make_event("tool_call.decided", 2, {**old, "args": args, "args_hash": "0" * 64})])
    assert verify(db).broken_seq == 2
    db.close()


WRITER = textwrap.dedent("""
    import sys, clearance
    clearance.configure(policy=sys.argv[1], database_url=sys.argv[2], agent=sys.argv[3])

    @clearance.guard
    def send_email(to: str) -> None:
        pass

    for i in range(int(sys.argv[4])):
        send_email("a@acme.com")
""")


def test_several_processes_write_one_file_and_lose_nothing(tmp_path: Path, db_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\n")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [
        subprocess.Popen([sys.executable, str(script), str(policy), str(db_path), f"agent-{i}", "150"], env=env)
        for i in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    db = Database(str(db_path))
    report = verify(db)
    assert report.ok and report.checked == 4 * (1 + 150 * 2)
    with db.read() as cur:
        cur.execute("SELECT agent, COUNT(*) FROM events WHERE kind = 'tool_call.finished' GROUP BY agent")
        assert dict(cur.fetchall()) == {f"agent-{i}": 150 for i in range(4)}


def test_a_locked_database_fails_the_call_closed(configure: Callable[..., Governor], db_path: Path) -> None:
    configure(busy_timeout=0.3)
    ran = []

    @clearance.guard
    def send_email(to: str) -> None:
        ran.append(to)

    locker = sqlite3.connect(db_path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        with pytest.raises(StoreError, match="stayed locked by another process for 0.3s"):
            send_email("a@acme.com")
        assert time.monotonic() - started >= 0.3
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert ran == []
    send_email("a@acme.com")  # the lock is gone: works again
    assert ran == ["a@acme.com"]


def test_a_briefly_locked_database_waits_and_succeeds(configure: Callable[..., Governor], db_path: Path) -> None:
    configure(busy_timeout=5)

    @clearance.guard
    def send_email(to: str) -> str:
        return "sent"

    locker = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    locker.execute("BEGIN EXCLUSIVE")
    threading.Timer(0.2, lambda: locker.execute("ROLLBACK")).start()
    assert send_email("a@acme.com") == "sent"
    locker.close()


def test_read_only_database_is_refused(
    configure: Callable[..., Governor], db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Database(str(db_path)).close()
    # root bypasses file modes, so simulate what every other user sees
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(StoreError, match="is read-only; the guard must be able to record calls"):
        configure()


def test_missing_directory_is_created(tmp_path: Path, configure: Callable[..., Governor]) -> None:
    target = tmp_path / "deep" / "er" / "audit.db"
    configure(database_url=str(target))
    assert target.exists()


def test_directory_that_cannot_be_created(tmp_path: Path, configure: Callable[..., Governor]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the directory"):
        configure(database_url=str(blocker / "sub" / "audit.db"))


def test_bad_database_urls() -> None:
    with pytest.raises(StoreError, match="unsupported database 'mysql'"):
        Database("mysql://x/y")
    with pytest.raises(StoreError, match="cannot open the audit database"):
        Database("postgresql+psycopg://nobody@127.0.0.1:1/none")


@pytest.mark.postgres
def test_ingest_looks_ids_up_by_index_on_a_table_never_analyzed(pg_url: str) -> None:
    """A fresh store under a burst of ingest has no statistics yet: the planner chose a sequential
    scan of every record for each batch's duplicate check (42 ms a batch at 15,000 records, and
    growing). The check must read the id index, with the session's own setting kept after it."""
    from clearance._store import _events as events

    db = Database(pg_url)
    try:

        def batch(n: int) -> list[dict[str, object]]:
            return [
                {
                    "v": 1,
                    "id": events.new_id("evt"),
                    "kind": "tool_call.finished",
                    "at_us": 1 + i,
                    "agent": "a",
                    "environment": "test",
                    "session": "s",
                    "tool": "t",
                    "call_id": "c",
                    "decision": "ok",
                }
                for i in range(n)
            ]

        for _ in range(10):
            events.ingest(db, batch(500))
        with db.read() as cur:
            cur.execute("SELECT reltuples FROM pg_class WHERE oid = 'events'::regclass")
            assert cur.fetchone()[0] <= 0  # never analyzed: what the planner then guesses is the point
        with db.read() as cur:  # the unique index on the records' ids (its name is the store's own)
            cur.execute(
                "SELECT i.indexrelid::regclass::text FROM pg_index i WHERE i.indrelid = 'events'::regclass"
                " AND i.indisunique AND i.indnatts = 1 AND (SELECT attname FROM pg_attribute WHERE"
                " attrelid = i.indrelid AND attnum = i.indkey[0]) = 'id'"
            )
            id_index = cur.fetchone()[0]
        scans: list[tuple[int, str]] = []

        def then(cur: Any, fresh: list[dict[str, object]]) -> list[events.Event]:
            cur.execute(
                "SELECT pg_stat_get_xact_numscans(%s::regclass), current_setting('enable_seqscan')", (id_index,)
            )
            scans.append(tuple(cur.fetchone()))
            return []

        sent = batch(500)
        assert events.ingest(db, sent, then=then) == (500, 0)
        assert scans[0][0] >= 1  # the duplicate check read the id index (not every record)
        assert scans[0][1] == "on"  # and the session's setting is back for the rest of the transaction
        assert events.ingest(db, sent[:10] + batch(5)) == (5, 10)
    finally:
        db.close()
