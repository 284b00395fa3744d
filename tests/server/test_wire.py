"""The wire schema reads what the server really sends: approvals, votes and decisions."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._wire import ApprovalMode, ApprovalOut, ApprovalStatus, CheckResponse, OnTimeout
from clearance.policy import Effect

from .conftest import activated

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - id: big
        when: 'args.amount > 200'
        effect: require_approval
        reason: big refund
        approval: {timeout: 30m, quorum: 2}
"""


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


def test_an_approval_the_server_sends_validates_as_the_wire_model(client: TestClient, make_key: Any) -> None:
    keys = activated(client, make_key, POLICY, agent="refunds")
    first = {"X-API-Key": make_key("approver", agent=None)}
    second = {"X-API-Key": make_key("approver", agent=None)}
    answer = client.post("/v1/check", headers=keys["agent"], json={"tool": "issue_refund", "args": {"amount": 900}})
    checked = CheckResponse.model_validate(answer.json())
    assert checked.decision is Effect.REQUIRE_APPROVAL and checked.approval_id is not None

    path = f"/v1/approvals/{checked.approval_id}"
    assert client.post(f"{path}/approve", headers=first, json={"note": "fine by me"}).status_code == 200
    voted = ApprovalOut.model_validate(client.get(path, headers=keys["agent"]).json())
    assert voted.status is ApprovalStatus.PENDING and voted.on_timeout is OnTimeout.DENY
    assert voted.mode is ApprovalMode.WAIT
    assert [(v.by, v.note) for v in voted.votes] == [(voted.votes[0].by, "fine by me")]

    raw = client.post(f"{path}/approve", headers=second, json={}).json()
    decided = ApprovalOut.model_validate(raw)
    assert decided.status is ApprovalStatus.APPROVED and len(decided.votes) == 2
    assert decided.model_dump(mode="json") == raw  # nothing the server sends is lost or renamed
    mine = ApprovalOut.model_validate(client.get(path, headers=keys["agent"]).json())
    assert mine.executed_args == {"amount": 900}


def test_statuses_are_the_strings_stored_and_sent() -> None:
    assert [s.value for s in ApprovalStatus] == [
        "pending",
        "approved",
        "denied",
        "expired",
        "cancelled",
        "executed",
        "failed",
    ]
    assert ApprovalStatus.PENDING == "pending" and f"{ApprovalStatus.DENIED}" == "denied"
    assert not ApprovalStatus.PENDING.decided and ApprovalStatus.APPROVED.decided
    assert {s for s in ApprovalStatus if s.final} == {"denied", "expired", "cancelled", "executed", "failed"}
