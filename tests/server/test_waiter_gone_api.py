"""A remote agent's long poll is its waiter's heartbeat: the API says when the waiter is gone, and the
server's sweeper closes, at its expiry, what nothing can run. On both stores."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._clock import ManualClock
from clearance._store import Database
from clearance._store import _approval_waiters as waiters

from .test_approvals_api import pending

GRACE = waiters.GRACE_SECONDS


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@pytest.fixture
def keys(client: TestClient, make_key: Any) -> dict[str, dict[str, str]]:
    return {
        "admin": {"X-API-Key": make_key("admin", agent=None)},
        "agent": {"X-API-Key": make_key("agent", agent="refunds")},
        "approver": {"X-API-Key": make_key("approver", agent=None)},
    }


@contextmanager
def long_poll(client: TestClient, clock: ManualClock, path: str, headers: dict[str, str]) -> Iterator[dict[str, Any]]:
    """The agent's long poll, held while the block runs (the clock stands still); its answer after."""
    answer: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: answer.update(client.get(path, headers=headers).json()))
    thread.start()
    clock.wait_parked("long poll approvals")
    yield answer
    thread.join(20)
    assert not thread.is_alive()


def view(client: TestClient, keys: dict[str, dict[str, str]], apr: str) -> dict[str, Any]:
    found: dict[str, Any] = client.get(f"/v1/approvals/{apr}", headers=keys["approver"]).json()
    return found


def test_the_long_poll_keeps_the_waiter_seen_and_a_reconnect_clears_waiter_gone(
    clock: ManualClock, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    apr = pending(client, keys)
    first = view(client, keys, apr)
    assert first["waiter_seen_at_us"] is None and not first["waiter_gone"] and not first["resumable"]
    with long_poll(client, clock, f"/v1/approvals/{apr}?wait=20&resumable=true", keys["agent"]):
        for _ in range(3):  # while it is held, each re-check that finds the heartbeat due writes it
            seen = view(client, keys, apr)
            assert seen["waiter_seen_at_us"] == clock.now_ns() // 1000 and seen["resumable"]
            assert not seen["waiter_gone"]
            clock.advance(waiters.HEARTBEAT_SECONDS)
            clock.wait_parked("long poll approvals")
        clock.advance(20)  # its wait is over: it answers, and the agent dies before polling again
    clock.advance(GRACE + 1)
    gone = view(client, keys, apr)
    assert gone["waiter_gone"] and gone["status"] == "pending"
    assert [a["waiter_gone"] for a in client.get("/v1/approvals", headers=keys["approver"]).json()] == [True]
    approved = client.post(f"/v1/approvals/{apr}/approve", headers=keys["approver"], json={}).json()
    assert approved["status"] == "approved" and approved["waiter_gone"]  # approving says nobody waits
    # The agent comes back (a restarted process polling again): the heartbeat is written, the flag clears.
    back = client.get(f"/v1/approvals/{apr}?wait=1&resumable=true", headers=keys["agent"]).json()
    assert back["status"] == "approved" and not back["waiter_gone"]
    assert not view(client, keys, apr)["waiter_gone"]


def test_only_the_requesting_agents_long_poll_counts(
    clock: ManualClock, client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    apr = pending(client, keys)
    assert client.get(f"/v1/approvals/{apr}", headers=keys["agent"]).json()["waiter_seen_at_us"] is None  # a read
    with long_poll(client, clock, f"/v1/approvals/{apr}?wait=5", keys["approver"]):
        clock.advance(5)
    assert view(client, keys, apr)["waiter_seen_at_us"] is None


@pytest.mark.parametrize("approve", [True, False])
def test_the_sweeper_closes_what_nothing_can_run_at_its_expiry_saying_why(
    clock: ManualClock, client: TestClient, keys: dict[str, dict[str, str]], server_db: str, approve: bool
) -> None:
    apr = pending(client, keys, timeout="2m")
    with long_poll(client, clock, f"/v1/approvals/{apr}?wait=1", keys["agent"]):  # no worker can run it
        clock.advance(1)
    clock.advance(GRACE + 1)
    gone = view(client, keys, apr)
    assert gone["waiter_gone"] and not gone["resumable"]
    if approve:
        client.post(f"/v1/approvals/{apr}/approve", headers=keys["approver"], json={"note": "fine"})
    clock.wait_parked("approval sweep")
    clock.advance(2 * 60)
    clock.wait_parked("approval sweep")  # it swept, and sleeps again
    closed = view(client, keys, apr)
    assert closed["status"] == "cancelled" and not closed["waiter_gone"]
    assert closed["error"].startswith("waiter gone: the process waiting for this approval stopped at ")
    assert closed["error"].endswith("; nothing can run the call")
    assert closed["decided_by"] != "system" if approve else closed["decided_by"] == "system"
    db = Database(server_db)
    try:
        with db.read() as cur:
            cur.execute(db.sql("SELECT COUNT(*) FROM events WHERE kind = 'approval.abandoned'"))
            assert cur.fetchone()[0] == 1
    finally:
        db.close()
