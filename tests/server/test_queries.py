from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store import _keys as keys
from clearance._store._events import new_id

from ..conftest import run_cli


@pytest.fixture
def seeded(client: TestClient, make_key: Any) -> dict[str, dict[str, str]]:
    k = {
        "admin": {"X-API-Key": make_key("admin", agent=None)},
        "refunds": {"X-API-Key": make_key("agent", agent="refunds")},
        "mailer": {"X-API-Key": make_key("agent", agent="mailer")},
    }
    rev = client.post(
        "/v1/policies", headers=k["admin"], json={"text": "version: 1\ntools:\n  db.drop: {default: block}\n"}
    ).json()["id"]
    client.post(f"/v1/policies/{rev}/activate", headers=k["admin"], json={})
    for i in range(5):
        client.post(
            "/v1/check",
            headers=k["refunds"],
            json={
                "tool": "issue_refund",
                "args": {"order_id": f"A-{i}", "note": "100% refund_"},
                "session_id": "s-refunds",
            },
        )
    client.post("/v1/check", headers=k["refunds"], json={"tool": "db.drop", "session_id": "s-refunds"})
    client.post(
        "/v1/check",
        headers=k["mailer"],
        json={"tool": "send_email", "args": {"to": "a@acme.com"}, "session_id": "s-mail"},
    )
    now = time.time_ns() // 1000
    llm = [
        {
            "id": new_id("evt"),
            "kind": "llm.call",
            "at_us": now,
            "session": "s-refunds",
            "model": "gpt-4o",
            "input_tokens": 1000,
            "output_tokens": 100,
            "tokens": 1100,
            "cost_usd": "0.0035",
            "cost_nusd": 3_500_000,
        },
        {
            "id": new_id("evt"),
            "kind": "llm.call",
            "at_us": now,
            "session": "s-refunds",
            "model": "mystery",
            "input_tokens": 10,
            "output_tokens": 1,
            "tokens": 11,
            "cost_usd": None,
            "cost_nusd": None,
        },
    ]
    assert client.post("/v1/events", headers=k["refunds"], json={"events": llm}).status_code == 200
    return k


def test_search_filters_text_and_cursor_paging(client: TestClient, seeded: dict[str, Any]) -> None:
    admin = seeded["admin"]
    page = client.get("/v1/events?tool=issue_refund&kind=tool_call.decided&limit=2", headers=admin).json()
    seen = [e["args"]["order_id"] for e in page["events"]]
    while page["next_cursor"]:
        page = client.get(
            f"/v1/events?tool=issue_refund&kind=tool_call.decided&limit=2&cursor={page['next_cursor']}", headers=admin
        ).json()
        seen += [e["args"]["order_id"] for e in page["events"]]
    assert seen == ["A-4", "A-3", "A-2", "A-1", "A-0"]  # newest first, no gaps, no repeats
    hits = client.get("/v1/events", headers=admin, params={"q": "100% refund_"}).json()["events"]
    assert len(hits) == 5
    assert client.get("/v1/events", headers=admin, params={"q": "1%0"}).json()["events"] == []  # % is literal
    blocked = client.get("/v1/events?decision=block", headers=admin).json()["events"]
    assert [e["tool"] for e in blocked] == ["db.drop"]
    assert client.get("/v1/events?cursor=abc", headers=admin).status_code == 422


def test_agent_keys_read_only_their_own_agent(client: TestClient, seeded: dict[str, Any]) -> None:
    mailer = seeded["mailer"]
    assert {e["agent"] for e in client.get("/v1/events", headers=mailer).json()["events"]} == {"mailer"}
    assert client.get("/v1/events?agent=refunds", headers=mailer).status_code == 403
    assert [s["session"] for s in client.get("/v1/sessions", headers=mailer).json()] == ["s-mail"]
    assert client.get("/v1/sessions/s-refunds", headers=mailer).status_code == 404
    assert {u["key"] for u in client.get("/v1/usage", headers=mailer).json()} == set()
    assert client.get("/v1/audit/verify", headers=mailer).status_code == 403


def test_sessions_and_usage(client: TestClient, seeded: dict[str, Any]) -> None:
    admin = seeded["admin"]
    sessions = {s["session"]: s for s in client.get("/v1/sessions", headers=admin).json()}
    s = sessions["s-refunds"]
    assert (s["agent"], s["tool_calls"], s["blocked"], s["llm_calls"], s["unpriced_llm_calls"]) == (
        "refunds",
        6,
        1,
        2,
        1,
    )
    assert s["cost_usd"] == "0.0035"
    replay = client.get("/v1/sessions/s-refunds", headers=admin).json()
    assert [e["seq"] for e in replay] == sorted(e["seq"] for e in replay) and len(replay) == 8
    usage = {u["key"]: u for u in client.get("/v1/usage?by=model", headers=admin).json()}
    assert usage["gpt-4o"]["cost_usd"] == "0.0035" and usage["mystery"]["unpriced_calls"] == 1
    assert usage["mystery"]["cost_usd"] == "0"
    assert client.get("/v1/usage?by=colour", headers=admin).status_code == 422


def test_verify_over_the_api(client: TestClient, seeded: dict[str, Any], server_db: str) -> None:
    report = client.get("/v1/audit/verify", headers=seeded["admin"]).json()
    assert report["ok"] and report["checked"] > 8
    with sqlite3.connect(server_db) as conn:
        conn.execute("UPDATE events SET body = replace(body, 'A-2', 'A-9') WHERE body LIKE '%A-2%'")
    report = client.get("/v1/audit/verify", headers=seeded["admin"]).json()
    assert not report["ok"] and "does not match its hash" in report["problem"]


def test_audit_verify_server_command(live_server: tuple[str, Path]) -> None:
    base, db_path = live_server
    db = Database(str(db_path))
    _, admin = keys.create(db, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")
    _, agent = keys.create(db, name="b", scopes=["agent"], agent="x", environment="test", created_by="t")
    db.close()
    ok = run_cli("audit", "verify", "--server", base, "--api-key", admin)
    assert ok.returncode == 0 and ok.stdout.startswith("ok: ")
    denied = run_cli("audit", "verify", "--server", base, "--api-key", agent)
    assert denied.returncode == 1 and "answered 403: this key lacks the 'admin' scope" in denied.stderr
    assert run_cli("audit", "verify", "--server", base).returncode == 2
    gone = run_cli("audit", "verify", "--server", "http://127.0.0.1:9", "--api-key", admin)
    assert gone.returncode == 1 and "cannot reach" in gone.stderr
    assert httpx.get(f"{base}/v1/events", headers={"X-API-Key": admin}).status_code == 200


def test_numbers_beyond_64_bits_are_invalid_input_not_errors(client: TestClient, seeded: dict[str, Any]) -> None:
    admin = seeded["admin"]
    for params in ({"since_us": 2**70}, {"until_us": 2**63}, {"cursor": "9" * 19}):
        r = client.get("/v1/events", headers=admin, params=params)
        assert r.status_code == 422, params
    assert client.get("/v1/usage", headers=admin, params={"since_us": 2**64}).status_code == 422
    late = {"id": new_id("evt"), "kind": "tool_call.finished", "at_us": 2**64, "decision": "ok"}
    r = client.post("/v1/events", headers=seeded["refunds"], json={"events": [late]})
    assert r.status_code == 200 and r.json()["appended"] == 0  # refused alone, with why
    assert r.json()["refused"][0]["problems"][0].startswith("at_us: ")
