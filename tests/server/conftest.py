from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from clearance.server import ServerSettings, create_app
from clearance.store import Database
from clearance.store import _keys as keys


@pytest.fixture
def server_db(tmp_path: Path) -> str:
    return str(tmp_path / "server.db")


@pytest.fixture
def client(server_db: str) -> Iterator[TestClient]:
    app = create_app(ServerSettings(database_url=server_db, max_body_bytes=4096))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def make_key(server_db: str) -> Iterator[object]:
    db = Database(server_db)

    def make(*scopes: str, agent: str | None = "bot", environment: str = "test") -> str:
        _, secret = keys.create(db, name="t", scopes=scopes, agent=agent, environment=environment, created_by="test")
        return secret

    yield make
    db.close()
