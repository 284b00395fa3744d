"""An agent on Celery + Redis whose refunds wait for a human without holding a worker.

`run_agent` is the agent: it decides to refund, and a refund that needs approval returns a
`PendingApproval` at once (webhook mode), so the task ends and the worker is free. When a human
decides, Clearance POSTs the signed decision to `webhook.py`, which enqueues `resume_refund`;
that task runs the approved refund exactly once (`clearance.resume`) and does the agent's
follow-up. Every process reads the same CLEARANCE_* settings.

    celery -A tasks worker --loglevel=info
    uvicorn webhook:app --port 8080          # CLEARANCE_WEBHOOK_URL=http://127.0.0.1:8080/webhook
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery

import clearance

REDIS = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
QUEUE = os.environ.get("REFUND_QUEUE", "refunds")
LEDGER = os.environ.get("REFUND_LEDGER", "refunds.log")

app = Celery("refunds", broker=REDIS, backend=REDIS)
app.conf.update(task_default_queue=QUEUE, task_acks_late=True, worker_prefetch_multiplier=1)


def _log(line: str) -> None:
    with open(LEDGER, "a") as ledger:
        ledger.write(line + "\n")


@clearance.guard(approval_mode="webhook")
def issue_refund(order_id: str, amount: float) -> str:
    """The real side effect."""
    _log(f"refund {order_id} {amount}")
    return f"refunded {amount} on {order_id}"


def follow_up(order_id: str, outcome: str) -> str:
    """What the agent does next: tell the customer."""
    _log(f"told customer {order_id}: {outcome}")
    return outcome


@app.task
def run_agent(order_id: str, amount: float) -> dict[str, Any]:
    """The agent's turn: refund, or leave the refund waiting for a human and end."""
    with clearance.session(f"order-{order_id}"):
        result = issue_refund(order_id, amount)
    if isinstance(result, clearance.PendingApproval):
        _log(f"waiting {order_id} {result.approval_id}")
        return {"status": "waiting", "approval_id": result.approval_id}
    return {"status": "done", "message": follow_up(order_id, result)}


@app.task
def resume_refund(approval_id: str, order_id: str) -> dict[str, Any]:
    """Enqueued when a human decided: finish the refund (exactly once) and the agent's follow-up."""
    try:
        result = clearance.resume(approval_id)
    except clearance.ApprovalAlreadyExecuted:
        return {"status": "duplicate"}  # a redelivered webhook or a retried task: it ran already
    except clearance.ApprovalError as exc:  # denied, timed out or cancelled
        return {"status": "denied", "message": follow_up(order_id, f"not refunded: {exc}")}
    return {"status": "done", "message": follow_up(order_id, result)}


@app.task
def ping() -> str:
    """Shows the worker is free while refunds wait."""
    return "pong"
