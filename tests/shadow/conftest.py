"""Fixtures of the shadow tests: a store on SQLite and on PostgreSQL, and the server on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from clearance._store import Database

from ..server.conftest import client, make_key  # noqa: F401  the server's fixtures, on `server_db`


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL, once SQLite and once PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "shadow.db")
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def server_db(store_url: str) -> str:
    return store_url


@pytest.fixture
def db(store_url: str) -> Iterator[Database]:
    store = Database(store_url, create=True)
    yield store
    store.close()
