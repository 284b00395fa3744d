"""`clearance demo`: a scripted support agent governed by an example policy.

It issues refunds and emails as a model would ask it to, prints each decision, and leaves its
largest refund waiting for a human, saying how to approve it from a second terminal.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

import click

import clearance

from .._cli._common import compact_json, safe

POLICY = resources.files("clearance._demo") / "policy.yaml"


@dataclass(frozen=True)
class Step:
    thought: str
    tool: str
    args: dict[str, Any]
    tokens: tuple[int, int, int]  # input, cached input, output of the model turn that chose it


SCRIPT = [
    Step(
        "Order A-1001 arrived damaged; refund it.",
        "issue_refund",
        {"order_id": "A-1001", "amount": 45.0, "reason": "damaged in transit"},
        (1850, 0, 120),
    ),
    Step(
        "Tell the customer the refund is on its way.",
        "send_email",
        {"to": "Dana Reyes <dana@customers.acme.com>", "subject": "Your refund", "body": "Refunded $45."},
        (2100, 1536, 160),
    ),
    Step(
        "Forward the thread to my personal mailbox for follow-up.",
        "send_email",
        {"to": "helper@gmail.com", "subject": "fwd", "body": "customer thread"},
        (2300, 1536, 90),
    ),
    Step("Clean up: drop the stale customers table.", "db.drop_table", {"table": "customers"}, (2400, 2048, 70)),
    Step(
        "Order A-1002 was never delivered; refund it.",
        "issue_refund",
        {"order_id": "A-1002", "amount": 120.0, "reason": "not delivered"},
        (2550, 2048, 110),
    ),
    Step(
        "Order A-1003 (a laptop) was returned; refund it in full.",
        "issue_refund",
        {"order_id": "A-1003", "amount": 850.0, "reason": "returned", "card_last4": "4242"},
        (2700, 2048, 130),
    ),
]


def issue_refund(order_id: str, amount: float, reason: str, card_last4: str | None = None) -> str:
    """Refund an order (the demo's stand-in for a payments API)."""
    return f"refund of ${amount:.2f} for {order_id} issued"


def send_email(to: str, subject: str, body: str) -> str:
    """Send an email (the demo's stand-in for a mail API)."""
    return f"mail to {to} sent"


def drop_table(table: str) -> str:
    """Drop a database table (which no policy should let a support bot do)."""
    return f"table {table} dropped"


def _prog() -> str:
    """How the user ran `clearance`, so the printed commands work when pasted."""
    argv0 = sys.argv[0] if sys.argv else "clearance"
    return shlex.quote(os.path.relpath(argv0)) if os.sep in argv0 else "clearance"


def run(database: str, out: Callable[[str], None] = click.echo) -> int:
    """Run the scripted agent; returns the process exit status."""
    prog = _prog()
    clearance.configure(policy=str(POLICY), database_url=database, agent="support-bot", environment="demo")

    def announce(p: clearance.PendingApproval) -> None:
        db = shlex.quote(database)
        minutes = max(0, int((p.expires_at_us / 1e6 - time.time()) // 60))
        out(f"  WAIT   {p.tool}({compact_json(p.args)})")
        out(f"         needs approval: {safe(p.reason)} (expires in {minutes} min)")
        out("")
        out("         In a second terminal, in this directory, decide it:")
        out(f"           {prog} approve {p.approval_id} --database {db}")
        out(f"           {prog} deny {p.approval_id} --database {db} --note 'why not'")
        out("         Waiting for the decision (Ctrl-C gives up and cancels it)...")

    tools: dict[str, Callable[..., str]] = {
        "issue_refund": clearance.guard_tool("issue_refund", issue_refund, on_pending=announce),
        "send_email": clearance.guard_tool("send_email", send_email, on_pending=announce),
        "db.drop_table": clearance.guard_tool("db.drop_table", drop_table, on_pending=announce),
    }
    out(f"Clearance demo: a support agent under {POLICY.name}; audit log in {database}\n")
    with clearance.session() as sid:
        out(f"session {sid}\n")
        for step in SCRIPT:
            prompt, cached, completion = step.tokens
            clearance.record_usage("gpt-4o-mini", prompt, completion, cached_input_tokens=cached, provider="openai")
            out(f"agent: {step.thought}")
            try:
                result = tools[step.tool](**step.args)
            except clearance.ToolCallBlocked as blocked:
                out(f"  BLOCK  {step.tool}({compact_json(step.args)})\n         {safe(blocked.reason)}")
            except clearance.ApprovalDenied as denied:
                out(f"  DENIED by {safe(denied.decided_by)}" + (f": {safe(denied.note)}" if denied.note else ""))
            except clearance.ApprovalTimeout:
                out("  EXPIRED nobody decided in time; the refund did not run")
            else:
                out(f"  ALLOW  {step.tool}({compact_json(step.args)})\n         -> {safe(result)}")
            out("")
    clearance.shutdown()
    db = shlex.quote(database)
    out("Done. See what was recorded:")
    for command in ("audit tail", "audit verify", "usage --by model", "approvals list --all"):
        out(f"  {prog} {command} --database {db}")
    return 0
