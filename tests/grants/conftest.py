from __future__ import annotations

from pathlib import Path

import pytest

from clearance._store import Database

from ._shared import open_store


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """A store on SQLite and on PostgreSQL, with the grant tests' policy active."""
    return open_store(request, tmp_path, request.param)
