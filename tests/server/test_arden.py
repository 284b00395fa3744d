"""ardenpy 0.5, the real SDK, pointed at a real `clearance serve`."""

from __future__ import annotations

import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from clearance._store import Database
from clearance._store import _keys as keys
from clearance._store._events import EventFilter, query

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: Refunds over $200 need a lead}
  drop_table:
    default: block
"""


@pytest.fixture
def arden(
    live_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[ModuleType, dict[str, str], str, Path]]:
    base, db_path = live_server
    db = Database(str(db_path))
    made = {
        name: keys.create(db, name=name, scopes=scopes, agent=agent, environment="test", created_by="t")[1]
        for name, scopes, agent in (
            ("admin", ["admin"], None),
            ("approver", ["approver"], None),
            ("agent", ["agent"], "legacy-bot"),
        )
    }
    db.close()
    a = {"X-API-Key": made["admin"]}
    rev = httpx.post(f"{base}/v1/policies", headers=a, json={"text": POLICY}).json()["id"]
    httpx.post(f"{base}/v1/policies/{rev}/activate", headers=a, json={})
    with warnings.catch_warnings():  # ardenpy still uses pydantic v1 validators
        warnings.simplefilter("ignore")
        import ardenpy
        import ardenpy._autopatch
        import ardenpy.config

        # configure() would patch LangChain's and the Agents SDK's tool classes for good, in this
        # process: every later test running a framework's tool would be checked by ardenpy too.
        # These tests guard their tools explicitly (guard_tool).
        monkeypatch.setattr(ardenpy._autopatch, "patch_all", lambda: [])
        ardenpy.configure(
            api_key=made["agent"],
            api_url=base,
            environment="test",
            poll_interval=0.05,
            max_poll_time=20,
            retry_attempts=1,
        )
    yield ardenpy, made, base, db_path


def test_allow_block_and_the_audit_log(arden: Any) -> None:
    ardenpy, _, _, db_path = arden

    def lookup(order_id: str) -> str:
        return f"order {order_id}"

    def drop_table(name: str) -> str:
        return "dropped"

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ardenpy.guard_tool("lookup", lookup)("A-1") == "order A-1"
        from ardenpy.types import PolicyDeniedError

        with pytest.raises(PolicyDeniedError, match="default of tool 'drop_table' is block"):
            ardenpy.guard_tool("drop_table", drop_table)("customers")
    db = Database(str(db_path))
    decided = [e.body for e in query(db, EventFilter(kind="tool_call.decided"))]
    db.close()
    assert [(d["tool"], d["decision"], d["agent"]) for d in decided] == [
        ("lookup", "allow", "legacy-bot"),
        ("drop_table", "block", "legacy-bot"),
    ]
    assert decided[0]["args"] == {"order_id": "A-1"}


def test_approval_through_clearance_reaches_ardenpy(arden: Any) -> None:
    ardenpy, made, base, _ = arden
    ran: list[float] = []

    def issue_refund(order_id: str, amount: float) -> str:
        ran.append(amount)
        return "refunded"

    def approve_when_pending() -> None:
        for _ in range(200):
            pending = httpx.get(f"{base}/v1/approvals", headers={"X-API-Key": made["approver"]}).json()
            if pending:
                httpx.post(
                    f"{base}/approve/{pending[0]['id']}",
                    headers={"X-API-Key": made["approver"]},
                    json={"message": "ok"},
                )
                return
            threading.Event().wait(0.05)

    threading.Thread(target=approve_when_pending).start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert ardenpy.guard_tool("issue_refund", issue_refund)(order_id="A-2", amount=850) == "refunded"
    assert ran == [850]


def test_the_wire_shapes(arden: Any) -> None:
    _, made, base, _ = arden
    agent, approver = {"X-API-Key": made["agent"]}, {"X-API-Key": made["approver"]}
    r = httpx.post(
        f"{base}/policy/check",
        headers=agent,
        json={"tool_name": "lookup", "args": ["x"], "kwargs": {"q": 1}, "metadata": {"session_id": "s9"}},
    ).json()
    assert r == {
        "decision": "allow",
        "action_id": r["action_id"],
        "message": r["message"],
        "reason": "no_policy_configured",
        "status": "approved",
        "environment": "test",
        "user_id": "legacy-bot",
    }
    held = httpx.post(
        f"{base}/policy/check",
        headers=agent,
        json={"tool_name": "issue_refund", "kwargs": {"amount": 900}, "metadata": None},
    ).json()
    assert held["decision"] == "requires_approval" and held["status"] == "pending"
    status = httpx.get(f"{base}/status/{held['action_id']}", headers=agent).json()
    assert status["status"] == "pending" and status["created_at"].endswith("Z")
    assert httpx.post(f"{base}/approve/{held['action_id']}", headers=agent, json={}).status_code == 403
    denied = httpx.post(f"{base}/deny/{held['action_id']}", headers=approver, json={"message": "no"})
    assert denied.json() == {"action_id": held["action_id"], "status": "denied"}
    after = httpx.get(f"{base}/status/{held['action_id']}", headers=agent).json()
    assert (after["status"], after["message"]) == ("denied", "no")
    assert httpx.post(f"{base}/approve/{held['action_id']}", headers=approver, json={}).status_code == 409
    usage = httpx.post(
        f"{base}/token-usage", headers=agent, json={"model": "gpt-4o", "prompt_tokens": 1000, "completion_tokens": 100}
    ).json()
    assert usage["recorded"] is True and usage["cost_usd"] == "0.0035"
