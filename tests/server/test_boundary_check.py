"""The argument boundary on `/v1/check` and ardenpy's `/policy/check`, on SQLite and PostgreSQL.

Each attack of issue 12, as the raw bytes a hostile client sends: refused with a 422 that names
the field, or decided on exactly what the tool would receive; never a 5xx; every reader works after.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clearance._store import Database
from clearance._store._events import EventFilter, query, verify

from .conftest import activated, post_raw

POLICY = """\
version: 1
default: allow
tools:
  issue_refund:
    params: {order_id: string, amount: {type: number, minimum: 0.01}}
    rules:
      - {id: big, when: 'args.amount > 200.0', effect: require_approval}
      - {id: cap, when: 'facts.sum_24h_amount + args.amount > 1000.0', effect: block, reason: daily cap}
  send_email:
    rules:
      - {id: external, when: '!all_in(domains(args.to), ["acme.com"])', effect: block, reason: outside mail}
  lookup:
    rules:
      - {id: deep, when: 'size(args) > 5', effect: block}
"""


@pytest.fixture
def server_db(any_store: str) -> str:
    return any_store


@pytest.fixture
def keys(client: TestClient, make_key: Any) -> dict[str, dict[str, str]]:
    return activated(client, make_key, POLICY, agent="refunds")


class Deep:
    """Arguments nested deeper than Python's own JSON encoder goes: written out as text."""

    def __init__(self, depth: int) -> None:
        self.text = '{"x":' + "[" * depth + "1" + "]" * depth + "}"


def _body(fields: dict[str, Any], name: str, args: Any) -> Any:
    if isinstance(args, Deep):
        return json.dumps(fields)[:-1] + f', "{name}": {args.text}}}'
    return {**fields, name: args}


def check(client: TestClient, agent: dict[str, str], tool: Any, args: Any, **extra: Any) -> Any:
    return post_raw(client, "/v1/check", _body({"tool": tool, **extra}, "args", args), agent)


def arden(client: TestClient, agent: dict[str, str], tool: Any, kwargs: Any, **extra: Any) -> Any:
    return post_raw(client, "/policy/check", _body({"tool_name": tool, **extra}, "kwargs", kwargs), agent)


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


HOSTILE_ARGS = [
    ({"to": "bob@acme.com\x00, eve@evil.io"}, "send_email", "args.to", "NUL character"),
    ({"order_id": "A", "amount": float("nan")}, "issue_refund", "args.amount", "not a finite number"),
    ({"order_id": "A", "amount": float("inf")}, "issue_refund", "args.amount", "not a finite number"),
    ({"order_id": "A", "amount": float("-inf")}, "issue_refund", "args.amount", "not a finite number"),
    ({"order_id": "\ud800", "amount": 5}, "issue_refund", "args.order_id", "lone surrogate"),
    ({"k\ud800": 1}, "lookup", "args['k\\ud800']", "lone surrogate"),
    ({"k\x00": 1}, "lookup", "args['k\\x00']", "NUL character"),
    ({"x": nested(254)}, "lookup", "args.x", "nested more than 64 levels"),
    (Deep(980), "lookup", "args.x", "nested more than 64 levels"),
    (Deep(500), "lookup", "args.x", "nested more than 64 levels"),
    ({"order_id": "A", "amount": 2**64 + 1}, "issue_refund", "args.amount", "beyond ±(2**53 − 1)"),
    ({"order_id": "A", "amount": -(2**64)}, "issue_refund", "args.amount", "beyond ±(2**53 − 1)"),
    ({"order_id": "A", "amount": 2**53}, "issue_refund", "args.amount", "beyond ±(2**53 − 1)"),
]


