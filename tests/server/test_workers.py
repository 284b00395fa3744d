"""`clearance serve --workers N`: real worker processes on one port and one PostgreSQL.

A client's keep-alive connection stays on the worker that accepted it, and `/readyz` names
that worker (`process`), so a test can act on one worker and watch another.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from clearance import _seal_memory as memory
from clearance import _signing as signing

from .._wait import until
from ..conftest import run_cli
from .conftest import Server, _free_port

# Starting N worker processes takes a while on a busy 2-core machine (each imports the server).
pytestmark = pytest.mark.timeout(600)
WORKERS = 3
HEADER = 1.0
WAITED = "version: 1\ntools:\n  refund:\n    rules:\n      - {id: r, effect: require_approval}\n"
EXPIRING = (
    "version: 1\ntools:\n  refund:\n    rules:\n      - {id: r, effect: require_approval, approval: {timeout: 1s}}\n"
)


@pytest.fixture
def served(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("CLEARANCE_KEEP_ALIVE_TIMEOUT", "300")  # a client's connection stays on its worker
    monkeypatch.setenv("CLEARANCE_HEADER_TIMEOUT", str(HEADER))
    # No key file yet: every worker starts at once and loads or creates it
    monkeypatch.setenv("CLEARANCE_SIGNING_KEY", str(tmp_path / "keys" / signing.KEY_FILE))
    monkeypatch.setenv("CLEARANCE_CHECKPOINT_INTERVAL", "1")
    server = Server(pg_url, _free_port(), tmp_path / "server.log", args=("--workers", str(WORKERS)))
    try:
        server.start(timeout=180)  # N processes starting at once on a busy machine
        # Each worker opens its sweeper connection as it starts: wait for all of them.
        until(lambda: len(sweepers(server)) == WORKERS, "every worker has started", timeout=180)
        yield server
    finally:
        server.stop()


def _children(parent: int) -> set[int]:
    """The processes whose parent is `parent` (the supervisor's workers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == parent:
            found.add(int(stat.parent.name))
    return found


def sweepers(server: Server) -> dict[int, bool]:
    """This server's workers (by process id) that have a sweeper connection: whether each leads."""
    assert server.proc is not None
    with psycopg.connect(str(server.db).replace("postgresql+psycopg://", "postgresql://")) as conn:
        rows = conn.execute(
            "SELECT a.application_name, EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid"
            " AND l.locktype = 'advisory' AND l.granted) FROM pg_stat_activity a"
            " WHERE a.application_name LIKE 'clearance sweeper %'"
        ).fetchall()
    workers = _children(server.proc.pid)
    return {pid: bool(leads) for name, leads in rows if (pid := int(name.rsplit(" ", 1)[1])) in workers}


def leaders(server: Server) -> set[int]:
    return {pid for pid, leads in sweepers(server).items() if leads}


def clients_by_worker(server: Server, want: int) -> dict[str, list[httpx.Client]]:
    """Keep-alive clients grouped by the worker their connection landed on, until `want` workers have two."""
    found: dict[str, list[httpx.Client]] = {}
    for _ in range(300):
        client = httpx.Client(base_url=server.base, timeout=60)
        found.setdefault(client.get("/readyz").json()["process"], []).append(client)
        if sum(len(c) >= 2 for c in found.values()) >= want:
            return found
    raise AssertionError(f"connections never reached {want} workers: { ({k: len(v) for k, v in found.items()}) }")


def expired_events(server: Server) -> Counter[str]:
    return Counter(e["approval_id"] for e in server.events() if e["kind"] == "approval.expired")


def _status(server: Server, approval_id: str) -> str:
    r = httpx.get(f"{server.base}/v1/approvals/{approval_id}", headers={"X-API-Key": server.agent})
    return str(r.json()["status"])


pg = pytest.mark.postgres


@pg
def test_every_worker_signs_with_the_one_key_file(served: Server) -> None:
    """Workers starting at once on an absent key file: one creates it, and every worker signs with it,
    so each one's verify (which trusts its own key) passes the others' checkpoints."""
    served.publish("version: 1\ndefault: allow\n")
    key_file = Path(os.environ["CLEARANCE_SIGNING_KEY"])
    beside = {p.name for p in key_file.parent.iterdir()} - {f"{key_file.name}.last"}  # the signers' memory
    assert {n for n in beside if not n.startswith(f".{key_file.name}.last.")} == {key_file.name}  # no key temp file
    the_key = signing.load_or_create(key_file)
    workers = clients_by_worker(served, WORKERS)
    assert len(workers) == WORKERS
    approver, agent, admin = ({"X-API-Key": k} for k in (served.approver, served.agent, served.admin))
    for clients in workers.values():
        assert clients[0].get("/v1/checkpoints/keys", headers=approver).json()[0]["key_id"] == the_key.id

    made: list[dict[str, Any]] = []

    def signed() -> bool:
        for clients in workers.values():  # records from every worker, and checkpoints of them
            assert clients[0].post("/v1/check", headers=agent, json={"tool": "t", "args": {}}).status_code == 200
        made[:] = httpx.get(f"{served.base}/v1/checkpoints", headers=approver).json()["checkpoints"]
        return len(made) >= 3

    until(signed, "three checkpoints", timeout=60)
    assert {c["key_id"] for c in made} == {the_key.id}
    kept = memory.load(key_file, memory.public(the_key), memory.store_name(str(served.db)))  # one file, every worker
    assert kept is not None and kept.seq >= made[-1]["seq"]
    for clients in workers.values():
        verified = clients[0].get("/v1/audit/verify", headers=admin).json()
        assert verified["ok"] and verified["checkpoints"] >= 3, verified
    for clients in workers.values():
        for client in clients:
            client.close()


@pg
def test_a_decision_on_one_worker_wakes_a_waiter_on_another(served: Server) -> None:
    served.publish(WAITED)
    workers = clients_by_worker(served, 2)
    (a, [waiter, probe, *_]), (b, [approver, *_]) = [(k, v) for k, v in workers.items() if len(v) >= 2][:2]
    agent = {"X-API-Key": served.agent}
    held = waiter.post("/v1/check", headers=agent, json={"tool": "refund"}).json()
    result: dict[str, Any] = {}

    def wait() -> None:
        started = time.monotonic()
        r = waiter.get(f"/v1/approvals/{held['approval_id']}?wait=30", headers=agent)
        result.update(status=r.json()["status"], took=time.monotonic() - started)

    thread = threading.Thread(target=wait)
    thread.start()
    until(lambda: probe.get("/readyz").json()["long_polls"] == "1", "worker A holds the long poll", timeout=30)
    decided = approver.post(f"/v1/approvals/{held['approval_id']}/approve", headers={"X-API-Key": served.approver})
    assert decided.status_code == 200
    thread.join(40)
    # With a change feed the fallback re-check is every 5 s; an answer well inside that was pushed.
    assert result["status"] == "approved" and result["took"] < 3.5
    # Both connections stayed where they were: the decision and the wait were on different workers.
    assert waiter.get("/readyz").json()["process"] == a != approver.get("/readyz").json()["process"] == b
    for clients in workers.values():
        for client in clients:
            client.close()


@pg
def test_one_worker_sweeps_and_each_expiry_is_recorded_once(served: Server) -> None:
    until(lambda: len(leaders(served)) == 1, "one worker leads the sweep")
    served.publish(EXPIRING)
    agent = {"X-API-Key": served.agent}
    ids = [
        httpx.post(f"{served.base}/v1/check", headers=agent, json={"tool": "refund"}).json()["approval_id"]
        for _ in range(6)
    ]
    until(lambda: all(_status(served, i) == "expired" for i in ids), "every approval expired", timeout=60)
    assert expired_events(served) == dict.fromkeys(ids, 1)
    assert len(leaders(served)) == 1  # the others stood by throughout


@pg
def test_when_the_leader_dies_another_worker_takes_the_sweep_over(served: Server) -> None:
    until(lambda: len(leaders(served)) == 1, "one worker leads the sweep")
    [dead] = leaders(served)
    os.kill(dead, signal.SIGKILL)
    # Its session ends with it, and the lock with the session: another worker takes the lead —
    # a standby, or, on a machine so busy that uvicorn's supervisor replaced unresponsive
    # standbys meanwhile (a worker that misses its health check is restarted), their successor.
    until(lambda: len(leaders(served) - {dead}) == 1, "another worker leads the sweep", timeout=60)
    served.publish(EXPIRING)
    approval = httpx.post(
        f"{served.base}/v1/check", headers={"X-API-Key": served.agent}, json={"tool": "refund"}
    ).json()["approval_id"]
    until(lambda: _status(served, approval) == "expired", "the new leader expires the approval", timeout=60)
    assert expired_events(served) == {approval: 1}
    # The supervisor replaces the dead worker; the new one stands by.
    until(lambda: len(sweepers(served)) == WORKERS, "a new worker replaced the dead one", timeout=180)
    assert dead not in sweepers(served) and len(leaders(served)) == 1


def _until_closed(sock: socket.socket, limit: float = 30) -> bytes:
    received = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        readable, _, _ = select.select([sock], [], [], deadline - time.monotonic())
        if readable:
            chunk = sock.recv(65536)
            if not chunk:
                return received
            received += chunk
    raise AssertionError(f"the connection is still open after {limit} s: {received!r}")


@pg
def test_every_worker_closes_a_request_whose_headers_never_finish(served: Server) -> None:
    closed_by: set[str] = set()
    for _ in range(100):
        with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n")
            answer = _until_closed(sock)
        [process] = re.findall(rb'"process":"(\d+)"', answer)
        assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408 Request Timeout" in answer, answer
        closed_by.add(process.decode())
        if len(closed_by) == WORKERS:
            return
    raise AssertionError(f"connections reached only the workers {closed_by}")


@pytest.mark.parametrize("how", ["option", "environment"])
def test_sqlite_refuses_several_workers_and_says_why(tmp_path: Path, how: str) -> None:
    db = tmp_path / "one.db"
    if how == "option":
        result = run_cli("serve", "--workers", "2", db=db)
    else:
        result = run_cli("serve", db=db, env={"CLEARANCE_WORKERS": "4"})
    assert result.returncode == 1
    assert "needs PostgreSQL: SQLite has a single writer" in result.stderr
    assert "Run one process on SQLite, or move the store to PostgreSQL" in result.stderr
    assert not db.exists()  # refused before anything was opened


def test_workers_must_be_a_positive_count(tmp_path: Path) -> None:
    for bad in ("0", "-1", "two", "nan"):
        result = run_cli("serve", "--workers", bad, db=tmp_path / "x.db")
        assert result.returncode == 2 and "--workers" in result.stderr, (bad, result.stderr)


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_stopping_answers_a_held_long_poll_instead_of_cutting_it(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = str(tmp_path / "stop.db") if store == "sqlite" else str(request.getfixturevalue("pg_url"))
    server = Server(url, _free_port(), tmp_path / "server.log")
    try:
        server.start(timeout=180)
        server.publish(WAITED)
        agent = {"X-API-Key": server.agent}
        held = httpx.post(f"{server.base}/v1/check", headers=agent, json={"tool": "refund"}).json()["approval_id"]
        result: dict[str, Any] = {}

        def wait() -> None:
            try:
                r = httpx.get(f"{server.base}/v1/approvals/{held}?wait=60", headers=agent, timeout=90)
                result.update(code=r.status_code, body=r.text)
            except httpx.HTTPError as exc:
                result.update(error=repr(exc))

        thread = threading.Thread(target=wait)
        thread.start()
        until(lambda: httpx.get(f"{server.base}/readyz").json()["long_polls"] == "1", "the long poll is held")
        assert server.proc is not None
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(60) == 0
        thread.join(60)
        # With the feed, a long poll re-checks only every 5 s, as long as the graceful shutdown
        # lasts: it is told the server stops, and answers what it has, not cut off mid-wait.
        assert result["code"] == 200, result
        assert json.loads(result["body"])["status"] == "pending"
    finally:
        server.stop()
