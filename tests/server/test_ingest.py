from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clearance import _archive
from clearance._store import Database
from clearance._store._events import EventFilter, new_id, query, verify
from clearance.server import ServerSettings, create_app

from .conftest import post_raw


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store  # every ingest test runs on SQLite and PostgreSQL


def event(kind: str = "tool_call.finished", **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "v": 1,
        "id": "evt_" + new_id("evt")[4:],
        "kind": kind,
        "at_us": time.time_ns() // 1000,
        "session": "s1",
    }
    if kind == "tool_call.finished":
        base.update(tool="t", call_id="call_x", decision="ok", duration_ms=1.5)
    if kind == "llm.call":
        base.update(
            model="gpt-4o",
            input_tokens=10,
            output_tokens=2,
            tokens=12,
            cost_usd="0.001",
            cost_nusd=1_000_000,
            priced=True,
        )
    return {**base, **fields}


def ingested(db: Database) -> list[Any]:
    """The agents' events (not the key.created records of the keys the test made)."""
    return [e for e in query(db, EventFilter()) if not e.body["kind"].startswith("key.")]


def test_ingest_is_idempotent_and_chained(client: TestClient, make_key: Any, server_db: str) -> None:
    agent = {"X-API-Key": make_key("agent", agent="refunds", environment="live")}
    batch = [event(), event("llm.call"), event(decision="error", error="boom")]
    assert client.post("/v1/events", headers=agent, json={"events": batch}).json() == {
        "appended": 3,
        "duplicates": 0,
        "refused": [],
    }
    again = client.post("/v1/events", headers=agent, json={"events": [*batch, event()]}).json()
    assert again == {"appended": 1, "duplicates": 3, "refused": []}
    twice_in_one = event()
    assert client.post("/v1/events", headers=agent, json={"events": [twice_in_one, twice_in_one]}).json() == {
        "appended": 1,
        "duplicates": 1,
        "refused": [],
    }
    db = Database(server_db)
    stored = [e.body for e in ingested(db)]
    assert len(stored) == 5 and verify(db).ok
    assert {(e["agent"], e["environment"]) for e in stored} == {("refunds", "live")}
    assert stored[1]["kind"] == "llm.call" and "call_id" not in stored[1]
    db.close()


def test_a_large_batch_is_stored_in_order_with_its_columns(make_key: Any, server_db: str) -> None:
    """A batch of hundreds goes to PostgreSQL by COPY: the chain keeps the batch's order, and the
    columns (a model name with tabs, newlines, backslashes, quotes and a right-to-left override,
    usage counts, none at all) read back as the records say."""
    agent = {"X-API-Key": make_key("agent", agent="bulk", environment="live")}
    hostile = "a\tb\nc\\N\\.\r'\"\u202e;--"
    batch = [
        event("llm.call", session=f"s-{i}", model=f"m{hostile}{i % 3}", input_tokens=i, cost_nusd=i * 7)
        if i % 4 == 0
        else event(session=f"s-{i}", tool=f"tool.{i}", error=hostile if i % 5 == 0 else None)
        for i in range(300)
    ]
    for e in batch:
        if e.get("error") is None:
            e.pop("error", None)
    app = create_app(ServerSettings(database_url=server_db))  # the default body limit: 300 records fit
    with TestClient(app, raise_server_exceptions=False) as client:
        answer = client.post("/v1/events", headers=agent, json={"events": batch}).json()
    assert answer == {"appended": 300, "duplicates": 0, "refused": []}
    db = Database(server_db)
    try:
        stored = ingested(db)
        assert [e.body["id"] for e in stored] == [e["id"] for e in batch]  # the chain's order is the batch's
        assert [e.body.get("error") for e in stored] == [hostile if i % 20 in (5, 10, 15) else None for i in range(300)]
        assert verify(db).ok
        with db.read() as cur:
            cur.execute(
                db.sql(
                    "SELECT session, tool, model, input_tokens, cost_nusd FROM events"
                    " WHERE agent = :a AND kind IN ('tool_call.finished', 'llm.call') ORDER BY seq"
                ),
                {"a": "bulk"},  # the key's own record (`key.created`) names the agent too
            )
            rows = [tuple(r) for r in cur.fetchall()]
        assert rows == [
            (f"s-{i}", None, f"m{hostile}{i % 3}", i, i * 7)
            if i % 4 == 0
            else (f"s-{i}", f"tool.{i}", None, None, None)
            for i in range(300)
        ]
    finally:
        db.close()


