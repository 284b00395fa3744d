"""A real `clearance serve` closes idle, slow and unfinished connections, and nothing else.

Short timeouts come from the settings; time passes by waiting for a socket's end, never by
sleeping a fixed while.
"""

from __future__ import annotations

import json
import queue
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clearance._store import Database

from .conftest import Server, _free_port

KEEP_ALIVE, HEADER, BODY = 0.5, 1.0, 1.5
POLICY = """\
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: big refund}
"""


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("CLEARANCE_KEEP_ALIVE_TIMEOUT", str(KEEP_ALIVE))
    monkeypatch.setenv("CLEARANCE_HEADER_TIMEOUT", str(HEADER))
    monkeypatch.setenv("CLEARANCE_BODY_TIMEOUT", str(BODY))
    db = tmp_path / "live.db"
    Database(str(db)).close()
    started = Server(db, _free_port(), tmp_path / "server.log")
    started.start()
    try:
        yield started
    finally:
        started.stop()


def connect(server: Server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)


def until_closed(sock: socket.socket, trickle: bytes = b"", every: float = 0.2, limit: float = 15) -> bytes:
    """Everything the server sends until it closes the connection, sending `trickle` meanwhile."""
    received = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], every if trickle else deadline - time.monotonic())
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                return received
            if not chunk:
                return received
            received += chunk
        elif trickle:
            try:
                sock.sendall(trickle)
            except (BrokenPipeError, ConnectionResetError):
                return received
    raise AssertionError(f"the connection is still open after {limit} s")


def test_idle_connections_are_closed_after_the_keep_alive_timeout(server: Server) -> None:
    opened = time.monotonic()
    idle = [connect(server) for _ in range(150)]
    used = connect(server)  # one that asked something first, then went quiet
    used.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    closed_after = []
    for sock in idle:
        assert until_closed(sock) == b""  # closed without a word
        closed_after.append(time.monotonic() - opened)
        sock.close()
    assert until_closed(used).startswith(b"HTTP/1.1 200")
    used.close()
    assert len(closed_after) == 150
    assert min(closed_after) >= KEEP_ALIVE * 0.9 and max(closed_after) < KEEP_ALIVE + 5


@pytest.mark.parametrize(
    ("start", "trickle", "limit"),
    [
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-Slow: 1\r\n", HEADER),  # slowloris
        (b"", b"\r\n", HEADER),  # blank lines that begin no request
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"", HEADER),  # headers never finished
        (b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{", b"", BODY),  # body never finished
        (b"POST /v1/login HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n", b" ", BODY),  # slow body
    ],
    ids=["slowloris", "blank-lines", "unfinished-headers", "unfinished-body", "slow-body"],
)
def test_slow_and_unfinished_requests_are_closed(server: Server, start: bytes, trickle: bytes, limit: float) -> None:
    sock = connect(server)
    began = time.monotonic()
    sock.sendall(start)
    answer = until_closed(sock, trickle)
    took = time.monotonic() - began
    sock.close()
    assert limit * 0.9 <= took < limit + 5, took
    if limit == HEADER:  # nothing was answered yet: a 408 says why
        assert answer.startswith(b"HTTP/1.1 408"), answer
    # The server still serves everyone else.
    assert httpx.get(f"{server.base}/healthz").status_code == 200


def test_requests_long_polls_and_the_event_stream_outlive_the_timeouts(server: Server) -> None:
    server.publish(POLICY)
    agent, approver = {"X-API-Key": server.agent}, {"X-API-Key": server.approver}
    checked = httpx.post(
        f"{server.base}/v1/check", headers=agent, json={"tool": "issue_refund", "args": {"amount": 900}}
    ).json()
    apr = checked["approval_id"]
    streamed: queue.Queue[list[Any]] = queue.Queue()
    polled: dict[str, Any] = {}

    def stream() -> None:
        with httpx.stream("GET", f"{server.base}/v1/approvals/stream", headers=approver, timeout=30) as r:
            for line in r.iter_lines():
                if line.startswith("data: "):
                    streamed.put(json.loads(line.removeprefix("data: ")))
                    if not streamed.queue[-1]:
                        return

    def poll() -> None:
        r = httpx.get(f"{server.base}/v1/approvals/{apr}?wait=30&until=finished", headers=agent, timeout=40)
        polled.update(r.json())

    threads = [threading.Thread(target=stream), threading.Thread(target=poll)]
    for t in threads:
        t.start()
    assert [a["id"] for a in streamed.get(timeout=10)] == [apr]
    # Let every timeout pass: an idle connection and a slowloris one are both closed meanwhile.
    quiet, slow = connect(server), connect(server)
    slow.sendall(b"GET /healthz HTTP/1.1\r\n")
    assert until_closed(quiet) == b""
    assert until_closed(slow, b"X-Slow: 1\r\n").startswith(b"HTTP/1.1 408")
    quiet.close()
    slow.close()
    with httpx.Client(base_url=server.base, headers=approver) as c:  # one kept-alive connection, two requests
        assert c.get("/v1/approvals").json()[0]["id"] == apr
        assert c.post(f"/v1/approvals/{apr}/deny", json={"note": "no"}).is_success
    # The stream saw the decision. Snapshots sent before it may still show the approval (the
    # long poll's heartbeat changes `waiter_seen_at_us`, and every change is sent), never after.
    while (snapshot := streamed.get(timeout=10)) != []:
        assert [a["id"] for a in snapshot] == [apr]
    for t in threads:
        t.join(20)
    assert polled["status"] == "denied" and polled["note"] == "no"
