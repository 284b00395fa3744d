"""The tool the webhook examples finish: guarded in webhook mode.

The agent calls `issue_refund`; a call that needs approval returns a `PendingApproval` at once,
and the decision arrives later as a signed webhook that one of the apps below handles. Set
CLEARANCE_* (policy and store, or server and key; CLEARANCE_WEBHOOK_URL and
CLEARANCE_WEBHOOK_SECRET) in the environment of both the agent and the app.
"""

from __future__ import annotations

import os

import clearance

LEDGER = os.environ.get("REFUND_LEDGER", "refunds.log")


def record_result(result: object) -> None:
    """Tell the customer (here: append to the ledger's notes)."""
    with open(LEDGER + ".notes", "a") as notes:
        notes.write(f"done: {result}\n")


def record_denial(error: BaseException) -> None:
    """Tell the customer why not."""
    with open(LEDGER + ".notes", "a") as notes:
        notes.write(f"not done: {error}\n")


@clearance.guard(approval_mode="webhook", on_approval=record_result, on_denial=record_denial)
def issue_refund(order_id: str, amount: float) -> str:
    """Refund an order (here: append to the ledger, so runs can be counted)."""
    with open(LEDGER, "a") as ledger:
        ledger.write(f"{order_id} {amount}\n")
    return f"refunded {amount} on {order_id}"
