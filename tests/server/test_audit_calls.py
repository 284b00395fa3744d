"""The audit log a row per call (`GET /v1/calls`): grouping, filters, paging, hostile records, who sees what.

Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _events as events
from clearance._store import _users as users
from clearance._store._events import new_id

POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund, approval: {timeout: 30m}}
      - {id: cap, when: 'args.amount > 5000', effect: block, reason: never this much}
"""
PASSWORD = "correct horse battery staple"


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


Keys = dict[str, dict[str, str]]


@pytest.fixture
def keys(client: TestClient, make_key: Any) -> Keys:
    k = {
        "admin": {"X-API-Key": make_key("admin", agent=None)},
        "approver": {"X-API-Key": make_key("approver", agent=None)},
        "refunds": {"X-API-Key": make_key("agent", agent="refunds")},
        "mailer": {"X-API-Key": make_key("agent", agent="mailer")},
    }
    rev = client.post("/v1/policies", headers=k["admin"], json={"text": POLICY}).json()["id"]
    assert client.post(f"/v1/policies/{rev}/activate", headers=k["admin"], json={}).status_code == 200
    return k


def check(client: TestClient, k: Keys, amount: float, order: str, *, agent: str = "refunds") -> dict[str, Any]:
    body = {"tool": "issue_refund", "args": {"order_id": order, "amount": amount}, "session_id": f"s-{agent}"}
    r = client.post("/v1/check", headers=k[agent], json={**body, "approval_mode": "async"})
    assert r.status_code == 200, r.text
    return dict(r.json())


def ingest(client: TestClient, k: Keys, agent: str, *records: dict[str, Any]) -> dict[str, Any]:
    now = time.time_ns() // 1000
    batch = [{"id": new_id("evt"), "at_us": now, **r} for r in records]
    r = client.post("/v1/events", headers=k[agent], json={"events": batch})
    assert r.status_code == 200, r.text
    return dict(r.json())


def ran(client: TestClient, k: Keys, call: dict[str, Any], *, error: str | None = None) -> None:
    """The approved call runs: claimed, then its outcome arrives (marking the approval executed or failed)."""
    claim = client.post(f"/v1/approvals/{call['approval_id']}/claim", headers=k["refunds"], json={"by": "worker-1"})
    assert claim.status_code == 200, claim.text
    finished = {"kind": "tool_call.finished", "tool": "issue_refund", "call_id": call["call_id"]}
    finished |= {"approval_id": call["approval_id"], "decision": "error" if error else "ok", "duration_ms": 1413.2156}
    ingest(client, k, "refunds", {**finished, **({"error": error} if error else {})})


def outcome(client: TestClient, k: Keys, call: dict[str, Any]) -> None:
    r = client.post(
        f"/v1/calls/{call['call_id']}/outcome", headers=k["refunds"], json={"status": "ok", "duration_ms": 3}
    )
    assert r.status_code == 200, r.text


@pytest.fixture
def history(client: TestClient, keys: Keys) -> dict[str, dict[str, Any]]:
    """Calls of every shape: allowed and run, blocked, approved with an edit and run, denied,
    allowed with no outcome yet, approved and failed; an LLM call; another agent's call."""
    c: dict[str, dict[str, Any]] = {}
    c["edited"] = check(client, keys, 355.08, "A-1")  # decided first, approved and run last
    c["ran"] = check(client, keys, 40, "A-2")
    outcome(client, keys, c["ran"])
    c["blocked"] = check(client, keys, 6000, "A-3")
    c["denied"] = check(client, keys, 900, "A-4")
    deny = {"note": "Offer store credit instead"}
    r = client.post(f"/v1/approvals/{c['denied']['approval_id']}/deny", headers=keys["approver"], json=deny)
    assert r.status_code == 200, r.text
    c["open"] = check(client, keys, 10, "A-5")  # no outcome
    c["failed"] = check(client, keys, 700, "A-6")
    r = client.post(f"/v1/approvals/{c['failed']['approval_id']}/approve", headers=keys["approver"], json={})
    assert r.status_code == 200, r.text
    ran(client, keys, c["failed"], error="PaymentError: card declined")
    ingest(client, keys, "refunds", {"kind": "llm.call", "session": "s-refunds", "model": "gpt-4o", "tokens": 18070})
    c["mail"] = check(client, keys, 20, "M-1", agent="mailer")
    edit = {"note": "Half now, half after the return", "args": {"amount": 150}}
    r = client.post(f"/v1/approvals/{c['edited']['approval_id']}/approve", headers=keys["approver"], json=edit)
    assert r.status_code == 200, r.text
    ran(client, keys, c["edited"])
    return c


