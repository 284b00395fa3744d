"""Fixtures of the remote-mode tests: a real `clearance serve` on SQLite and PostgreSQL, its store.

The server tests' in-process fixtures (`client`, `make_key`, `server_db`, `any_store`) too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import clearance
from clearance._store import Database

from ..server.conftest import Server, _free_port, any_store, client, make_key, server_db
from ._agent import POLICY

__all__ = ["any_store", "client", "make_key", "server", "server_db", "store"]


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A real server process with `POLICY` active, once on SQLite and once on PostgreSQL."""
    url = str(tmp_path / "server.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    srv = Server(url, _free_port(), tmp_path / "server.log")
    srv.start()
    srv.publish(POLICY)
    yield srv
    clearance.shutdown()
    srv.stop()


@pytest.fixture
def store(server: Server) -> Iterator[Database]:
    """The server's store, opened by the test (as another process, like the CLI, would)."""
    db = Database(str(server.db))
    yield db
    db.close()