# Pieces of text that COPY's text format, JSON, SQL or a terminal treat specially; and what no store keeps.
_PIECES = ["\\N", "\\.", "\\", "\t", "\n", "\r", "\u202e", "'", '"', "\x7f", "\x1b[2J", "é", "𝄞", ";--"]
STORABLE = st.lists(
    st.one_of(
        st.sampled_from(_PIECES),
        st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=4),
    ),
    max_size=6,
).map("".join)
UNSTORABLE = st.sampled_from(["\x00", "\ud800", "a\udfffb"])
TOOLS = st.sampled_from(["t", "it's", "a:b/c", "x___drop", "n.1"])  # as tool names are recorded (folded)
SESSIONS = st.sampled_from(["s", "it's", "a\\b", "\\N", 'x"y', "é𝄞", "s;--", "\\."])  # ids hold no control character


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(SESSIONS, STORABLE, TOOLS, UNSTORABLE), min_size=24, max_size=40))
def test_hostile_text_in_a_copied_batch_reads_back_as_sent_or_is_refused(
    make_key: Any, server_db: str, texts: list[tuple[str, str, str, str]]
) -> None:
    """Batches large enough to go to PostgreSQL by COPY, with hostile text in the columns and the
    body: each record is stored exactly as sent (body and columns) or refused with a reason (every
    fifth holds what no store keeps), never a 5xx, and the chain verifies."""
    agent = {"X-API-Key": make_key("agent", agent="fuzz", environment="live")}
    batch = []
    for i, (a, b, tool, bad) in enumerate(texts):
        error = b + bad if i % 5 == 4 else b
        if i % 3 == 0:
            batch.append(event("llm.call", session=a, model=(error or "m")[:200]))
        else:
            batch.append(event(session=a, tool=tool, error=error[:4000]))
    app = create_app(ServerSettings(database_url=server_db))
    with TestClient(app, raise_server_exceptions=False) as client:
        response = post_raw(client, "/v1/events", {"events": batch}, agent)
    assert response.status_code == 200, response.text
    answer = response.json()
    refused = {r["index"] for r in answer["refused"]}
    unexpected = [r for r in answer["refused"] if r["index"] % 5 != 4]
    assert refused == {i for i in range(len(batch)) if i % 5 == 4}, unexpected
    assert answer["appended"] == len(batch) - len(refused) >= 16  # enough for COPY
    db = Database(server_db)
    try:
        stored = {e.body["id"]: e for e in ingested(db)}
        with db.read() as cur:
            cur.execute(db.sql("SELECT id, session, tool, model FROM events WHERE agent = 'fuzz'"), {})
            columns = {r[0]: tuple(r[1:]) for r in cur.fetchall()}
        for i, sent in enumerate(batch):
            if i in refused:
                assert sent["id"] not in stored
                continue
            body = stored[sent["id"]].body
            for name in ("session", "tool", "model", "error"):
                assert body.get(name) == sent.get(name), (i, name)
            assert columns[sent["id"]] == (sent["session"], sent.get("tool"), sent.get("model"))
        assert verify(db).ok
    finally:
        db.close()