@pytest.mark.parametrize("args, tool, where, why", HOSTILE_ARGS)
def test_hostile_arguments_are_refused_with_a_422_naming_the_argument(
    client: TestClient, keys: dict[str, dict[str, str]], args: Any, tool: str, where: str, why: str, server_db: str
) -> None:
    for send, root in ((check, "body.args"), (arden, "body.kwargs")):
        r = send(client, keys["agent"], tool, args)
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        if error["details"][0]["location"] == "body":  # too deep for the JSON parser itself
            assert isinstance(args, Deep) and "nested too deeply" in error["message"]
            continue
        assert error["code"] == "invalid_parameter" and why in error["message"]
        assert error["details"][0]["location"].startswith(root + where.removeprefix("args"))
        assert error["details"][0]["message"].startswith(where)
    db = Database(server_db)
    try:
        assert query(db, EventFilter(kind="tool_call.decided")) == []  # nothing was decided
    finally:
        db.close()


def test_the_largest_exact_integers_and_other_controls_are_decided_as_sent(
    client: TestClient, keys: dict[str, dict[str, str]], server_db: str
) -> None:
    agent = keys["agent"]
    hostile = "A\x01\x1b[2J\u202etxt.exe\u200b"
    for amount in (2**53 - 1, -(2**53 - 1)):
        r = check(client, agent, "lookup", {"id": amount, "s": hostile})
        assert r.status_code == 200 and r.json()["decision"] == "allow", r.text
    db = Database(server_db)
    try:
        decided = [e.body for e in query(db, EventFilter(kind="tool_call.decided"))]
        assert [d["args"]["id"] for d in decided] == [2**53 - 1, -(2**53 - 1)]
        assert {d["args"]["s"] for d in decided} == {hostile}  # kept exactly; readers show it visibly
        assert {d["args_hash_alg"] for d in decided} == {"sha256-jcs"}
        assert verify(db).ok
    finally:
        db.close()


@pytest.mark.parametrize(
    "field, value, location",
    [
        ("tool", "send_email\x00", "body.tool"),
        ("tool", " send_email", "body.tool"),
        ("tool", "send_email\n", "body.tool"),
        ("tool", "send\u200bemail", "body.tool"),
        ("tool", "s\u0435nd_email", "body.tool"),  # a Cyrillic 'е'
        ("tool", "send_emai\u2060l", "body.tool"),
        ("tool", "\ud800", "body.tool"),
        ("session_id", "s\x00", "body.session_id"),
        ("session_id", "s\u202e1", "body.session_id"),
        ("session_id", " s1", "body.session_id"),
        ("requested_by", "bob\x00", "body.requested_by"),
        ("call_key", "k\x00", "body.call_key"),
        ("webhook_url", "https://hooks.example.com/\x00", "body.webhook_url"),
    ],
)
def test_names_and_ids_follow_one_rule(
    client: TestClient, keys: dict[str, dict[str, str]], field: str, value: str, location: str
) -> None:
    body: dict[str, Any] = {"tool": "send_email", "args": {"to": "bob@acme.com"}, field: value}
    r = post_raw(client, "/v1/check", body, keys["agent"])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"][0]["location"] == location


