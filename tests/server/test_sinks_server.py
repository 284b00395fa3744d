"""Event sinks with a real server: the agent's spooled records pass its sinks, and once shipped the server's."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

import clearance
from clearance._sinks import JsonLinesSink

from .conftest import Server

POLICY = """\
version: 1
tools:
  send_email:
    rules:
      - {id: ext, when: '!all_in(domains(args.to), ["acme.com"])', effect: block, reason: outside mail}
"""


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _sinks(server: Server) -> list[dict[str, Any]]:
    r = httpx.get(f"{server.base}/v1/admin/sinks", headers={"X-API-Key": server.admin})
    assert r.status_code == 200, r.text
    return list(r.json())


def test_remote_records_reach_the_agents_sink_and_after_shipping_the_servers(
    any_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server_feed, agent_feed = tmp_path / "server.jsonl", tmp_path / "agent.jsonl"
    monkeypatch.setenv("CLEARANCE_EXPORTERS", f"jsonl:{server_feed}")
    server = Server(any_store, _port(), tmp_path / "server.log")
    server.start()
    try:
        server.publish(POLICY)
        monkeypatch.delenv("CLEARANCE_EXPORTERS")
        clearance.configure(
            server_url=server.base,
            api_key=server.agent,
            spool_path=str(tmp_path / "spool.db"),
            exporters=[JsonLinesSink(agent_feed)],
        )

        @clearance.guard
        def send_email(to: str) -> str:
            return "sent"

        for n in range(5):
            send_email(f"u{n}@acme.com")
        with pytest.raises(clearance.ToolCallBlocked):
            send_email("eve@evil.com")
        clearance.shutdown()  # ships the spool and delivers the agent's sinks
        agent = [json.loads(line) for line in agent_feed.read_text().splitlines()]
        assert [a["kind"] for a in agent].count("tool_call.decided") == 6
        assert all(a["hash"] is None and a["event"]["id"] == a["id"] for a in agent)
        deadline = time.monotonic() + 30
        while (status := _sinks(server)[0])["backlog"] and time.monotonic() < deadline:
            time.sleep(0.05)  # the server's sink runs in its own process: wait for its counter
        assert status["name"] == f"jsonl:{server_feed}" and status["backlog"] == 0 and status["failed"] == 0
        fed = [json.loads(line) for line in server_feed.read_text().splitlines()]
        ids = [f["id"] for f in fed]
        assert len(ids) == len(set(ids)) and {a["id"] for a in agent} <= set(ids)
        stored = {e["id"]: e for e in server.events()}
        assert all(f["hash"] and f["event"]["id"] == f["id"] for f in fed)
        assert [f["seq"] for f in fed] == sorted(f["seq"] for f in fed) and set(ids) <= set(stored)
    finally:
        server.stop()


def test_the_sinks_route_is_for_admins_and_empty_without_exporters(tmp_path: Path) -> None:
    server = Server(tmp_path / "server.db", _port(), tmp_path / "server.log")
    server.start()
    try:
        assert _sinks(server) == []
        r = httpx.get(f"{server.base}/v1/admin/sinks", headers={"X-API-Key": server.agent})
        assert r.status_code == 403
    finally:
        server.stop()