def rows(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    """Every row the search finds, page after page."""
    out: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        r = client.get("/v1/calls", headers=headers, params={**params, **({"cursor": cursor} if cursor else {})})
        assert r.status_code == 200, r.text
        page = r.json()
        out += page["calls"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out
    raise AssertionError("paging did not end")


def kinds(row: dict[str, Any]) -> list[str]:
    return [s["kind"] for s in row["steps"]]


def by_call(found: list[dict[str, Any]]) -> dict[str | None, dict[str, Any]]:
    return {r["call_id"]: r for r in found if r["call_id"] is not None}


def test_a_row_per_call_with_its_decision_approval_and_outcome(
    client: TestClient, keys: Keys, history: dict[str, dict[str, Any]]
) -> None:
    found = rows(client, keys["admin"])
    calls = by_call(found)
    assert kinds(calls[history["edited"]["call_id"]]) == [
        "tool_call.decided",
        "approval.requested",
        "approval.decided",
        "tool_call.finished",
        "approval.executed",
    ]
    decided = calls[history["edited"]["call_id"]]["steps"][2]
    assert (decided["decision"], decided["by"], decided["note"]) == (
        "approved",
        "key:t:" + decided["by"].split(":")[-1],
        "Half now, half after the return",
    )
    assert decided["changes"] == [{"arg": "amount", "from": 355.08, "to": 150}]
    assert kinds(calls[history["failed"]["call_id"]])[-2:] == ["tool_call.finished", "approval.failed"]
    assert kinds(calls[history["denied"]["call_id"]]) == ["tool_call.decided", "approval.requested", "approval.decided"]
    assert kinds(calls[history["blocked"]["call_id"]]) == ["tool_call.decided"]  # blocked: nothing after
    assert calls[history["blocked"]["call_id"]]["steps"][0]["decision"] == "block"
    assert kinds(calls[history["open"]["call_id"]]) == ["tool_call.decided"]  # no outcome (yet)
    assert kinds(calls[history["ran"]["call_id"]]) == ["tool_call.decided", "tool_call.finished"]
    llm = [r for r in found if r["call_id"] is None and kinds(r) == ["llm.call"]]
    assert len(llm) == 1 and llm[0]["agent"] is None and llm[0]["more_steps"] == 0
    # Newest first, each call at its newest record: the edited call was decided first, run last.
    assert found[0]["call_id"] == history["edited"]["call_id"]
    newest = [max(s["seq"] for s in r["steps"]) for r in found]
    assert newest == sorted(newest, reverse=True)
    # Every record is in exactly one row.
    records = client.get("/v1/events", headers=keys["admin"], params={"limit": 1000}).json()["events"]
    assert sorted(s["seq"] for r in found for s in r["steps"]) == sorted(e["seq"] for e in records)


def test_filters_pick_calls_and_rows_hold_the_whole_call(
    client: TestClient, keys: Keys, history: dict[str, dict[str, Any]]
) -> None:
    admin = keys["admin"]
    approved = rows(client, admin, decision="approved")
    assert {r["call_id"] for r in approved} == {history["edited"]["call_id"], history["failed"]["call_id"]}
    assert all(kinds(r)[0] == "tool_call.decided" for r in approved)  # the whole call, not the matching record
    assert [r["call_id"] for r in rows(client, admin, decision="block")] == [history["blocked"]["call_id"]]
    assert [r["call_id"] for r in rows(client, admin, decision="failed")] == [history["failed"]["call_id"]]
    assert [r["call_id"] for r in rows(client, admin, q="A-4")] == [history["denied"]["call_id"]]
    mailer = rows(client, admin, agent="mailer")  # its call, and its key's creation
    assert [(r["call_id"], kinds(r)) for r in mailer] == [(history["mail"]["call_id"], ["tool_call.decided"])] + [
        (None, ["key.created"])
    ]
    llm = rows(client, admin, kind="llm.call")
    assert [kinds(r) for r in llm] == [["llm.call"]]
    assert rows(client, admin, tool="no_such_tool") == []
    assert rows(client, admin, session="s-mailer")[0]["call_id"] == history["mail"]["call_id"]
    assert len(rows(client, admin, call_id=history["denied"]["call_id"])) == 1
    everything = rows(client, admin)
    first = min(s["at_us"] for r in everything for s in r["steps"])
    last = max(s["at_us"] for r in everything for s in r["steps"])
    assert rows(client, admin, until_us=first) == []
    assert len(rows(client, admin, since_us=first, until_us=last + 1)) == len(everything)


@pytest.mark.parametrize("limit", [1, 2, 3])
def test_paging_shows_each_call_once_when_its_records_straddle_pages(
    client: TestClient, keys: Keys, history: dict[str, dict[str, Any]], limit: int
) -> None:
    admin = keys["admin"]
    whole = rows(client, admin)
    paged = rows(client, admin, limit=limit)
    assert [(r["call_id"], r["steps"][0]["seq"]) for r in paged] == [
        (r["call_id"], r["steps"][0]["seq"]) for r in whole
    ]
    # The edited call's decision is the oldest call record and its outcome the newest: one row, on page 1.
    assert paged[0]["call_id"] == history["edited"]["call_id"]
    assert sum(r["call_id"] == history["edited"]["call_id"] for r in paged) == 1


def test_a_record_written_between_pages_moves_no_call_off_the_pages(
    client: TestClient, keys: Keys, history: dict[str, dict[str, Any]]
) -> None:
    admin = keys["admin"]
    first = client.get("/v1/calls", headers=admin, params={"limit": 2}).json()
    shown = [r["call_id"] for r in first["calls"]]
    assert history["open"]["call_id"] not in shown
    outcome(client, keys, history["open"])  # its newest record is now above the first page
    later = []
    cursor = first["next_cursor"]
    while cursor:
        page = client.get("/v1/calls", headers=admin, params={"limit": 2, "cursor": cursor}).json()
        later += [r["call_id"] for r in page["calls"]]
        cursor = page["next_cursor"]
    assert later.count(history["open"]["call_id"]) == 1  # still on the pages it was on, once
    row = next(r for r in rows(client, admin, call_id=history["open"]["call_id"]))
    assert kinds(row) == ["tool_call.decided", "tool_call.finished"]  # with what happened since


def test_an_agent_key_sees_its_own_calls_only(
    client: TestClient, keys: Keys, history: dict[str, dict[str, Any]]
) -> None:
    mine = rows(client, keys["mailer"])
    assert [r["call_id"] for r in mine] == [history["mail"]["call_id"], None]
    assert {s["agent"] for r in mine for s in r["steps"]} == {"mailer"}
    assert client.get("/v1/calls", headers=keys["mailer"], params={"agent": "refunds"}).status_code == 403
    assert rows(client, keys["mailer"], call_id=history["edited"]["call_id"]) == []
    assert client.get("/v1/calls").status_code == 401
    assert len(rows(client, keys["approver"])) == len(rows(client, keys["admin"]))


def test_another_agent_cannot_put_records_into_a_call(
    client: TestClient, keys: Keys, history: dict[str, dict[str, Any]]
) -> None:
    stolen = history["edited"]["call_id"]
    forged = {"kind": "tool_call.finished", "tool": "issue_refund", "call_id": stolen, "decision": "error"}
    ingest(client, keys, "mailer", {**forged, "error": "forged by mailer"})
    found = rows(client, keys["admin"], call_id=stolen)
    assert sorted((r["agent"], len(r["steps"])) for r in found) == [("mailer", 1), ("refunds", 5)]
    assert all(s["agent"] == r["agent"] for r in found for s in r["steps"])
    assert [r["agent"] for r in rows(client, keys["refunds"], call_id=stolen)] == ["refunds"]


def test_hostile_values_are_answered_never_a_server_error(
    client: TestClient, keys: Keys, history: dict[str, dict[str, Any]]
) -> None:
    hostile = "\u202eevil\u200b%_'\"; DROP TABLE events;--"[:40]
    many = [
        {
            "kind": "tool_call.decided",
            "tool": "t",
            "call_id": hostile,
            "decision": "allow",
            "args": {"x": "\u202e" * 50},
        }
    ]
    many += [
        {"kind": "tool_call.finished", "tool": "t", "call_id": hostile, "decision": "ok", "duration_ms": n}
        for n in range(60)
    ]
    assert sum(ingest(client, keys, "refunds", *many[n : n + 10])["appended"] for n in range(0, 61, 10)) == 61
    row = rows(client, keys["admin"], call_id=hostile)
    assert len(row) == 1 and row[0]["call_id"] == hostile
    assert len(row[0]["steps"]) == 50 and row[0]["more_steps"] == 11  # a call of many records: the first 50
    for params in (
        {"q": hostile},
        {"q": "%"},
        {"tool": hostile},
        {"session": "x" * 200},
        {"cursor": "999999999999999999.999999999999999999"},
        {"cursor": "0.0"},
        {"cursor": "5.1"},
        {"limit": 100},
    ):
        assert client.get("/v1/calls", headers=keys["admin"], params=params).status_code == 200, params
    for params in (
        {"cursor": "12"},
        {"cursor": "-1.5"},
        {"cursor": "1.2.3"},
        {"cursor": "1e3.4"},
        {"limit": 0},
        {"limit": 101},
        {"q": "a\x00b"},
        {"agent": "a\x00b"},
        {"since_us": -1},
    ):
        r = client.get("/v1/calls", headers=keys["admin"], params=params)
        assert r.status_code == 422, (params, r.status_code, r.text)


def test_a_call_of_very_many_records_is_read_in_bounded_parts(
    client: TestClient, keys: Keys, history: dict[str, dict[str, Any]], server_db: str
) -> None:
    db = Database(server_db)
    body = {"agent": "refunds", "environment": "test", "tool": "t", "call_id": "flood", "decision": "ok"}
    with db.write() as cur:
        flood = [events.make_event("tool_call.finished", 1_790_000_000_000_000 + n, body) for n in range(300)]
        events.append(db, cur, flood)
    db.close()
    check(client, keys, 10, "after-the-flood")
    found = rows(client, keys["admin"], limit=3)
    row = next(r for r in found if r["call_id"] == "flood")
    assert len(row["steps"]) == 50 and row["more_steps"] == 50 and row["more_capped"] is True
    assert [r["more_capped"] for r in found if r["call_id"] != "flood"] == [False] * (len(found) - 1)
    assert sum(r["call_id"] == "flood" for r in found) == 1


def test_a_record_not_visible_is_worded_for_whoever_asks(
    client: TestClient, keys: Keys, history: dict[str, dict[str, Any]], server_db: str
) -> None:
    db = Database(server_db)
    users.create(db, "carol", PASSWORD, ["approver"], by="test")
    db.close()
    missing = 10**12
    r = client.get(f"/v1/events/{missing}", headers=keys["mailer"])
    assert r.status_code == 404 and r.json()["error"]["message"].endswith("visible to this key")
    assert client.post("/v1/login", json={"username": "carol", "password": PASSWORD}).status_code == 200
    r = client.get(f"/v1/events/{missing}")
    assert r.status_code == 404 and r.json()["error"]["message"] == f"no record at position {missing} is visible to you"
