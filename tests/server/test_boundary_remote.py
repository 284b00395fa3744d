"""The boundary in remote mode, against a real `clearance serve` on SQLite and PostgreSQL.

A refused call is recorded truthfully and shipped; a record the server refuses is set aside
on its own while the rest of its batch is stored, and `clearance spool` says so.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

import clearance
from clearance import ToolCallBlocked
from clearance._remote._client import Client
from clearance._remote._spool import Shipper, Spool
from clearance._store._events import Event, make_event

from ..conftest import run_cli
from .conftest import Server

POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: block, reason: too big}
"""


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    db = str(tmp_path / "server.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = Server(db, port, tmp_path / "server.log")
    srv.start()
    srv.publish(POLICY)
    yield srv
    clearance.shutdown()
    srv.stop()


def test_a_refused_call_is_blocked_and_recorded_truthfully_on_the_server(server: Server, tmp_path: Path) -> None:
    clearance.configure(server_url=server.base, api_key=server.agent, spool_path=str(tmp_path / "spool.db"))
    ran: list[float] = []

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> None:
        ran.append(amount)

    with pytest.raises(ToolCallBlocked, match=r"args\.amount is nan, which is not a finite number") as blocked:
        issue_refund("A-1", float("nan"))
    assert blocked.value.rule_ids == ("boundary:arguments",)
    with pytest.raises(ToolCallBlocked, match=r"args\.order_id holds a NUL character"):
        issue_refund("A-1\x00, B-2", 5.0)
    issue_refund("A-2", 5.0)
    assert ran == [5.0]
    # An integration hands over a tool name the boundary refuses: recorded here, shipped, kept.
    from clearance._guard import _runtime

    ticket = _runtime.current().begin("issue\u200brefund", {"order_id": "A-3", "amount": 1.0}, "s\x00")
    assert ticket.decision.effect.value == "block" and ticket.tool == "invalid_tool_name"
    clearance.flush()
    clearance.shutdown()  # ships what is left
    assert server.events(kind="ingest.refused") == []  # the server stored every record the SDK wrote
    decided = server.events(kind="tool_call.decided")
    assert [e["decision"] for e in decided] == ["block", "block", "allow", "block"]
    assert (decided[3]["tool"], decided[3]["session"]) == ("invalid_tool_name", "invalid-session-id")
    assert decided[0]["args"] == {"order_id": "A-1", "amount": {"$float": "nan"}}  # never null
    assert decided[1]["args"]["order_id"] == "A-1\x00, B-2"  # kept exactly, escaped in JSON
    assert all(e["tool"] == "issue_refund" for e in decided[:3])


def test_a_record_the_server_refuses_is_set_aside_and_the_rest_shipped(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "spool.db"
    spool = Spool(path)
    base = {"agent": "refunds", "environment": "test", "session": "s1", "tool": "lookup"}
    good = [
        make_event("tool_call.finished", 1_700_000_000_000_000 + i, {**base, "call_id": f"c{i}", "decision": "ok"})
        for i in range(2)
    ]
    # What an older agent could have spooled: a session id holding a NUL, and a NaN argument.
    nul = make_event("tool_call.finished", 1_700_000_000_000_005, {**base, "session": "s\x00", "decision": "ok"})
    nan_body = json.loads(make_event("tool_call.decided", 1_700_000_000_000_006, {**base, "args": {}}).body)
    nan_body["args"] = {"amount": float("nan")}
    nan = Event(nan_body["id"], nan_body["at_us"], json.dumps(nan_body), {})
    spool.put([good[0], nul, nan, good[1]])
    client = Client(server.base, server.agent)
    shipper = Shipper(spool, client)
    try:
        assert not shipper.flush(timeout=20)  # two records were set aside: flush says not all were delivered
        assert spool.size() == 0  # and nothing is left waiting behind them
    finally:
        shipper.close()
        client.close()
    refused = spool.rejected()
    spool.close()
    assert [r[0] for r in refused] == [nul.id, nan.id]
    assert "U+0000" in refused[0][1] and "record.args.amount is nan" in refused[1][1]
    stored = server.events()
    ids = [e["id"] for e in stored]
    assert good[0].id in ids and good[1].id in ids and nul.id not in ids and nan.id not in ids
    refusals = [e for e in stored if e["kind"] == "ingest.refused"]
    assert sorted(e["refused_id"] for e in refusals) == sorted([nul.id, nan.id])
    assert all(e["agent"] == "refunds" for e in refusals)

    shown = run_cli("spool", "--spool", str(path))
    assert shown.returncode == 1, shown.stderr
    assert "0 records waiting to ship" in shown.stdout and "2 records refused by the server" in shown.stdout
    assert nul.id in shown.stdout and "\x00" not in shown.stdout
