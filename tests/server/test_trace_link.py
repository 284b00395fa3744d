"""Links to a record's trace (issue 15): the server tells a signed-in person's dashboard the
`CLEARANCE_TRACE_URL` template and derives nothing from a record's `trace`; the dashboard builds
the link (tests/e2e/test_trace_link.py). On SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from clearance import _trace
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance._store import _events as events
from clearance._store import _keys as keys
from clearance._store import _users as users
from clearance.server import ServerSettings, create_app

from .test_users import PASSWORD

TEMPLATE = "https://langfuse.example/project/p1/traces/{trace_id}?observation={span_id}"
VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# Traces a record can hold that are not what the SDK writes: none may ever become a link.
# Strings of at most 56 characters (an approval's column holds 55: the longer one is a record's only).
HOSTILE: dict[str, str] = {
    "upper-case": "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",
    "version-01": "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "version-ff": "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "zero-trace": "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
    "zero-span": "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
    "short-flags": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
    "newline": VALID[:-1] + "\n",
    "trailing-newline": VALID + "\n",
    "bidi": VALID[:-1] + "\u202e",
    "fullwidth-digit": VALID[:-1] + "\uff11",
    "javascript": "javascript:alert(document.domain)//",
    "markup": '00-4bf92f3577b34da6a3ce929d0e0e4736-"><img src=x>-01',
    "placeholder": "00-{trace_id}-00f067aa0ba902b7-01",
    "url": "https://evil.example/00f067aa0ba902b7",
    "empty": "",
}
NOT_STRINGS: dict[str, Any] = {"number": 12345, "object": {"trace_id": VALID[3:35]}, "list": [VALID], "null": None}


def test_the_cases_are_hostile() -> None:
    assert _trace.checked(VALID) == VALID
    assert all(_trace.checked(v) is None for v in [*HOSTILE.values(), *NOT_STRINGS.values()])
    assert all(len(v) <= 56 for v in HOSTILE.values())


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store  # on SQLite and PostgreSQL


def _app(server_db: str, trace_url: str | None) -> Iterator[TestClient]:
    db = Database(server_db)
    users.create(db, "alice", PASSWORD, ["admin", "approver"], by="test")
    db.close()
    app = create_app(ServerSettings(database_url=server_db, trace_url=trace_url))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def linked(server_db: str) -> Iterator[TestClient]:
    """The app with a trace URL template."""
    yield from _app(server_db, TEMPLATE)


@pytest.fixture
def unlinked(server_db: str) -> Iterator[TestClient]:
    """The app without one."""
    yield from _app(server_db, None)


def _sign_in(client: TestClient) -> dict[str, Any]:
    r = client.post("/v1/login", json={"username": "alice", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_the_session_carries_the_template(linked: TestClient) -> None:
    signed = _sign_in(linked)
    assert signed["trace_url"] == TEMPLATE
    again = linked.get("/v1/session")
    assert again.status_code == 200 and again.json()["trace_url"] == TEMPLATE  # a reloaded page learns it too


def test_without_a_template_the_session_carries_none(unlinked: TestClient) -> None:
    assert _sign_in(unlinked)["trace_url"] is None
    assert unlinked.get("/v1/session").json()["trace_url"] is None


def test_only_a_signed_in_person_learns_the_template(linked: TestClient) -> None:
    nobody = linked.get("/v1/session")
    assert nobody.status_code == 401 and "langfuse.example" not in nobody.text
    wrong = linked.post("/v1/login", json={"username": "alice", "password": "not the password"})
    assert wrong.status_code == 401 and "langfuse.example" not in wrong.text
    _sign_in(linked)
    linked.post("/v1/logout", headers={"X-CSRF-Token": "x"})
    after = linked.get("/v1/session")
    assert after.status_code == 401 and "langfuse.example" not in after.text


def test_a_template_that_is_not_an_http_url_with_a_trace_id_is_refused() -> None:
    for bad in ("javascript:alert(1)//{trace_id}", "https://langfuse.example/trace/", "https://a b/{trace_id}"):
        with pytest.raises(ValidationError):
            ServerSettings(trace_url=bad)


def _seed(server_db: str) -> tuple[dict[str, int], dict[str, str]]:
    """A decided call per trace (its own session), and an approval per string one."""
    now = time.time_ns() // 1000
    db = Database(server_db)
    made: dict[str, events.Event] = {}
    asked: dict[str, str] = {}
    cases: dict[str, Any] = {"valid": VALID, **HOSTILE, **NOT_STRINGS}
    with db.write() as cur:
        for name, trace in cases.items():
            fields = {"agent": "bot", "environment": "test", "session": f"s-{name}", "tool": "t", "decision": "allow"}
            made[name] = events.make_event("tool_call.decided", now, {**fields, "trace": trace})
            events.append(db, cur, [made[name]])
            if not isinstance(trace, str) or len(trace) > 55:
                continue
            asked[name] = events.new_id("apr")
            approvals.insert(
                db,
                cur,
                {
                    "id": asked[name],
                    "call_id": events.new_id("call"),
                    "status": "pending",
                    "tool": "t",
                    "agent": "bot",
                    "environment": "test",
                    "session": f"s-{name}",
                    "args_json": "{}",
                    "args_hash": "0" * 64,
                    "shown_args_json": "{}",
                    "rule_ids": "[]",
                    "reason": "r",
                    "policy_revision": "rev",
                    "approvers": "[]",
                    "on_timeout": "deny",
                    "created_at_us": now,
                    "expires_at_us": now + 3_600_000_000,
                    "trace_context": trace,
                },
            )
    seqs = {e.body["session"].removeprefix("s-"): e.seq for e in events.query(db, events.EventFilter(agent="bot"))}
    db.close()
    return seqs, asked


def test_records_and_approvals_are_sent_as_stored_and_nothing_is_derived_from_them(
    linked: TestClient, server_db: str
) -> None:
    """The server hands each `trace` over untouched (the dashboard checks it) and builds no link itself."""
    seqs, asked = _seed(server_db)
    _sign_in(linked)
    cases: dict[str, Any] = {"valid": VALID, **HOSTILE, **NOT_STRINGS}
    for name, trace in cases.items():
        for path in (f"/v1/events/{seqs[name]}", f"/v1/sessions/s-{name}"):
            r = linked.get(path)
            assert r.status_code == 200, r.text
            record = r.json()["event"] if path.startswith("/v1/events") else r.json()[0]
            assert record["trace"] == trace, (name, path)
            assert "langfuse.example" not in r.text, (name, path)
        if name in asked:
            r = linked.get(f"/v1/approvals/{asked[name]}")
            assert r.status_code == 200 and r.json()["trace"] == trace, (name, r.text)
            assert "langfuse.example" not in r.text
    listed = linked.get("/v1/events", params={"agent": "bot", "limit": 100})
    assert listed.status_code == 200 and "langfuse.example" not in listed.text


def test_ingest_never_stores_a_hostile_trace_as_a_records_trace(linked: TestClient, server_db: str) -> None:
    """An agent sending a trace that is not a traceparent: the record is stored, without it."""
    db = Database(server_db)
    _, agent = keys.create(db, name="g", scopes=["agent"], agent="bot", environment="test", created_by="t")
    db.close()
    batch = [
        {
            "v": 1,
            "id": "evt_" + events.new_id("evt")[4:],
            "kind": "tool_call.finished",
            "at_us": time.time_ns() // 1000,
            "session": f"s-{name}",
            "tool": "t",
            "call_id": f"call_{i}",
            "decision": "ok",
            "duration_ms": 1.0,
            "trace": trace,
        }
        for i, (name, trace) in enumerate({**HOSTILE, **NOT_STRINGS}.items())
    ]
    r = linked.post("/v1/events", headers={"X-API-Key": agent}, json={"events": batch})
    assert r.status_code == 200 and r.json() == {"appended": len(batch), "duplicates": 0, "refused": []}, r.text
    _sign_in(linked)
    found = linked.get("/v1/events", params={"agent": "bot", "kind": "tool_call.finished", "limit": 1000}).json()
    assert len(found["events"]) == len(batch)
    assert all("trace" not in e for e in found["events"]), [e.get("trace") for e in found["events"]]
