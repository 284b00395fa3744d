"""What every framework's test shares: the refund policy, a lead who decides, the records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from clearance import _decisions
from clearance._decisions import Decider
from clearance._guard._governor import Governor
from clearance._store import Database, EventFilter
from clearance._store import _approvals as approvals
from clearance._store._events import query

POLICY = """
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: Refunds over $200 need a lead}
      - {id: huge, when: 'args.amount > 5000', effect: block, reason: Refunds over $5000 are never issued}
"""
LEAD = Decider("user:lena", frozenset({"approver"}))
T = TypeVar("T")


def decide_when_pending(gov: Governor | Database, **decision: Any) -> threading.Thread:
    """Decide the first pending approval from another thread, as soon as it appears."""
    db = gov if isinstance(gov, Database) else gov.db

    def run() -> None:
        deadline = time.monotonic() + 30
        while not (found := approvals.listing(db)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        _decisions.decide(db, found[0].id, by=LEAD, **decision)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def records(gov: Governor, kind: str, session: str | None = None) -> list[dict[str, Any]]:
    """The bodies of the audit records of this kind (in this session)."""
    return [e.body for e in query(gov.db, EventFilter(kind=kind, session=session))]


def run_python(tmp_path: Path, code: str, *args: str, policy: str = POLICY) -> str:
    """Run `code` in a fresh Python process configured (by environment) on tmp_path's store; its output.

    Both the process and the test see `tmp_path / "audit.db"` — the `configure` fixture's store.
    """
    from ..conftest import REPO

    policy_file = tmp_path / "process-policy.yaml"
    policy_file.write_text(policy)
    env = {
        **os.environ,
        "PYTHONPATH": f"{REPO / 'src'}:{REPO}",
        "CLEARANCE_POLICY": str(policy_file),
        "CLEARANCE_DATABASE_URL": str(tmp_path / "audit.db"),
        "CLEARANCE_AGENT": "test-agent",
    }
    out = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def last_json(output: str) -> dict[str, Any]:
    """The JSON object a process printed last."""
    result: dict[str, Any] = json.loads(output.splitlines()[-1])
    return result


def while_deciding(gov: Governor | Database, run: Callable[[], T], **decision: Any) -> T:
    """Run the agent while a lead decides its first pending approval from another thread."""
    thread = decide_when_pending(gov, **decision)
    try:
        return run()
    finally:
        thread.join(30)


# What the fake OpenAI server answers: two model calls (the tool call, then the answer).
TWO_FAKE_CALLS = [("gpt-4o-mini", 120, 30)] * 2


def llm_usage(gov: Governor, session: str) -> list[tuple[str, int, int]]:
    """Model, input and output tokens of each LLM call recorded in the session (once shipped)."""
    import clearance

    clearance.flush()
    return [(c["model"], c["input_tokens"], c["output_tokens"]) for c in records(gov, "llm.call", session)]
