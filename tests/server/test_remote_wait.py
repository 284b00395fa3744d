"""Remote mode's wait for a decision while the server goes away: retried with jittered backoff,
given up 30 s past the approval's expiry, a refusal (4xx) raised at once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

import clearance
from clearance import ApprovalTimeout, ServerError
from clearance._clock import ManualClock

from .conftest import Server, _free_port
from .test_remote import remote, tools


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    from .test_remote import POLICY

    live = Server(tmp_path / "server.db", _free_port(), tmp_path / "server.log")
    live.start()
    live.publish(POLICY)
    yield live
    clearance.shutdown()
    live.stop()


def test_a_wait_outlives_a_server_restart(server: Server, tmp_path: Path) -> None:
    remote(server, tmp_path)
    pending, ids = threading.Event(), list[str]()
    _, issue_refund, _ = tools(on_pending=lambda p: (ids.append(p.approval_id), pending.set()))
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(issue_refund, "A-1", 900)
        assert pending.wait(30)
        server.kill()  # the long poll fails; the wait retries
        server.start()
        approve = f"{server.base}/v1/approvals/{ids[0]}/approve"
        httpx.post(approve, headers={"X-API-Key": server.approver}, json={}).raise_for_status()
        assert call.result(timeout=60) == "refunded 900"


def test_a_wait_gives_up_past_the_expiry_while_the_server_stays_away(
    server: Server, tmp_path: Path, clock: ManualClock
) -> None:
    remote(server, tmp_path)
    pending = threading.Event()
    _, issue_refund, _ = tools(on_pending=lambda p: pending.set())
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(issue_refund, "A-2", 900)
        assert pending.wait(30)
        clock.advance(5 * 60 + 31)  # the approval (5 minutes) expired more than 30 s ago
        server.kill()
        with pytest.raises(ApprovalTimeout, match="cannot reach"):
            call.result(timeout=60)


def test_a_refusal_stops_the_wait_at_once(server: Server, tmp_path: Path) -> None:
    remote(server, tmp_path)
    admin = {"X-API-Key": server.admin}

    def revoke(_: clearance.PendingApproval) -> None:
        keys = httpx.get(f"{server.base}/v1/keys", headers=admin).json()
        (agent_key,) = [k for k in keys if k["agent"] == "refunds"]
        httpx.delete(f"{server.base}/v1/keys/{agent_key['id']}", headers=admin).raise_for_status()

    _, issue_refund, _ = tools(on_pending=revoke)
    with pytest.raises(ServerError) as refused:
        issue_refund("A-3", 900)
    assert refused.value.status == 401
