"""`clearance demo`: the server and dashboard on a seeded store, with live agents at work.

It stores the example policy, creates a `demo` sign-in, seeds a history (three agents, their
sessions with LLM calls and costs, allowed, blocked, approved, edited and denied calls), then
serves the dashboard and starts one process per agent that keeps working: their big refunds and
credits wait for someone to approve them in the dashboard, and carry on once decided.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable

import click

from .._cli._common import safe
from .._store import Database
from .._store import _grants as grants
from ._script import AGENTS
from ._seed import history, prepare


def _relay(proc: subprocess.Popen[str], out: Callable[[str], None]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        out("  " + safe(line.rstrip("\n")))


def _granted(database: str) -> str:
    """One line on the seeded grant: who granted what, and the calls it let through without waiting."""
    db = Database(database)
    try:
        found = grants.listing(db, agent="support-bot")
        if not found:
            return "  (no grant was given)"
        g = found[0]
        total = f" up to ${g.max_total} in all" if g.max_total is not None else ""
        minutes = (g.expires_at_us - g.created_at_us) // 60_000_000
        return (
            f"  {g.granted_by.removeprefix('user:')} granted a {g.agent} {g.scope} {g.tool} calls{total}"
            f" for {minutes} min: the next {grants.uses(db, g)} passed without waiting (grant {g.id})"
        )
    finally:
        db.close()


def run(
    database: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8321,
    password: str | None = None,
    agents: bool = True,
    out: Callable[[str], None] = click.echo,
) -> int:
    """Seed `database`, start the live agents, and serve the dashboard until interrupted."""
    from .._cli._server import run_server

    Database(database).close()  # create it, at the current schema
    password = prepare(database, password)
    out(f"Seeding {database} with a history of three agents…")
    out(f"  {history(database)} calls recorded")
    out(_granted(database))
    url = f"http://{host}:{port}/"
    out("")
    out(f"Dashboard: {url}")
    out(f"Sign in as: demo / {password}")
    out("")
    out("support-bot and billing-bot keep working; their big refunds and credits wait in Approvals.")
    out("Approve one (or edit its amount first) and watch the agent carry on. Ctrl-C stops everything.")
    out("")
    procs: list[subprocess.Popen[str]] = []
    if agents:
        for agent in AGENTS:
            proc = subprocess.Popen(
                [sys.executable, "-m", "clearance._demo._live", database, agent],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            procs.append(proc)
            threading.Thread(target=_relay, args=(proc, out), daemon=True).start()
    try:
        run_server(database, host, port, access_log=False, log_level="warning")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0
