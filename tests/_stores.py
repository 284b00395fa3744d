"""A store's checkpoints and records by URL, for tests that run the CLI or a server on it."""

from __future__ import annotations

from clearance._store import Database
from clearance._store import _seals as seals

from .store.test_seals import add


def checkpoints(url: str) -> list[seals.Checkpoint]:
    """The store's checkpoints, newest first."""
    db = Database(url)
    try:
        return seals.page(db)
    finally:
        db.close()


def records(url: str, n: int) -> None:
    """Append `n` records to the store."""
    db = Database(url)
    try:
        add(db, n)
    finally:
        db.close()
