"""Every reader survives every record (issue 12): records an older version wrote, or someone put in
the database by hand, with values no encoder returns whole. Each is inserted directly into the
store, bypassing the check path; then every reader answers 2xx with a readable body, as admin
and as approver, on SQLite and PostgreSQL, marking (never hiding) where it shows a value differently.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._export import lines
from clearance._store import Database, StoredEvent
from clearance._store import _approvals as approvals
from clearance._store import _events as events
from clearance._store import _keys as keys
from clearance._store import _shown as shown_
from clearance.server import ServerSettings, create_app


def _nested(depth: int, open_: str, close: str) -> str:
    return open_ * depth + "1" + close * depth


# name -> stored JSON text of the arguments (None: a body that is not JSON at all)
HOSTILE: dict[str, str | None] = {
    "dict-300": _nested(300, '{"a":', "}"),
    "list-300": _nested(300, "[", "]"),
    "dict-1000": _nested(1000, '{"a":', "}"),
    "list-1000": '{"a":' + _nested(1000, "[", "]") + "}",
    "big-string": json.dumps({"s": "x" * 10_000_000}),
    "many-keys": json.dumps({f"k{i}": i for i in range(5000)}),
    "nul": '{"a":"x\\u0000y","\\u0000":0}',
    "surrogate": '{"a":"x\\ud800y","\\udfff":"\\udc00"}',
    "bidi": json.dumps({"a": "safe\u202etxt.exe\u200b\u2066"}, ensure_ascii=False),
    "huge-int": '{"a":1180591620717411303424,"b":-1180591620717411303424}',
    "floats": '{"a":1e308,"b":-1e308,"c":1e999,"d":NaN}',
    "not-json": None,
}
NOT_JSON = 'this is {not" JSON \\u'


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "s.db")
    return str(request.getfixturevalue("pg_url"))


def _seed(db: Database) -> dict[str, Any]:
    """Every hostile value as a decided call (its own session) and as a pending approval."""
    now = time.time_ns() // 1000
    made: dict[str, Any] = {"events": {}, "approvals": {}}
    with db.write() as cur:
        for name, text in HOSTILE.items():
            fields = {"agent": "bot", "environment": "test", "session": f"s-{name}", "tool": "t", "decision": "allow"}
            if text is None:
                body = {"kind": "tool_call.decided", **fields}
                event = events.Event(events.new_id("evt"), now, NOT_JSON, events.columns_of(body))
            else:
                event = events.make_event("tool_call.decided", now, fields, raw={"args": text})
            events.append(db, cur, [event])
            made["events"][name] = event.id
            approval_id = events.new_id("apr")
            approvals.insert(
                db,
                cur,
                {
                    "id": approval_id,
                    "call_id": events.new_id("call"),
                    "status": "pending",
                    "tool": "t",
                    "agent": "bot",
                    "environment": "test",
                    "session": f"s-{name}",
                    "args_json": NOT_JSON if text is None else text,
                    "args_hash": "0" * 64,
                    "shown_args_json": NOT_JSON if text is None else text,
                    "rule_ids": "[]",
                    "reason": "older record",
                    "policy_revision": "rev",
                    "approvers": "[]",
                    "on_timeout": "deny",
                    "created_at_us": now,
                    "expires_at_us": now + 3_600_000_000,
                },
            )
            made["approvals"][name] = approval_id
    return made


@pytest.fixture
def app(url: str) -> Iterator[tuple[TestClient, dict[str, Any]]]:
    db = Database(url)
    _, admin = keys.create(db, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")
    _, approver = keys.create(db, name="p", scopes=["approver"], agent=None, environment="test", created_by="t")
    _, agent = keys.create(db, name="g", scopes=["agent"], agent="bot", environment="test", created_by="t")
    made = _seed(db)
    db.close()
    made["keys"] = {"admin": admin, "approver": approver, "agent": agent}
    with TestClient(create_app(ServerSettings(database_url=url)), raise_server_exceptions=False) as client:
        yield client, made


def _get(client: TestClient, path: str, key: str, **params: Any) -> Any:
    r = client.get(path, headers={"X-API-Key": key}, params=params)
    assert r.status_code == 200, f"{path}: {r.status_code} {r.text[:300]}"
    return r.json() if r.headers["content-type"].startswith("application/json") else r.text


def _depth(value: Any) -> int:
    depth, level = 0, [value]
    while level:
        depth += 1
        level = [v for x in level if isinstance(x, dict | list) for v in (x.values() if isinstance(x, dict) else x)]
    return depth


def _by_session(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The hostile records by name; the one that is not JSON has no fields to name it by."""
    named = {e["session"].removeprefix("s-"): e for e in found if e.get("kind") == "tool_call.decided"}
    unreadable = [e for e in found if "$unreadable" in e]
    return {**named, "not-json": unreadable[0]} if unreadable else named


