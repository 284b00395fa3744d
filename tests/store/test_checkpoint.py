"""WAL checkpoints run on a thread of their own, never lose a commit, and end with the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from clearance._store import Database
from clearance._store import _events as events
from clearance._store._db import BACKSTOP_PAGES, CHECKPOINT_EVERY

from .._wait import until
from ..conftest import REPO


def _commit(db: Database, n: int) -> None:
    for i in range(n):
        e = events.make_event("tool_call.decided", 1_000 + i, {"agent": "a", "environment": "e", "session": f"s{i}"})
        with db.write() as cur:
            events.append(db, cur, [e])


def _checkpointers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "clearance-checkpoint"]


def test_the_wal_is_checkpointed_by_a_thread_of_its_own(db_path: Path) -> None:
    db = Database(str(db_path))
    with db.read() as cur:
        assert cur.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == BACKSTOP_PAGES  # the backstop
    before = _checkpointers()
    _commit(db, CHECKPOINT_EVERY - 1)
    assert _checkpointers() == before  # a short-lived store starts none
    size = db_path.stat().st_size
    _commit(db, 3 * CHECKPOINT_EVERY)
    assert len(_checkpointers()) == len(before) + 1
    # Far below the backstop, only the checkpointer copies pages into the database file.
    until(lambda: db_path.stat().st_size > size, "the WAL checkpointed into the database file")
    db.close()
    assert _checkpointers() == before
    assert not Path(f"{db_path}-wal").exists()  # the last connection to close checkpointed the rest
    again = Database(str(db_path))
    assert events.verify(again).checked == 4 * CHECKPOINT_EVERY - 1
    again.close()


def test_a_checkpointer_that_is_gone_is_started_again(db_path: Path) -> None:
    db = Database(str(db_path))
    _commit(db, CHECKPOINT_EVERY)
    first = db._checkpointer
    assert first is not None
    first.stop()  # as if its thread had died
    _commit(db, CHECKPOINT_EVERY)
    assert db._checkpointer is not first and db._checkpointer is not None and db._checkpointer.alive()
    db.close()
    assert events.verify(Database(str(db_path))).checked == 2 * CHECKPOINT_EVERY


KILLED = """
import os, signal, sys
from clearance._store import Database
from clearance._store import _events as events

db = Database(sys.argv[1])
for i in range(int(sys.argv[2])):
    e = events.make_event("tool_call.decided", i, {"agent": "a", "environment": "e", "session": "s"})
    with db.write() as cur:
        events.append(db, cur, [e])
print("committed", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_every_commit_survives_kill_9_while_checkpoints_run(tmp_path: Path, db_path: Path) -> None:
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    n = 10 * CHECKPOINT_EVERY + 7
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(
        [sys.executable, str(script), str(db_path), str(n)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL and done.stdout == "committed\n", done.stderr
    db = Database(str(db_path))
    report = events.verify(db)
    assert report.ok and report.checked == n
    db.close()
