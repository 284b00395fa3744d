from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _keys as keys
from clearance.server import ServerSettings, create_app

from ..conftest import CLI, REPO


@pytest.fixture
def server_db(tmp_path: Path) -> str:
    return str(tmp_path / "server.db")


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A server store URL, once SQLite and once PostgreSQL: a module runs on both by
    overriding `server_db` with it."""
    if request.param == "sqlite":
        return str(tmp_path / "server.db")
    return str(request.getfixturevalue("pg_url"))


def post_raw(client: TestClient, path: str, payload: Any, headers: dict[str, str]) -> httpx.Response:
    """POST `payload` as the standard library writes JSON: NaN, Infinity and lone-surrogate
    escapes included, as a hostile client would send them (httpx refuses to). A str is sent as it is."""
    body = payload if isinstance(payload, str) else json.dumps(payload, allow_nan=True)
    return client.post(path, content=body, headers={**headers, "Content-Type": "application/json"})


def activated(client: TestClient, make_key: Any, policy: str, *, agent: str) -> dict[str, dict[str, str]]:
    """Publish and activate `policy` as an admin: the admin's and an `agent` key's headers."""
    admin = {"X-API-Key": make_key("admin", agent=None)}
    rev = client.post("/v1/policies", headers=admin, json={"text": policy}).json()["id"]
    assert client.post(f"/v1/policies/{rev}/activate", headers=admin, json={}).status_code == 200
    return {"admin": admin, "agent": {"X-API-Key": make_key("agent", agent=agent)}}


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


class Server:
    """A real `clearance serve` process that can be started, killed and restarted."""

    start_timeout = 30.0  # seconds `start` waits for it to answer /readyz, unless told

    def __init__(
        self, db: Path | str, port: int, log: Path, *, make_keys: bool = True, args: tuple[str, ...] = ()
    ) -> None:
        self.db, self.port, self.log, self.args = db, port, log, args
        self.base = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        if not make_keys:
            return
        store = Database(str(db))
        _, self.admin = keys.create(store, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")
        _, self.approver = keys.create(
            store, name="p", scopes=["approver"], agent=None, environment="test", created_by="t"
        )
        _, self.agent = keys.create(
            store, name="g", scopes=["agent"], agent="refunds", environment="test", created_by="t"
        )
        store.close()

    def start(self, timeout: float | None = None) -> None:
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [*CLI, "serve", "--port", str(self.port), "--database-url", str(self.db), *self.args],
                env={**os.environ, "PYTHONPATH": str(REPO / "src")},
                stdout=log,
                stderr=log,
            )
        wait_ready(self.base, self.proc, self.log.read_text, timeout or self.start_timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(30)

    def publish(self, text: str, **target: str) -> str:
        a = {"X-API-Key": self.admin}
        rev = str(httpx.post(f"{self.base}/v1/policies", headers=a, json={"text": text}).json()["id"])
        assert httpx.post(f"{self.base}/v1/policies/{rev}/activate", headers=a, json=target).status_code == 200
        return rev

    def events(self, **params: Any) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.base}/v1/events", headers={"X-API-Key": self.admin}, params={"limit": 1000, **params})
        return list(reversed(r.json()["events"]))


def wait_ready(base: str, proc: subprocess.Popen[Any], why: Callable[[], str], timeout: float = 30) -> None:
    """Wait until the server process at `base` answers /readyz; fail with `why()` if it dies first."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, why()
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real `clearance serve` process on a fresh SQLite store: (base URL, store path)."""
    db = tmp_path / "live.db"
    Database(str(db)).close()
    server = Server(db, _free_port(), tmp_path / "server.log", make_keys=False)
    server.start()
    try:
        yield server.base, db
    finally:
        server.stop()
