"""The decisions history over the API (`GET /v1/decisions`, its export), on SQLite and PostgreSQL.

Every outcome (approved, granted, denied, expired, cancelled) with who decided, the note, the
edit as nested changes and how long the agent waited; filters, keyset paging, exports (formula
injection defused in CSV, hidden characters escaped in JSON Lines), records no encoder writes
whole, names with "/" and control characters, and who may read what.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance import _decisions as deciding
from clearance._clock import ManualClock, now_us
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store import _events as events
from clearance._store import _users as users
from clearance._wire import ApprovalStatus
from clearance.server.routes import decisions as decisions_route

from .test_hostile_records import HOSTILE, NOT_JSON

POLICY = """\
version: 1
tools:
  issue_refund:
    params:
      amount: number
      order_id: string
      meta: {type: map, required: false}
      card_number: {type: string, required: false}
    rules:
      - id: big
        when: args.amount > 200
        effect: require_approval
        reason: big refund
        approval:
          timeout: 30m
          grants: {scopes: [session, agent], max_duration: 8h, max_calls: 20}
  db/drop:
    rules:
      - {id: drop, effect: require_approval, reason: dropping a table, approval: {timeout: 30m}}
redact:
  issue_refund: [/card_number]
"""
PASSWORD = "correct horse battery staple"
MINUTE = 60_000_000


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@pytest.fixture
def keys(client: TestClient, make_key: Any) -> dict[str, dict[str, str]]:
    found = {
        "admin": {"X-API-Key": make_key("admin", agent=None)},
        "approver": {"X-API-Key": make_key("approver", agent=None)},
        "agent": {"X-API-Key": make_key("agent", agent="refunds")},
        "other": {"X-API-Key": make_key("agent", agent="mailer")},
    }
    rev = client.post("/v1/policies", headers=found["admin"], json={"text": POLICY}).json()["id"]
    assert client.post(f"/v1/policies/{rev}/activate", headers=found["admin"], json={}).status_code == 200
    return found


def ask(
    client: TestClient,
    keys: dict[str, Any],
    amount: float = 355.08,
    *,
    session: str = "s1",
    who: str = "agent",
    tool: str = "issue_refund",
    **more: Any,
) -> str:
    args = {"amount": amount, "order_id": "A-1", **more} if tool == "issue_refund" else {"table": "orders"}
    body = {"tool": tool, "args": args, "session_id": session, "approval_mode": "async"}
    r = client.post("/v1/check", headers=keys[who], json=body)
    assert r.status_code == 200, r.text
    assert r.json()["decision"] == "require_approval", r.json()
    return str(r.json()["approval_id"])


def decide(client: TestClient, keys: dict[str, Any], approval_id: str, verb: str = "approve", **body: Any) -> Any:
    r = client.post(f"/v1/approvals/{approval_id}/{verb}", headers=keys["approver"], json=body)
    assert r.status_code == 200, r.text
    return r.json()


def history(client: TestClient, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    r = client.get("/v1/decisions", headers=headers, params={"limit": 100, **params})
    assert r.status_code == 200, r.text
    assert r.json()["next_cursor"] is None
    return list(r.json()["decisions"])


def by_id(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["approval_id"]: d for d in found}


def test_every_outcome_says_who_decided_the_note_the_edit_and_the_wait(
    clock: ManualClock, client: TestClient, keys: dict[str, Any], server_db: str
) -> None:
    approver = client.get("/v1/me", headers=keys["approver"]).json()
    edited = ask(client, keys)
    clock.advance(90)
    decide(client, keys, edited, args={"amount": 150}, note="half now")
    db = Database(server_db)
    try:
        with db.write() as cur:  # it ran since: still an approval in the history
            assert approvals.finish(db, cur, edited, ApprovalStatus.EXECUTED, now_us=now_us())
        denied = ask(client, keys, 900)
        clock.advance(30)
        decide(client, keys, denied, "deny", note="not without the receipt")
        cancelled = ask(client, keys, 901)
        clock.advance(5)
        deciding.cancel(db, cancelled, why="the caller stopped waiting")
    finally:
        db.close()
    granted = ask(client, keys, 902, session="s2")
    clock.advance(60)
    decide(client, keys, granted, note="fine for today", grant={"scope": "session", "duration": "1h"})
    expired = ask(client, keys, 903)
    clock.advance(31 * 60)

    found = history(client, keys["approver"])  # whoever reads the history expires what is due first
    assert [d["approval_id"] for d in found] == [expired, granted, cancelled, denied, edited]
    d = by_id(found)
    decider = f"key:{approver['name']}:{approver['id']}"
    assert {k: d[edited][k] for k in ("outcome", "status", "decided_by", "note", "waited_us", "edited")} == {
        "outcome": "approved",
        "status": "executed",
        "decided_by": decider,
        "note": "half now",
        "waited_us": 90 * 1_000_000,
        "edited": True,
    }
    assert d[edited]["changes"] == [
        {"path": ["amount"], "kind": "changed", "before": 355.08, "after": 150, "redacted": False}
    ]
    assert d[edited]["decided_at_us"] - d[edited]["requested_at_us"] == 90 * 1_000_000
    assert (d[denied]["outcome"], d[denied]["note"], d[denied]["waited_us"]) == (
        "denied",
        "not without the receipt",
        30 * 1_000_000,
    )
    assert (d[cancelled]["outcome"], d[cancelled]["decided_by"], d[cancelled]["note"]) == (
        "cancelled",
        "refunds",
        "the caller stopped waiting",
    )
    assert (d[expired]["outcome"], d[expired]["decided_by"], d[expired]["waited_us"]) == (
        "expired",
        "system",
        31 * MINUTE,
    )
    assert d[granted]["outcome"] == "granted" and d[granted]["note"] == "fine for today"
    grant = d[granted]["grant"]
    assert (grant["kind"], grant["scope"], grant["status"], grant["max_calls"]) == ("calls", "session", "live", 20)
    assert grant["id"] == client.get("/v1/grants", headers=keys["approver"]).json()[0]["id"]
    for other in (edited, denied, cancelled, expired):
        assert d[other]["grant"] is None and d[other]["degraded"] == []
    for one in found:
        assert (one["tool"], one["agent"], one["environment"], one["reason"]) == (
            "issue_refund",
            "refunds",
            "test",
            "big refund",
        )
        assert one["session"] in ("s1", "s2") and one["rule_ids"] == ["big"]
    assert [x["approval_id"] for x in history(client, keys["approver"], outcome="approved")] == [edited]
    assert [x["approval_id"] for x in history(client, keys["approver"], outcome="granted")] == [granted]
    for outcome, approval_id in (("denied", denied), ("expired", expired), ("cancelled", cancelled)):
        assert [x["approval_id"] for x in history(client, keys["approver"], outcome=outcome)] == [approval_id]


def test_an_edit_lists_each_change_by_its_path_and_hides_redacted_values(
    client: TestClient, keys: dict[str, Any]
) -> None:
    meta = {"items": [{"sku": "X-1", "qty": 2}, {"sku": "X-2", "qty": 1}], "tags": ["storm"], "old": 1}
    approval_id = ask(client, keys, meta=meta, card_number="4111 1111 1111 1111")
    edit = {
        "amount": 150,
        "meta": {"items": [{"sku": "X-1", "qty": 1}], "tags": ["storm", "\u202egpj.exe"], "old": 1, "gift": True},
        "card_number": "5555 5555 5555 4444",  # typed over the redaction mark: hidden, but changed
    }
    decide(client, keys, approval_id, args=edit)
    [d] = history(client, keys["approver"])
    changes = {tuple(c["path"]): (c["kind"], c["before"], c["after"], c["redacted"]) for c in d["changes"]}
    assert changes == {
        ("amount",): ("changed", 355.08, 150, False),
        ("card_number",): ("changed", "[REDACTED]", "[REDACTED]", True),
        ("meta", "items", 0, "qty"): ("changed", 2, 1, False),
        ("meta", "items", 1): ("removed", {"sku": "X-2", "qty": 1}, None, False),
        ("meta", "tags", 1): ("added", None, "\u202egpj.exe", False),
        ("meta", "gift"): ("added", None, True, False),
    }
    assert "4111" not in json.dumps(d) and "5555" not in json.dumps(d)

    text = client.get("/v1/decisions/export", headers=keys["approver"], params={"format": "csv"}).text
    [row] = list(csv.DictReader(io.StringIO(text)))
    assert "amount: 355.08 → 150" in row["changes"]
    assert "meta.items[0].qty: 2 → 1" in row["changes"]
    assert 'meta.tags[1]: (none) → "\u202egpj.exe"' in row["changes"]
    assert 'meta.items[1]: {"qty": 1, "sku": "X-2"} → (none)' in row["changes"]
    assert "4111" not in text and "5555" not in text


def test_an_approval_without_an_edit_lists_no_changes(client: TestClient, keys: dict[str, Any]) -> None:
    approval_id = ask(client, keys)
    decide(client, keys, approval_id, args={"amount": 355.08})  # "edited" to what it was
    [d] = history(client, keys["approver"])
    assert d["changes"] == [] and d["changes_left_out"] == 0


def test_many_changes_are_listed_up_to_fifty_and_counted(client: TestClient, keys: dict[str, Any]) -> None:
    approval_id = ask(client, keys, meta={f"k{i:03d}": i for i in range(120)})
    decide(client, keys, approval_id, args={"meta": {f"k{i:03d}": -i - 1 for i in range(120)}})
    [d] = history(client, keys["approver"])
    assert len(d["changes"]) == 50 and d["changes_left_out"] == 70
    assert d["changes"][0] == {"path": ["meta", "k000"], "kind": "changed", "before": 0, "after": -1, "redacted": False}


def test_filters_by_decider_tool_agent_session_and_time(
    clock: ManualClock, client: TestClient, keys: dict[str, Any], make_key: Any
) -> None:
    other_approver = {"X-API-Key": make_key("approver", agent=None)}
    first = ask(client, keys, session="team/a/1")
    decide(client, keys, first, "deny")
    clock.advance(3600)
    middle_at = now_us()
    dropped = ask(client, keys, tool="db/drop", session="team/b")
    r = client.post(f"/v1/approvals/{dropped}/approve", headers=other_approver, json={})
    assert r.status_code == 200, r.text
    clock.advance(3600)
    mailed = ask(client, keys, who="other", session="team/a/1")
    decide(client, keys, mailed)

    a = keys["approver"]
    ids = [d["approval_id"] for d in history(client, a)]
    assert ids == [mailed, dropped, first]
    someone = history(client, a)[0]["decided_by"]
    assert [d["approval_id"] for d in history(client, a, decider=someone)] == [mailed, first]
    assert [d["approval_id"] for d in history(client, a, tool="db/drop")] == [dropped]
    assert [d["approval_id"] for d in history(client, a, agent="mailer")] == [mailed]
    assert [d["approval_id"] for d in history(client, a, session="team/a/1")] == [mailed, first]
    assert [d["approval_id"] for d in history(client, a, since_us=middle_at)] == [mailed, dropped]
    assert [d["approval_id"] for d in history(client, a, until_us=middle_at)] == [first]
    assert [d["approval_id"] for d in history(client, a, since_us=middle_at, until_us=middle_at + 1)] == [dropped]
    assert history(client, a, session="team/a/1", tool="db/drop") == []
    assert history(client, a, decider="user:nobody") == []
    for bad in (
        {"outcome": "pending"},
        {"outcome": "executed"},
        {"since_us": -1},
        {"until_us": 2**63},
        {"limit": 0},
        {"limit": 101},
    ):
        r = client.get("/v1/decisions", headers=a, params=bad)
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == "invalid_parameter"


def test_pages_go_newest_first_without_gaps_or_repeats_even_at_one_instant(
    clock: ManualClock, client: TestClient, keys: dict[str, Any]
) -> None:
    asked = [ask(client, keys, 300 + i) for i in range(7)]
    for approval_id in asked:  # the clock stands still: every decision at the same microsecond
        decide(client, keys, approval_id, "deny")
    seen: list[str] = []
    cursor = None
    sizes = []
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/decisions", headers=keys["approver"], params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        sizes.append(len(page["decisions"]))
        seen += [d["approval_id"] for d in page["decisions"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == sorted(asked, reverse=True)
    for bad in ("x", "1", "1.", ".apr_1", "99999999999999999999.apr_1", "9223372036854775808.apr_1", "1.a\x00b"):
        r = client.get("/v1/decisions", headers=keys["approver"], params={"cursor": bad})
        assert r.status_code == 422, (bad, r.text)


def test_the_export_streams_the_filter_with_formulas_defused_and_hidden_characters_escaped(
    client: TestClient, keys: dict[str, Any]
) -> None:
    notes = ['=HYPERLINK("http://evil.example","click")', "+1+1", "-2", "@SUM(A1)", "plain, with\nnewline \u202eevil"]
    made = []
    for i, note in enumerate(notes):
        made.append(ask(client, keys, 300 + i))
        decide(client, keys, made[-1], "deny", note=note)
    kept = ask(client, keys, 400, who="other")
    decide(client, keys, kept)

    r = client.get("/v1/decisions/export", headers=keys["approver"], params={"format": "csv", "outcome": "denied"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'filename="clearance-decisions.csv"' in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [row["approval_id"] for row in rows] == made[::-1]
    assert [row["note"] for row in rows][::-1] == [
        '\'=HYPERLINK("http://evil.example","click")',
        "'+1+1",
        "'-2",
        "'@SUM(A1)",
        "plain, with\nnewline \u202eevil",
    ]
    assert {row["outcome"] for row in rows} == {"denied"} and all(row["decided_at"].endswith("Z") for row in rows)
    assert all(float(row["waited_s"]) >= 0 for row in rows)

    r = client.get("/v1/decisions/export", headers=keys["approver"])
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = r.text.splitlines()
    assert len(lines) == 6 and "\u202e" not in r.text and "\\u202e" in r.text
    parsed = [json.loads(line) for line in lines]
    assert parsed[0]["approval_id"] == kept and parsed[0]["agent"] == "mailer"
    assert parsed[1]["note"] == "plain, with\nnewline \u202eevil"
    assert set(parsed[1]) == set(client.get("/v1/decisions", headers=keys["approver"]).json()["decisions"][0])


def _stored_decision(
    db: Database,
    cur: Any,
    *,
    session: str,
    tool: str,
    args: str | None,
    edited: str | None,
    status: str = "approved",
    **more: Any,
) -> str:
    approval_id = events.new_id("apr")
    at = now_us()
    approvals.insert(
        db,
        cur,
        {
            "id": approval_id,
            "call_id": events.new_id("call"),
            "status": status,
            "tool": tool,
            "agent": "refunds",
            "environment": "test",
            "session": session,
            "args_json": NOT_JSON if args is None else args,
            "args_hash": "0" * 64,
            "shown_args_json": NOT_JSON if args is None else args,
            "rule_ids": "[]",
            "reason": "older record",
            "policy_revision": "rev",
            "approvers": "[]",
            "on_timeout": "deny",
            "created_at_us": at - 5_000_000,
            "expires_at_us": at + 3_600_000_000,
            "decided_by": "user:\u202eecila",
            "decided_at_us": at,
            "note": "=cmd|' /C calc'!A0",
            "edited_args_json": edited,
            "edited_shown_json": edited,
            "edited_args_hash": "1" * 64 if edited else None,
            **more,
        },
    )
    return approval_id


def test_a_call_let_through_on_timeout_is_its_own_outcome(
    client: TestClient, keys: dict[str, Any], server_db: str
) -> None:
    db = Database(server_db)
    try:
        with db.write() as cur:
            let = _stored_decision(
                db, cur, session="t", tool="t", args="{}", edited=None, status="expired", on_timeout="allow"
            )
            shut = _stored_decision(db, cur, session="t", tool="t", args="{}", edited=None, status="expired")
    finally:
        db.close()
    found = by_id(history(client, keys["approver"]))
    assert (found[let]["outcome"], found[shut]["outcome"]) == ("allowed_on_timeout", "expired")
    assert [d["approval_id"] for d in history(client, keys["approver"], outcome="allowed_on_timeout")] == [let]
    assert [d["approval_id"] for d in history(client, keys["approver"], outcome="expired")] == [shut]
    text = client.get("/v1/decisions/export?format=csv", headers=keys["admin"]).text
    rows = {row["approval_id"]: row for row in csv.DictReader(io.StringIO(text))}
    assert (rows[let]["outcome"], rows[let]["on_timeout"], rows[shut]["on_timeout"]) == (
        "allowed_on_timeout",
        "allow",
        "deny",
    )
    assert "error" in rows[let]


def test_a_stored_row_that_does_not_read_is_shown_marked_and_an_export_that_fails_says_so(
    client: TestClient, keys: dict[str, Any], server_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sqlite = "://" not in server_db
    db = Database(server_db)
    try:
        with db.write() as cur:
            made = [_stored_decision(db, cur, session="r", tool="t", args="{}", edited=None) for _ in range(3)]
            if (
                server_db.startswith(("sqlite", "/")) or "://" not in server_db
            ):  # PostgreSQL's columns refuse text times
                cur.execute(db.sql("UPDATE approvals SET finished_at_us = 'x' WHERE id = :a"), {"a": made[0]})
                cur.execute(db.sql("UPDATE approvals SET decided_at_us = 'soon' WHERE id = :a"), {"a": made[1]})
    finally:
        db.close()
    if sqlite:
        found = by_id(history(client, keys["approver"]))
        assert found[made[0]]["degraded"] and found[made[1]]["degraded"] and not found[made[2]]["degraded"]
        r = client.get("/v1/decisions", headers=keys["approver"], params={"limit": 1})
        assert r.status_code == 200 and r.json()["next_cursor"]
    real = decisions_route._csv_row
    calls = []

    def failing(d: Any) -> list[str]:
        calls.append(d)
        if len(calls) == 2:
            raise ValueError("boom")
        return real(d)

    monkeypatch.setattr(decisions_route, "_csv_row", failing)
    r = client.get("/v1/decisions/export?format=csv", headers=keys["admin"])
    assert r.status_code == 200 and r.text.splitlines()[-1].startswith("# error: export stopped early")
    assert len(r.text.splitlines()) == 3


def test_records_no_encoder_writes_whole_and_names_with_slashes_and_control_characters(
    client: TestClient, keys: dict[str, Any], server_db: str
) -> None:
    made: dict[str, str] = {}
    db = Database(server_db)
    try:
        with db.write() as cur:
            for name, text in HOSTILE.items():  # as proposed, and as edited into
                made[f"args-{name}"] = _stored_decision(db, cur, session=f"a-{name}", tool="t", args=text, edited="{}")
                made[f"edit-{name}"] = _stored_decision(
                    db, cur, session=f"e-{name}", tool="t", args='{"a":1}', edited=text if text else NOT_JSON
                )
            odd = _stored_decision(
                db, cur, session="team/\x07bell\x1b[31m/\u202eevil", tool="db/\x1bdrop", args='{"a":1}', edited=None
            )
            # A status no version writes is no outcome (left out); a grant row no version writes is not shown.
            _stored_decision(db, cur, session="bogus", tool="t", args="{}", edited=None, status="bogus")
            unreadable_grant = _stored_decision(db, cur, session="g", tool="t", args="{}", edited=None)
            cur.execute(
                db.sql(
                    "INSERT INTO grants (id, kind, scope, agent, environment, rule_ids, constraints_json, max_total,"
                    " calls_used, total_used, approval_id, granted_by, created_at_us, expires_at_us) VALUES"
                    " ('grt_x', 'calls', 'agent', 'refunds', 'test', '[]', 'not json', 'NaN?', 0, '0', :a, 'x', 0, 1)"
                ),
                {"a": unreadable_grant},
            )
    finally:
        db.close()
    for role in ("admin", "approver", "agent"):
        found = by_id(history(client, keys[role]))
        assert set(made.values()) | {odd} <= set(found), role
    found = by_id(history(client, keys["approver"]))
    assert "bogus" not in {d["session"] for d in found.values()} and len(found) == len(made) + 2
    assert found[unreadable_grant]["grant"] is None
    unreadable = found[made["edit-not-json"]]
    assert unreadable["edited"] and unreadable["degraded"] and unreadable["changes"]
    assert found[made["edit-dict-1000"]]["degraded"] and found[made["args-surrogate"]]["outcome"] == "approved"
    assert found[made["edit-bidi"]]["changes"][0]["after"] == "safe\u202etxt.exe\u200b\u2066"
    assert found[made["args-big-string"]]["changes"][0]["before"] == "x" * 10_000_000

    [only] = history(client, keys["approver"], session="team/\x07bell\x1b[31m/\u202eevil")
    assert only["approval_id"] == odd and only["tool"] == "db/\x1bdrop" and only["decided_by"] == "user:\u202eecila"
    assert [d["approval_id"] for d in history(client, keys["approver"], tool="db/\x1bdrop")] == [odd]
    for fmt in ("csv", "jsonl"):
        r = client.get("/v1/decisions/export", headers=keys["admin"], params={"format": fmt})
        assert r.status_code == 200, r.text[:300]
        assert "\x1b" not in r.text if fmt == "jsonl" else "db/\x1bdrop" in r.text
    text = client.get("/v1/decisions/export?format=csv", headers=keys["admin"]).text
    limit = csv.field_size_limit(100_000_000)  # the 10 MB argument is one cell
    try:
        rows = list(csv.DictReader(io.StringIO(text)))
    finally:
        csv.field_size_limit(limit)
    assert len(rows) == len(made) + 2
    assert {row["note"] for row in rows} == {"'=cmd|' /C calc'!A0"}


def test_who_may_read_decisions(client: TestClient, keys: dict[str, Any], server_db: str, make_key: Any) -> None:
    mine = ask(client, keys)
    decide(client, keys, mine, "deny", note="for refunds")
    theirs = ask(client, keys, who="other")
    decide(client, keys, theirs, "deny", note="for the mailer")
    db = Database(server_db)
    try:
        users.create(db, "carol", PASSWORD, ["support-lead"], by="test")  # an approver group, not a role
        users.create(db, "dave", PASSWORD, ["approver"], by="test")
    finally:
        db.close()

    for role in ("admin", "approver"):
        assert {d["approval_id"] for d in history(client, keys[role])} == {mine, theirs}
    assert [d["approval_id"] for d in history(client, keys["agent"])] == [mine]
    assert [d["approval_id"] for d in history(client, keys["other"])] == [theirs]
    assert [d["approval_id"] for d in history(client, keys["agent"], agent="refunds")] == [mine]
    for path in ("/v1/decisions", "/v1/decisions/export"):
        r = client.get(path, headers=keys["agent"], params={"agent": "mailer"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        assert client.get(path).status_code == 401
    exported = client.get("/v1/decisions/export", headers=keys["agent"]).text
    assert mine in exported and theirs not in exported and "for the mailer" not in exported

    for username, status in (("carol", 403), ("dave", 200)):
        person = TestClient(client.app)  # the app's store, opened by `client`; cookies of its own
        signed = person.post("/v1/login", json={"username": username, "password": PASSWORD})
        assert signed.status_code == 200, signed.text
        for path in ("/v1/decisions", "/v1/decisions/export"):
            assert person.get(path).status_code == status, (username, path)
    metrics_only = {"X-API-Key": make_key("metrics", agent=None)}  # acts as no agent: reads no decisions
    assert client.get("/v1/decisions", headers=metrics_only).status_code == 403
