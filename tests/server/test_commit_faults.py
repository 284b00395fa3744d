"""No phantom decisions: a commit whose connection is lost is answered with what was committed.

A real `clearance serve` on PostgreSQL decides every call (`evaluation="server"`) while the test
terminates the server's database connections again and again. Before the fix, a connection lost
at commit (the pipelined commit's answer lost with it) was answered 503 although the decision had
been committed as `allow`; the agent then failed closed and recorded its own `block` under another
call id — two decisions for one call, one of them a phantom allow. Now the server reads on a new
connection whether the decision is there before it answers.

PostgreSQL only: a connection lost by the server's hand is PostgreSQL's failure (SQLite is a file
in the server's process).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import clearance
from clearance.errors import ToolCallBlocked

from ..conftest import PG_URL
from .conftest import Server, _free_port

pytestmark = pytest.mark.postgres

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: small
        when: args.amount < 100
        effect: allow
        reason: small refund
"""
CALLS = 84  # six agents' threads, fourteen calls each


@pytest.fixture
def server(pg_url: str, tmp_path: Path) -> Iterator[tuple[Server, str]]:
    """A real server on PostgreSQL whose connections carry a name of their own (only they are terminated)."""
    name = f"clearance_faults_{uuid.uuid4().hex[:10]}"
    srv = Server(f"{pg_url}&application_name={name}", _free_port(), tmp_path / "server.log")
    srv.start_timeout = 120  # on PostgreSQL, on a loaded machine, starting takes half a minute
    srv.start()
    srv.publish(POLICY)
    yield srv, name
    clearance.shutdown()
    srv.stop()


def _terminating(name: str, stop: threading.Event) -> int:
    """Terminate the server's connections until `stop`; how many were terminated."""
    killed = 0
    with psycopg.connect(PG_URL.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as admin:
        while not stop.is_set():
            rows = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = %s AND pid <> pg_backend_pid()",
                (name,),
            ).fetchall()
            killed += sum(1 for (done,) in rows if done)
            stop.wait(0.003)
    return killed


def test_a_connection_lost_at_commit_never_leaves_a_phantom_decision(
    server: tuple[Server, str], tmp_path: Path
) -> None:
    srv, name = server
    clearance.configure(
        server_url=srv.base, api_key=srv.agent, spool_path=str(tmp_path / "spool.db"), evaluation="server"
    )
    ran: list[str] = []
    blocked: dict[str, str] = {}  # order id -> the call id the agent recorded its block under
    lock = threading.Lock()

    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> str:
        with lock:
            ran.append(order_id)
        return order_id

    def agent(first: int) -> None:
        for n in range(first, CALLS, 6):
            try:
                issue_refund(f"o{n}", 5)
            except ToolCallBlocked as exc:
                with lock:
                    blocked[f"o{n}"] = exc.call_id

    stop = threading.Event()
    killed: list[int] = []
    killer = threading.Thread(target=lambda: killed.append(_terminating(name, stop)))
    killer.start()
    agents = [threading.Thread(target=agent, args=(i,)) for i in range(6)]
    try:
        for t in agents:
            t.start()
        for t in agents:
            t.join(120)
    finally:
        stop.set()
        killer.join(30)
    assert killed[0] > 0  # the fault did happen
    assert len(ran) + len(blocked) == CALLS and not set(ran) & set(blocked)
    assert clearance.flush() is True  # the agent's own records (its blocks, the outcomes) are shipped

    decided = [e for e in srv.events(kind="tool_call.decided", limit=1000) if e["tool"] == "issue_refund"]
    by_order: dict[str, list[dict[str, object]]] = {}
    for e in decided:
        by_order.setdefault(e["args"]["order_id"], []).append(e)
    by_call: dict[str, int] = {}
    for e in decided:
        by_call[e["call_id"]] = by_call.get(e["call_id"], 0) + 1
    assert all(n == 1 for n in by_call.values()), "a call id with two decisions"
    phantoms = {o: [e["decision"] for e in es] for o, es in by_order.items() if len(es) != 1}
    assert not phantoms, f"calls with more than one decision: {phantoms}"
    assert set(by_order) == {f"o{n}" for n in range(CALLS)}
    for order_id in ran:  # the tool ran: the log says allow
        assert by_order[order_id][0]["decision"] == "allow"
    for order_id, call_id in blocked.items():  # it did not: the log says so, under the agent's call id
        assert by_order[order_id][0]["decision"] == "block" and by_order[order_id][0]["call_id"] == call_id
