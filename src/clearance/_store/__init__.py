"""The store: SQLAlchemy schema, one Alembic chain, and repository functions.

The same code runs on SQLite (the embedded default) and PostgreSQL.
"""

from __future__ import annotations

from ._approvals import Approval
from ._db import HEAD, Database, normalise_url
from ._events import EventFilter, StoredEvent, VerifyReport

__all__ = [
    "HEAD",
    "Approval",
    "Database",
    "EventFilter",
    "StoredEvent",
    "VerifyReport",
    "normalise_url",
]
