"""Every refused decision is audited once, on every route that decides approvals, on both stores."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _users as users
from clearance._store._events import EventFilter, query

from .test_users import PASSWORD

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund}
"""
ROUTES = ("/approve/{}", "/deny/{}", "/v1/approvals/{}/approve", "/v1/approvals/{}/deny")


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store  # on SQLite and PostgreSQL


@pytest.fixture
def setup(client: TestClient, make_key: Any, server_db: str) -> dict[str, Any]:
    made = {
        "admin": {"X-API-Key": make_key("admin", agent=None)},
        "agent": {"X-API-Key": make_key("agent", agent="refunds")},
        "other": {"X-API-Key": make_key("agent", agent="mailer")},
        "approver": {"X-API-Key": make_key("approver", agent=None)},
        "self": {"X-API-Key": make_key("agent", "approver", agent="refunds")},
    }
    db = Database(server_db)
    users.create(db, "root", PASSWORD, ["admin"], by="t")
    db.close()
    rev = client.post("/v1/policies", headers=made["admin"], json={"text": POLICY}).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=made["admin"], json={})
    r = client.post("/v1/check", headers=made["agent"], json={"tool": "issue_refund", "args": {"amount": 900}})
    return {"keys": made, "approval": r.json()["approval_id"], "db": server_db}


def refused(server_db: str) -> list[dict[str, Any]]:
    db = Database(server_db)
    try:
        return [e.body for e in query(db, EventFilter(kind="approval.refused"))]
    finally:
        db.close()


@pytest.mark.parametrize("route", ROUTES)
def test_every_refused_decision_is_audited_once(client: TestClient, setup: dict[str, Any], route: str) -> None:
    apr, keys = setup["approval"], setup["keys"]
    url = route.format(apr)
    attempted = "deny" if "deny" in route else "approve"
    for name, why in (
        ("agent", "approver role"),
        ("other", "approver role"),
        ("admin", "approver role"),
        ("self", "requesting agent"),
    ):
        before = len(refused(setup["db"]))
        r = client.post(url, headers=keys[name], json={})
        assert r.status_code == 403, (name, r.text)
        found = refused(setup["db"])
        assert len(found) == before + 1, name
        record = found[-1]  # oldest first
        assert record["approval_id"] == apr and record["attempted"] == attempted, record
        assert record["by"].startswith("key:t:") and why in record["reason"], record
    # A person without the approver role, signed in with the CSRF token.
    csrf = client.post("/v1/login", json={"username": "root", "password": PASSWORD}).json()["csrf_token"]
    r = client.post(url, headers={"X-CSRF-Token": csrf}, json={})
    assert r.status_code == 403
    found = refused(setup["db"])
    assert len(found) == 5 and found[-1]["by"] == "user:root" and "approver role" in found[-1]["reason"]
    # An approver asking about an id nobody has.
    r = client.post(route.format("apr_nope"), headers=keys["approver"], json={})
    assert r.status_code == 404
    found = refused(setup["db"])
    assert len(found) == 6 and found[-1]["approval_id"] == "apr_nope" and found[-1]["by"].startswith("key:")
    pending = client.get(f"/v1/approvals/{apr}", headers=keys["approver"]).json()
    assert pending["status"] == "pending"


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(
    "hostile",
    ["apr_\x00nul", "apr_" + "x" * 10_000, "apr_\ud800", "apr_\x00" + "y" * 10_000],
    ids=["nul", "10kb", "surrogate", "nul-10kb"],
)
def test_hostile_ids_get_a_4xx_and_a_readable_record(
    client: TestClient, setup: dict[str, Any], route: str, hostile: str
) -> None:
    keys = setup["keys"]
    url = route.format(quote(hostile, safe="", errors="surrogatepass"))
    for name, status in (("approver", 404), ("agent", 403)):
        before = len(refused(setup["db"]))
        r = client.post(url, headers=keys[name], json={})
        assert r.status_code == status, (name, r.text)
        assert len(r.text) < 2_000  # the id is not echoed whole
        found = refused(setup["db"])
        assert len(found) == before + 1
        shown = found[-1]["approval_id"]
        assert "\x00" not in shown and len(shown) <= 120, shown
    status = client.get(f"/status/{quote(hostile, safe='', errors='surrogatepass')}", headers=keys["approver"])
    assert status.status_code == 404 and len(status.text) < 2_000


@pytest.mark.parametrize("route", ["/approve/{}", "/v1/approvals/{}/approve"])
@pytest.mark.parametrize("note", ["a\x00b", "a\ud800b"])
def test_notes_every_store_cannot_keep_are_refused(
    client: TestClient, setup: dict[str, Any], route: str, note: str
) -> None:
    apr, keys = setup["approval"], setup["keys"]
    field = "message" if route.startswith("/approve") else "note"
    body = json.dumps({field: note})  # ASCII: the lone surrogate travels as a JSON escape
    r = client.post(route.format(apr), headers={**keys["approver"], "Content-Type": "application/json"}, content=body)
    assert r.status_code == 422, r.text
    assert client.get(f"/v1/approvals/{apr}", headers=keys["approver"]).json()["status"] == "pending"


def test_a_deny_with_arguments_is_refused_and_audited(client: TestClient, setup: dict[str, Any]) -> None:
    apr, keys = setup["approval"], setup["keys"]
    r = client.post(f"/v1/approvals/{apr}/deny", headers=keys["approver"], json={"args": {"amount": 1}})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["location"] == "body.args"
    [record] = refused(setup["db"])
    assert record["attempted"] == "deny" and "only an approval" in record["reason"]


def test_unauthenticated_attempts_write_nothing(client: TestClient, setup: dict[str, Any]) -> None:
    apr = setup["approval"]
    for route in ROUTES:
        assert client.post(route.format(apr), json={}).status_code == 401
        assert client.post(route.format(apr), headers={"X-API-Key": "clr_test_nope"}, json={}).status_code == 401
    assert refused(setup["db"]) == []


@pytest.mark.parametrize("route", ROUTES)
def test_a_non_approver_is_refused_and_audited_whatever_the_body(
    client: TestClient, setup: dict[str, Any], route: str
) -> None:
    apr, keys = setup["approval"], setup["keys"]
    for body in ({"note": 5, "message": 5}, {"unknown": True}, {"note": "x" * 2500}):
        r = client.post(route.format(apr), headers=keys["agent"], json=body)
        assert r.status_code == 403, r.text
    assert len(refused(setup["db"])) == 3
    # An approver's bad body is bad input, answered 422 and not a refusal.
    assert client.post(route.format(apr), headers=keys["approver"], json={"note": 5, "message": 5}).status_code == 422
    assert len(refused(setup["db"])) == 3
