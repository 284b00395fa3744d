"""A remote agent in the tests: connect it to a server, count its requests, decide calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

import clearance
from clearance._guard import _runtime
from clearance._remote._client import Client
from clearance._remote._governor import RemoteGovernor
from clearance.policy import Decision

from ..server.conftest import Server

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        reason: big refund
        approval: {timeout: 5m, grants: {scopes: [session, agent, requester], max_duration: 8h}}
  tip:
    params: {amount: number}
    rules:
      - id: tip
        effect: require_approval
        approval: {timeout: 5m, grants: {scopes: [session, agent], max_duration: 1h, max_calls: 1000}}
"""


def connect(server: Server, tmp_path: Path) -> RemoteGovernor:
    """Configure this process as `server`'s agent (remote mode) and return its governor."""
    clearance.configure(server_url=server.base, api_key=server.agent, spool_path=str(tmp_path / "spool" / "s.db"))
    gov = _runtime.current()
    assert isinstance(gov, RemoteGovernor)
    return gov


def requests_made(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every request the agent's clients make from now on, but the snapshot's long poll and shipping."""
    made: list[str] = []
    real = Client.call

    def counting(self: Client, method: str, path: str, **kw: Any) -> httpx.Response:
        if path not in ("/v1/policy/snapshot", "/v1/events"):
            made.append(f"{method} {path}")
        return real(self, method, path, **kw)

    monkeypatch.setattr(Client, "call", counting)
    return made


def holds(gov: RemoteGovernor, grant_id: str) -> bool:
    """Whether the agent holds this grant (from its snapshot) to decide calls with."""
    return grant_id in gov.sync.state.grants.ids()


def refund(gov: RemoteGovernor, amount: float, session: str = "s1", order: str = "A-1") -> Decision:
    """Decide (and record) one refund as the guard does, without running or waiting for it."""
    return gov.begin("issue_refund", {"order_id": order, "amount": amount}, session).decision