def _check_args(name: str, record: dict[str, Any], args: Any) -> None:
    """The arguments of a hostile record as a reader shows them: truthful, marked where changed."""
    degraded = record.get("$degraded") or record.get("degraded") or []
    if name in ("dict-300", "list-300", "dict-1000", "list-1000"):
        text = json.dumps(args)
        assert '{"$truncated": "nested deeper than 100 levels"}' in text and _depth(args) <= 103
        assert any("nested deeper than 100 levels" in n for n in degraded), degraded
    elif name == "big-string":
        assert args == {"s": "x" * 10_000_000} and not degraded
    elif name == "many-keys":
        assert len(args) == 5000 and args["k4999"] == 4999 and not degraded
    elif name == "nul":
        assert args == {"a": "x\x00y", "\x00": 0} and not degraded
    elif name == "surrogate":
        assert args == {"a": "x\\ud800y", "\\udfff": "\\udc00"}
        assert any("lone surrogates" in n for n in degraded), degraded
    elif name == "bidi":
        assert args == {"a": "safe\u202etxt.exe\u200b\u2066"} and not degraded
    elif name == "huge-int":
        assert args == {"a": 2**70, "b": -(2**70)} and not degraded
    elif name == "floats":
        assert args == {"a": 1e308, "b": -1e308, "c": {"$number": "1e999"}, "d": {"$number": "NaN"}}
        assert any("beyond the range of a double" in n for n in degraded), degraded
    else:
        assert name == "not-json"
        assert args["$unreadable"].startswith("the stored text is not JSON") and args["$preview"] == NOT_JSON