def test_a_record_resent_after_its_original_was_archived_is_a_duplicate(
    client: TestClient, make_key: Any, server_db: str, tmp_path: Path
) -> None:
    """A spool retry or a lost acknowledgement re-sends records archived since: nothing is appended twice."""
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    batch = [event(), event("llm.call"), event(decision="error", error="boom")]
    assert client.post("/v1/events", headers=agent, json={"events": batch}).json()["appended"] == 3
    tip = event()  # the newest record never leaves: archive everything before it
    assert client.post("/v1/events", headers=agent, json={"events": [tip]}).json()["appended"] == 1
    db = Database(server_db)
    try:
        done = _archive.archive(db, tmp_path / "arch", before_us=time.time_ns() // 1000 + 10**9, past_sinks=True)
        assert done.records >= 3 and [e.body["id"] for e in ingested(db)] == [tip["id"]]
        again = client.post("/v1/events", headers=agent, json={"events": [*batch, tip]}).json()
        assert again == {"appended": 0, "duplicates": 4, "refused": []}
        assert [e.body["id"] for e in ingested(db)] == [tip["id"]]
        report = _archive.check(tmp_path / "arch", db)
        assert report.ok, report.problem
        assert report.records == done.records + len(query(db, EventFilter()))
    finally:
        db.close()


def test_identity_comes_from_the_key(client: TestClient, make_key: Any, server_db: str) -> None:
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    forged = event(agent="someone-else", environment="live")
    assert client.post("/v1/events", headers=agent, json={"events": [forged]}).status_code == 200
    db = Database(server_db)
    [stored] = [e.body for e in ingested(db)]
    assert (stored["agent"], stored["environment"]) == ("refunds", "test")
    db.close()


@pytest.mark.parametrize(
    "bad, problem",
    [
        (event(kind="approval.decided"), "kind: "),
        (event(kind="policy.activated"), "kind: "),
        (event(id="evt_short"), "id: "),
        (event(at_us=-1), "at_us: "),
        (event(colour="red"), "unknown fields for tool_call.finished: colour"),
        (event(cost_nusd=-5), "cost_nusd: "),
        (event(session="s\x00"), "the session id 's\\x00' holds U+0000"),
        (event(session="s\ud800"), "session: "),
        (event(tool="Send-Email"), "not as recorded tool names are written ('send_email')"),
        (event(tool="send\u200bemail"), "U+200B"),
        (event("tool_call.decided", args={"amount": float("nan")}), "record.args.amount is nan"),
        (event("tool_call.decided", args={"to": "\ud800"}), "record.args.to holds a lone surrogate"),
        (event(error="x\x00"), "error: "),  # it lands in the approvals table with the outcome
        (event(approval_id=["apr_x"]), "approval_id: "),
        (event(approval_id="apr_\x00"), "approval_id: "),
        (event(error={"a": 1}), "error: "),
        # An LLM call's usage lands in columns (0019): model names of at most 200 characters
        (
            event("llm.call", model="m" * 201),
            "model: Value error, a model name is 1 to 200 characters; this one is 201",
        ),
        # 3,000 characters: the test server takes bodies of 4 kB
        (event("llm.call", model="m" * 3000), "a model name is 1 to 200 characters; this one is 3,000"),
        (event("llm.call", model="gpt\x00"), "model: "),
        (event("llm.call", model="gpt\ud800"), "model: "),
        (event("llm.call", model=""), "model: Value error, a model name is 1 to 200 characters; this one is 0"),
        (event("llm.call", model=["gpt-4o"]), "model: "),
        (event("llm.call", input_tokens=-1), "input_tokens: "),
        (event("llm.call", output_tokens=2**63), "output_tokens: "),
        (event("llm.call", cached_input_tokens=1.5), "cached_input_tokens: "),
        (event("llm.call", reasoning_tokens="many"), "reasoning_tokens: "),
        (event("llm.call", model="rtl\u202e" + "m" * 196), None),  # 200 characters, the RTL override kept
        (event(call_id="c\x00"), "call_id: "),
        (event(decision="ok\x00"), "decision: "),
        # Said where and which, not "unable to parse raw data as a unicode string" (pydantic-core's
        # words when a length limit is checked in the type, before the boundary's check)
        (event(call_id="c\ud800"), "call_id: Value error, holds a lone surrogate (U+D800) at position 1"),
        (event(decision="o\udfffk"), "decision: Value error, holds a lone surrogate (U+DFFF) at position 1"),
        (event(error="e\udc00" * 30), "error: Value error, holds a lone surrogate (U+DC00) at position 1"),
        (event(call_id="c" * 41), "call_id: Value should have at most 40 items"),
        (
            event("tool_call.decided", args={"a": 1}, args_hash="0" * 64, args_hash_alg="sha256-jcs"),
            "record: its args_hash does not match the arguments it records",
        ),
        (event("tool_call.decided", args={"a": 1}, args_hash="0" * 64, args_hash_alg="md5"), "not one this version"),
        (event("tool_call.decided", args={"k": "x\x00y"}), None),  # inside arguments a NUL is JSON-escaped
    ],
)
def test_a_bad_event_is_refused_alone(
    client: TestClient, make_key: Any, bad: dict[str, Any], problem: str | None, server_db: str
) -> None:
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    good = event()
    r = post_raw(client, "/v1/events", {"events": [good, bad]}, agent)
    assert r.status_code == 200, r.text
    answer = r.json()
    db = Database(server_db)
    stored = [e.body for e in ingested(db)]
    if problem is None:
        assert answer == {"appended": 2, "duplicates": 0, "refused": []}
        assert [e["id"] for e in stored] == [good["id"], bad["id"]]
        assert stored[1].get("args", bad.get("args")) == bad.get("args") and stored[1].get("model") == bad.get("model")
        assert verify(db).ok
        db.close()
        return
    [refusal] = answer["refused"]
    assert answer["appended"] == 1 and refusal["index"] == 1
    assert any(problem in p for p in refusal["problems"]), refusal
    assert [e["kind"] for e in stored] == ["tool_call.finished", "ingest.refused"]
    assert stored[0]["id"] == good["id"] and stored[1]["problems"] == refusal["problems"]
    kept = stored[1]["refused_record"]  # what was sent, in a form every store keeps: nothing is lost
    assert kept["id"] == bad["id"] and set(kept) == set(bad)
    assert verify(db).ok
    # Sent again (the answer was lost): nothing is stored twice, the refusal included.
    again = post_raw(client, "/v1/events", {"events": [good, bad]}, agent).json()
    assert again["appended"] == 0 and again["duplicates"] == 1 and len(again["refused"]) == 1
    assert len(ingested(db)) == 2
    db.close()


def test_only_agent_keys_ingest_and_batches_are_bounded(client: TestClient, make_key: Any) -> None:
    assert (
        client.post(
            "/v1/events", headers={"X-API-Key": make_key("admin", agent=None)}, json={"events": [event()]}
        ).status_code
        == 403
    )
    agent = {"X-API-Key": make_key("agent", agent="refunds")}
    assert client.post("/v1/events", headers=agent, json={"events": []}).status_code == 422