def test_ardenpy_names_follow_the_same_rule(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    agent = keys["agent"]
    for tool in ("send\u200bemail", "send_email\x00", "\ud800"):
        assert arden(client, agent, tool, {"to": "bob@acme.com"}).status_code == 422
    for session in ("s\x00", "\ud800", "s\u2066"):
        r = arden(client, agent, "send_email", {"to": "bob@acme.com"}, metadata={"session_id": session})
        assert r.status_code == 422 and r.json()["error"]["details"][0]["location"] == "body.metadata.session_id"


def test_a_tool_is_one_tool_however_it_is_spelt(
    client: TestClient, keys: dict[str, dict[str, str]], server_db: str
) -> None:
    agent = keys["agent"]
    outside = check(client, agent, "Send_Email", {"to": "eve@evil.io"}).json()
    assert outside["decision"] == "block" and outside["rule_ids"] == ["external"]
    for spelling in ("SEND_EMAIL", "send-email", "Send Email"):
        assert arden(client, agent, spelling, {"to": "eve@evil.io"}).json()["decision"] == "block"
    # The daily cap sums one tool, however its name is spelt.
    for spelling in ("issue_refund", "Issue_Refund", "ISSUE-REFUND", "issue Refund", "Issue_refund"):
        assert check(client, agent, spelling, {"order_id": "A", "amount": 199}).json()["decision"] == "allow"
    capped = check(client, agent, "IsSuE_ReFuNd", {"order_id": "A", "amount": 199}).json()
    assert capped["decision"] == "block" and capped["rule_ids"] == ["cap"]
    db = Database(server_db)
    try:
        tools = {e.body["tool"] for e in query(db, EventFilter(kind="tool_call.decided"))}
        assert tools == {"send_email", "issue_refund"}
    finally:
        db.close()


def test_params_apply_on_the_http_paths_as_in_the_sdk(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    agent = keys["agent"]
    unknown = check(client, agent, "issue_refund", {"order_id": "A", "amount": 5, "amout": 9000}).json()
    assert unknown["decision"] == "block" and "args.amout is not a declared argument" in unknown["reason"]
    negative = arden(client, agent, "issue_refund", {"order_id": "A", "amount": -5000}).json()
    assert negative["decision"] == "block" and "below the minimum 0.01" in negative["reason"]
    positional = arden(client, agent, "issue_refund", {"order_id": "A", "amount": 5}, args=[1]).json()
    assert positional["decision"] == "block" and "args._args is not a declared argument" in positional["reason"]


def test_every_reader_answers_after_every_attack(
    client: TestClient, keys: dict[str, dict[str, str]], server_db: str
) -> None:
    agent, admin = keys["agent"], keys["admin"]
    for args, tool, _, _ in HOSTILE_ARGS:
        check(client, agent, tool, args)
        arden(client, agent, tool, args)
    check(client, agent, "issue_refund", {"order_id": "A\u202etxt.exe", "amount": 500}, session_id="s1")
    for path in ("/v1/events", "/v1/approvals", "/v1/sessions", "/v1/sessions/s1", "/v1/events/export"):
        r = client.get(path, headers=admin)
        assert r.status_code == 200, (path, r.text)
    db = Database(server_db)
    try:
        assert verify(db).ok
    finally:
        db.close()


@pytest.mark.parametrize("agent", ["bot\u202e", "bot\x00", " bot", "b\u200bot", "\ud800"])
def test_an_agent_name_outside_the_rule_cannot_be_given_a_key(
    client: TestClient, keys: dict[str, dict[str, str]], agent: str
) -> None:
    body = {"name": "k", "scopes": ["agent"], "agent": agent}
    r = post_raw(client, "/v1/keys", body, keys["admin"])
    assert r.status_code == 422, r.text


def test_an_outcome_for_a_call_id_no_store_keeps_is_a_422(client: TestClient, keys: dict[str, dict[str, str]]) -> None:
    """Found by schemathesis: a NUL in the call id reached PostgreSQL (503)."""
    r = client.post("/v1/calls/call%00x/outcome", headers=keys["agent"], json={"status": "ok", "duration_ms": 1})
    assert r.status_code == 422, r.text
    r = client.post(
        "/v1/calls/call_x/outcome", headers=keys["agent"], json={"status": "error", "duration_ms": 1, "error": "a\x00"}
    )
    assert r.status_code == 422, r.text


def test_ardenpy_positional_arguments_are_located_where_they_were_sent(
    client: TestClient, keys: dict[str, dict[str, str]]
) -> None:
    r = arden(client, keys["agent"], "lookup", {"q": "x"}, args=["ok", float("nan")])
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["location"] == "body.args[1]"


@pytest.mark.parametrize("session", ["s\x00", "s\u202e", "\ud800", " s"])
def test_ardenpy_token_usage_names_its_session_by_the_same_rule(
    client: TestClient, keys: dict[str, dict[str, str]], session: str
) -> None:
    body = {"model": "gpt-4o", "prompt_tokens": 1, "completion_tokens": 1, "session_id": session}
    assert post_raw(client, "/token-usage", body, keys["agent"]).status_code == 422