@pytest.mark.timeout(300)
@pytest.mark.parametrize("role", ["admin", "approver"])
def test_every_reader_answers_for_every_record(app: tuple[TestClient, dict[str, Any]], role: str) -> None:
    client, made = app
    key = made["keys"][role]

    found = _by_session(_get(client, "/v1/events", key, limit=1000)["events"])
    assert set(found) == set(HOSTILE)
    for name, record in found.items():
        if name == "not-json":  # the whole record is unreadable: its columns say what it was
            assert record["$unreadable"].startswith("the stored text is not JSON")
            assert record["$degraded"] and record["seq"] > 0
            continue
        _check_args(name, record, record["args"])
    assert _get(client, "/v1/events", key, q="safe\u202e")["events"][0]["session"] == "s-bidi"
    assert _get(client, "/v1/events", key, tool="t", limit=3)["next_cursor"] is not None

    for name in HOSTILE:
        replay = _get(client, f"/v1/sessions/s-{name}", key)
        assert len(replay) == 1 and replay[0]["seq"] == found[name]["seq"]
        assert _get(client, "/v1/replay", key, session=f"s-{name}") == replay
        if name != "not-json":
            _check_args(name, replay[0], replay[0]["args"])
        detail = _get(client, f"/v1/events/{found[name]['seq']}", key)
        assert detail["event"]["seq"] == found[name]["seq"] and detail["event"]["hash"] == found[name]["hash"]
        if name == "not-json":
            assert detail["chain"]["verified"] is False and detail["chain"]["problem"] == "its body is not valid JSON"
            assert detail["degraded"]
        else:  # written as an older version would have: it verifies, and says how it is shown
            assert detail["chain"]["verified"] is True, detail["chain"]
            _check_args(name, detail, detail["event"]["args"])
            assert detail["degraded"] == detail["event"].get("$degraded", [])
    if role == "admin":  # the chain verifies up to the record that is not JSON, and says so
        report = _get(client, "/v1/audit/verify", key)
        assert report["broken_seq"] == found["not-json"]["seq"] and report["problem"] == "its body is not valid JSON"
        assert report["checked"] == found["not-json"]["seq"] - 1
    sessions = {s["session"] for s in _get(client, "/v1/sessions", key, limit=1000)}
    assert {f"s-{name}" for name in HOSTILE} <= sessions
    _get(client, "/v1/usage", key, by="session")
    _get(client, "/v1/budgets", key)

    exported = _get(client, "/v1/events/export", key, format="jsonl")
    rows = [json.loads(line) for line in exported.splitlines()]
    assert _by_session(rows).keys() == HOSTILE.keys()
    assert "safe\\u202etxt.exe\\u200b\\u2066" in exported  # invisible characters written visibly, same JSON
    for name, row in _by_session(rows).items():
        if name != "not-json":
            _check_args(name, row, row["args"])
    limit = csv.field_size_limit(20_000_000)  # the 10 MB string is one cell
    try:
        table = list(csv.DictReader(io.StringIO(_get(client, "/v1/events/export", key, format="csv"))))
    finally:
        csv.field_size_limit(limit)
    cells = {r["session"].removeprefix("s-"): r for r in table if r["kind"] == "tool_call.decided"}
    cells["not-json"] = next(r for r in table if r["degraded"].startswith("the stored text is not JSON"))
    assert cells.keys() == HOSTILE.keys()
    assert "nested deeper than 100 levels" in cells["list-1000"]["degraded"]
    assert json.loads(cells["huge-int"]["args"]) == {"a": 2**70, "b": -(2**70)}
    assert "$truncated" in cells["dict-1000"]["args"]

    listed = {a["session"].removeprefix("s-"): a for a in _get(client, "/v1/approvals", key)}
    assert listed.keys() == HOSTILE.keys()
    for name, approval in listed.items():
        _check_args(name, approval, approval["args"])
        one = _get(client, f"/v1/approvals/{made['approvals'][name]}", key)
        assert one["args"] == approval["args"] and one["degraded"] == approval["degraded"]
    assert _get(client, "/v1/approvals", key, status="")

    with client.stream("GET", "/v1/approvals/stream", headers={"X-API-Key": key}) as stream:
        assert stream.status_code == 200
        frame = next(line for line in stream.iter_lines() if line.startswith("data: "))
    streamed = {a["session"].removeprefix("s-"): a for a in json.loads(frame[6:])}
    assert streamed.keys() == HOSTILE.keys()
    assert streamed["huge-int"]["args"] == {"a": 2**70, "b": -(2**70)}  # which orjson cannot encode
    assert streamed["dict-1000"]["args"] == listed["dict-1000"]["args"]


def test_the_requesting_agent_gets_its_arguments_exactly_or_not_at_all(
    app: tuple[TestClient, dict[str, Any]],
) -> None:
    client, made = app
    key = made["keys"]["agent"]
    for name in ("huge-int", "nul", "big-string"):
        one = _get(client, f"/v1/approvals/{made['approvals'][name]}", key)
        assert one["executed_args"] == one["args"] and one["degraded"] == []
    for name in ("dict-300", "dict-1000", "surrogate", "not-json"):
        one = _get(client, f"/v1/approvals/{made['approvals'][name]}", key)
        assert one["executed_args"] is None, name
        assert any("executed_args is left out" in n for n in one["degraded"]), one["degraded"]


def test_the_export_of_the_cli_writes_records_decoded_elsewhere() -> None:
    """`clearance audit export` reads with `json.loads`: what it decodes, `lines` writes, marked."""
    deep: Any = 1
    for _ in range(300):
        deep = {"a": deep}
    bodies = [
        {"kind": "tool_call.decided", "at_us": 1_790_000_000_000_000, "args": deep},
        {"kind": "tool_call.decided", "at_us": 10**30, "args": {"x\ud800": float("inf")}},
        {"kind": "tool_call.decided", "args": {"n": 2**70}},
    ]
    stored = [StoredEvent(i + 1, "h", b) for i, b in enumerate(bodies)]
    rows = [json.loads(line) for line in lines(stored, "jsonl")]
    assert '"$truncated"' in json.dumps(rows[0]["args"]) and rows[0]["at"].startswith("2026-")
    assert rows[1]["args"] == {"x\\ud800": {"$number": "inf"}} and rows[1]["at"] is None
    assert len(rows[1]["$degraded"]) == 2 and rows[2]["args"] == {"n": 2**70}
    table = "".join(lines(stored, "csv"))
    assert table.count("\n") == 4 and "$truncated" in table


