"""A consistent copy of a SQLite store while processes use it (`clearance db backup`).

The store runs in WAL mode: copying the file while a process writes can copy a database without
the commits still in its WAL, or half of a checkpoint. SQLite's online backup copies the pages of
one read transaction instead (writers carry on meanwhile). The copy is written beside the target
under another name (`.NAME.partial`, created exclusively: one backup to a name at a time), flushed
to disk, then linked into place, which fails rather than replace a file that appeared meanwhile;
so a file with the target's name is always a whole backup, and never one overwritten. It is
readable by its owner only (it holds every call's arguments). A backup killed midway leaves its
`.NAME.partial` behind; the next one to that name says so instead of starting.

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
    partial = target.with_name(f".{target.name}.partial")
    try:
        fd = os.open(partial, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)  # owner-only before any page
    except FileExistsError:
        raise StoreError(
            f"{partial} exists: another backup to {target.name} is running, or one was killed midway;"
            " remove it (and its -journal, if any) when no backup is running"
        ) from None
    except OSError as exc:
        raise StoreError(f"cannot write the backup {target}: {exc}") from None
    os.close(fd)
    try:
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
        os.link(partial, target)  # unlike a rename, never over a file that appeared meanwhile
        _sync_dir(target.parent)
    except FileExistsError:
        raise StoreError(f"{target} appeared while the backup ran: a backup never overwrites a file") from None
    except sqlite3.Error as exc:
        raise StoreError(f"cannot back up {source}: {exc}") from None
    except OSError as exc:
        raise StoreError(f"cannot write the backup {target}: {exc}") from None
    finally:  # the partial file is this run's: gone once linked, or failed
        for leftover in (partial, partial.with_name(partial.name + "-journal")):
            with contextlib.suppress(OSError):
                leftover.unlink()
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
