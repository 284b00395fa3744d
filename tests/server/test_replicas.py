"""Two `clearance serve` replicas on one PostgreSQL behave as one service."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance._store import Database
from clearance._store import _keys as keys

from .._wait import until
from .conftest import Server, _free_port

pytestmark = pytest.mark.postgres


@pytest.fixture
def replicas(pg_url: str, tmp_path: Path) -> Iterator[tuple[Server, Server, dict[str, str]]]:
    db = Database(pg_url)
    made = {
        name: keys.create(db, name=name, scopes=scopes, agent=agent, environment="test", created_by="t")[1]
        for name, scopes, agent in (
            ("admin", ["admin"], None),
            ("approver", ["approver"], None),
            ("agent", ["agent"], "refunds"),
        )
    }
    db.close()
    a = Server(pg_url, _free_port(), tmp_path / "a.log", make_keys=False)
    b = Server(pg_url, _free_port(), tmp_path / "b.log", make_keys=False)
    a.admin = b.admin = made["admin"]
    a.start()
    b.start()
    for server in (a, b):  # wait until each replica hears the others
        until(lambda server=server: _ready(server)["change_feed"] == "listening", "the change feed listens")
    yield a, b, made
    a.stop()
    b.stop()


def _ready(server: Server) -> dict[str, str]:
    return dict(httpx.get(f"{server.base}/readyz").json())


def _holding(server: Server) -> None:
    """Wait until `server` holds a long poll: a change from now on can only reach it by the feed."""
    until(lambda: _ready(server)["long_polls"] == "1", "the long poll is held")


def _timed(fn: Any) -> tuple[Any, float]:
    started = time.monotonic()
    return fn(), time.monotonic() - started


def test_a_policy_activated_on_one_replica_reaches_long_polls_on_the_other(
    replicas: tuple[Server, Server, dict[str, str]],
) -> None:
    a, b, made = replicas
    first = a.publish("version: 1\ndefault: allow\n")
    second_text = "version: 1\ndefault: block\n"
    agent = {"X-API-Key": made["agent"], "If-None-Match": f'"{first}"'}
    result: dict[str, Any] = {}

    def poll() -> None:
        r, took = _timed(lambda: httpx.get(f"{b.base}/v1/policy/snapshot?wait=20", headers=agent, timeout=30))
        result.update(revision=r.json()["revision"], took=took)

    thread = threading.Thread(target=poll)
    thread.start()
    _holding(b)
    second = a.publish(second_text)
    thread.join(30)
    assert result["revision"] == second
    # With a change feed the fallback re-check is every 5 s; an answer well inside that was pushed.
    assert result["took"] < 3.5


def test_an_approval_decided_on_one_replica_wakes_a_waiter_on_the_other(
    replicas: tuple[Server, Server, dict[str, str]],
) -> None:
    a, b, made = replicas
    a.publish("version: 1\ntools:\n  refund:\n    rules:\n      - {id: r, effect: require_approval}\n")
    held = httpx.post(f"{b.base}/v1/check", headers={"X-API-Key": made["agent"]}, json={"tool": "refund"}).json()
    result: dict[str, Any] = {}

    def wait() -> None:
        r, took = _timed(
            lambda: httpx.get(
                f"{b.base}/v1/approvals/{held['approval_id']}?wait=20", headers={"X-API-Key": made["agent"]}, timeout=30
            )
        )
        result.update(status=r.json()["status"], took=took)

    thread = threading.Thread(target=wait)
    thread.start()
    _holding(b)
    decided = httpx.post(
        f"{a.base}/v1/approvals/{held['approval_id']}/approve", headers={"X-API-Key": made["approver"]}
    )
    assert decided.status_code == 200
    thread.join(30)
    assert result["status"] == "approved" and result["took"] < 3.5
