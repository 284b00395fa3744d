"""Who reads the audit log: approvers and admins every agent's records, an agent key its own, nobody else any."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _users as users

from .conftest import activated

PASSWORD = "correct horse battery staple"
READS = (
    "/v1/events",
    "/v1/events/export",
    "/v1/calls",
    "/v1/sessions",
    "/v1/sessions/s-refunds",
    "/v1/usage",
    "/v1/budgets",
    "/v1/decisions",
)


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


def _signed_in(client: TestClient, username: str) -> TestClient:
    person = TestClient(client.app)  # the app's store, opened by `client`; cookies of its own
    signed = person.post("/v1/login", json={"username": username, "password": PASSWORD})
    assert signed.status_code == 200, signed.text
    return person


def test_a_person_with_only_a_group_role_reads_no_agents_records(
    client: TestClient, make_key: Any, server_db: str
) -> None:
    refunds = activated(client, make_key, "version: 1\n", agent="refunds")["agent"]
    checked = client.post(
        "/v1/check",
        headers=refunds,
        json={"tool": "issue_refund", "args": {"order_id": "A-1"}, "session_id": "s-refunds"},
    )
    assert checked.status_code == 200, checked.text
    db = Database(server_db)
    try:
        users.create(db, "carol", PASSWORD, ["support-lead"], by="test")  # decides what policy sends her group
        users.create(db, "dave", PASSWORD, ["approver"], by="test")
    finally:
        db.close()
    carol, dave = _signed_in(client, "carol"), _signed_in(client, "dave")
    metrics_only = {"X-API-Key": make_key("metrics", agent=None)}
    for path in READS:
        refused = carol.get(path)
        assert refused.status_code == 403, (path, refused.text)
        assert "A-1" not in refused.text
        assert client.get(path, headers=metrics_only).status_code == 403, path
        assert dave.get(path).status_code == 200, path
        assert client.get(path, headers=refunds).status_code == 200, path
    assert "A-1" in dave.get("/v1/events").text and "A-1" in client.get("/v1/events", headers=refunds).text
