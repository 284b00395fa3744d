"""Seed a demo store: the policy (stored and active), the people, and a realistic history.

The history is made by the real SDK on the same store: each agent's conversations run through
the guard, and each approval is answered by a named person through the same decision code the
dashboard uses, so every record is one the product itself would write.
"""

from __future__ import annotations

import secrets
import threading
from importlib import resources
from typing import Any

import clearance

from .. import _decisions as decisions
from .._granting import GrantRequest
from .._store import Database
from .._store import _policies as policies
from .._store import _users as users
from ._script import AGENTS, Answer, Turn
from ._tools import TOOLS

POLICY = resources.files("clearance._demo") / "policy.yaml"
PEOPLE = {"dana": ("approver", "support-lead"), "sam": ("approver", "finance")}


def prepare(database: str, password: str | None) -> str:
    """Store and activate the policy, create the people; returns the `demo` user's password."""
    password = password or secrets.token_urlsafe(12)
    db = Database(database)
    try:
        text = POLICY.read_text(encoding="utf-8")
        rev = policies.create(db, text, source="policy.yaml", author="demo")
        policies.activate(db, rev.id, scope="default", by="demo")
        existing = {u.username for u in users.listing(db)}
        for name, roles in PEOPLE.items():
            if name not in existing:
                users.create(db, name, secrets.token_urlsafe(16), list(roles), by="demo")
        if "demo" in existing:
            users.update(db, "demo", password=password, by="demo")
        else:
            users.create(db, "demo", password, ["admin", "approver", "support-lead"], by="demo")
    finally:
        db.close()
    return password


def _answer_soon(database: str, answer: Answer) -> Any:
    """An `on_pending` that lets the named person decide from another thread, as in life."""

    def on_pending(p: clearance.PendingApproval) -> None:
        def decide() -> None:
            db = Database(database)
            try:
                who = decisions.Decider(f"user:{answer.by}", frozenset(PEOPLE[answer.by]), None)
                grant = GrantRequest(**answer.grant) if answer.grant else None
                decisions.decide(
                    db, p.approval_id, approve=answer.approve, by=who, note=answer.note, args=answer.edit, grant=grant
                )
            finally:
                db.close()

        threading.Timer(0.3, decide).start()

    return on_pending


def play(turn: Turn, database: str, on_pending: Any) -> str:
    """Record the model turn, then make its tool call through the guard; returns what happened."""
    prompt, cached, completion = turn.tokens
    clearance.record_usage(turn.model, prompt, completion, cached_input_tokens=cached, latency_ms=turn.latency_ms)
    tool = clearance.guard_tool(turn.tool, TOOLS[turn.tool], on_pending=on_pending)
    try:
        return str(tool(**turn.args))
    except clearance.ToolCallBlocked as blocked:
        return f"blocked: {blocked.reason}"
    except clearance.ApprovalDenied as denied:
        return f"denied by {denied.decided_by}: {denied.note or ''}"
    except clearance.ApprovalTimeout:
        return "nobody decided in time"


def history(database: str) -> int:
    """Run every agent's scripted conversations once, each in its own session; returns calls made."""
    calls = 0
    for agent, conversations in AGENTS.items():
        clearance.configure(policy=str(POLICY), database_url=database, agent=agent, environment="production")
        for conversation in conversations:
            with clearance.session():
                for turn in conversation:
                    play(turn, database, _answer_soon(database, turn.answer) if turn.answer else None)
                    calls += 1
    clearance.shutdown()
    return calls
