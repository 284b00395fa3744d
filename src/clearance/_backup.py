"""A consistent copy of a SQLite store while processes use it (`clearance db backup`).

The store runs in WAL mode: copying the file while a process writes can copy a database without
the commits still in its WAL, or half of a checkpoint. SQLite's online backup copies the pages of
one read transaction instead (writers carry on meanwhile). The copy is written beside the target
under another name, flushed to disk, then renamed into place, so a target that exists is always a
whole backup; it is readable by its owner only (it holds every call's arguments).

The source is opened with plain `sqlite3`, not `Database`: opening a store migrates it, and a
backup is what one takes before an upgrade.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreError


@dataclass(frozen=True)
class Backup:
    """What was copied: the schema revision and the chain's last record, as the copy holds them."""

    path: Path
    revision: str | None
    head_seq: int
    head_hash: str | None
    size: int


def backup_sqlite(source: Path, target: Path) -> Backup:
    """Copy the SQLite store at `source` to the new file `target`.

    Raises:
        StoreError: The source is missing or not a SQLite store, the target exists, or the copy fails.
    """
    if not source.is_file():
        raise StoreError(f"no SQLite store at {source}")
    if target.exists():
        raise StoreError(f"{target} exists: a backup never overwrites a file; name a new one")
    if not target.parent.is_dir():
        raise StoreError(f"the directory {target.parent} does not exist")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        os.close(os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))  # owner-only before any page
        src = sqlite3.connect(source, timeout=30)  # read only here; a WAL reader may create the -shm file
        try:
            dst = sqlite3.connect(partial)
            try:
                src.backup(dst)  # every page, in one read transaction of the source
                revision, head_seq, head_hash = _described(dst)
            finally:
                dst.close()
        finally:
            src.close()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, target)
        _sync_dir(target.parent)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {source}: {exc}") from None
    except OSError as exc:
        raise StoreError(f"cannot write the backup {target}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink()
    return Backup(target, revision, head_seq, head_hash, target.stat().st_size)


def _described(conn: sqlite3.Connection) -> tuple[str | None, int, str | None]:
    try:
        revision = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        head = conn.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"the source is not a Clearance store ({exc})") from None
    return (revision[0] if revision else None, head[0] if head else 0, head[1] if head else None)


def _sync_dir(directory: Path) -> None:
    """Flush the directory entry of the renamed file (where the platform allows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