def test_shown_never_fails_and_says_how_it_differs() -> None:
    assert shown_.shown('{"a":[1,2]}') == shown_.Shown({"a": [1, 2]})
    assert shown_.shown("[" * 5000 + "]" * 5000).notes == (shown_._NOTE_DEEP,)
    assert shown_.shown('"\\ud800"').value == "\\ud800"
    record = shown_.shown("[1]", record=True)
    assert record.value["$unreadable"] == "the stored record is not a JSON object" and record.value["$value"] == [1]
    cut = shown_._cut('{"s":"[[[{{{","d":' + _nested(200, "[", "]") + "}", 3)
    assert json.loads(cut) == {"s": "[[[{{{", "d": [[{"$truncated": "nested deeper than 100 levels"}]]}


def test_usage_and_budgets_sum_what_they_can_read(url: str) -> None:
    """A record the database cannot read (PostgreSQL: not JSON, a NUL escape, a count beyond BIGINT)
    once made every usage query fail; its usage columns (0019) hold what every store keeps: a
    count that is not a 64-bit whole number is not counted, a NUL is escaped as readers show it."""
    db = Database(url)
    _, admin = keys.create(db, name="a", scopes=["admin"], agent=None, environment="test", created_by="t")
    now = time.time_ns() // 1000
    base = {"agent": "bot", "environment": "test", "session": "s-llm"}
    llm = [
        events.make_event("llm.call", now, {**base, "model": "gpt", "input_tokens": 10, "cost_nusd": 1000}),
        events.make_event("llm.call", now, base, raw={"model": '"m\\u0000x"'}),
        events.make_event("llm.call", now, base, raw={"model": '"m\\ud800"'}),
        events.make_event("llm.call", now, {**base, "model": "big"}, raw={"input_tokens": "1180591620717411303424"}),
        events.make_event("llm.call", now, {**base, "model": "text"}, raw={"input_tokens": '"abc"'}),
        events.make_event("llm.call", now, {**base, "model": "float"}, raw={"input_tokens": "1e308"}),
        events.Event(events.new_id("evt"), now, NOT_JSON, events.columns_of({"kind": "llm.call", **base})),
    ]
    with db.write() as cur:
        events.append(db, cur, llm)
    db.close()
    with TestClient(create_app(ServerSettings(database_url=url)), raise_server_exceptions=False) as client:
        for by in ("model", "session", "agent", "day"):
            rows = _get(client, "/v1/usage", admin, by=by)
            assert sum(r["calls"] for r in rows) == len(llm), by
        by_model = {r["key"]: r for r in _get(client, "/v1/usage", admin, by="model")}
        assert by_model["gpt"]["input_tokens"] == 10 and by_model["gpt"]["cost_usd"] == "0.000001"
        assert by_model["big"]["input_tokens"] == 0 and by_model["text"]["input_tokens"] == 0
        assert "m\\x00x" in by_model and "m\\ud800" in by_model
        _get(client, "/v1/budgets", admin)
        for by in ("model", "agent"):
            spend = _get(client, "/v1/spend", admin, by=by, since_us=now - 3_600_000_000)
            assert sum(s["total_calls"] for s in spend["series"]) == len(llm), by


def test_an_edit_of_arguments_read_inexactly_is_refused(app: tuple[TestClient, dict[str, Any]]) -> None:
    """Merging an edit into the marked copy would run something nobody proposed: approve or deny it as it is."""
    client, made = app
    approver = {"X-API-Key": made["keys"]["approver"]}
    r = client.post(
        f"/v1/approvals/{made['approvals']['dict-1000']}/approve", headers=approver, json={"args": {"a": 1}}
    )
    assert r.status_code == 422, r.text
    assert "cannot be decoded exactly" in json.dumps(r.json())
    assert _get(client, f"/v1/approvals/{made['approvals']['dict-1000']}", made["keys"]["admin"])["status"] == "pending"
