"""The demo's tools: stand-ins for a payments API, a mail API, billing and a database."""

from __future__ import annotations

from collections.abc import Callable


def issue_refund(order_id: str, amount: float, reason: str, card_last4: str | None = None) -> str:
    """Refund an order."""
    return f"refund of ${amount:.2f} for {order_id} issued"


def send_email(to: str, subject: str, body: str) -> str:
    """Send an email."""
    return f"mail to {to} sent"


def issue_credit(account: str, amount: float) -> str:
    """Credit a customer account."""
    return f"credit of ${amount:.2f} on {account}"


def drop_table(table: str) -> str:
    """Drop a database table (which no policy should let an agent do)."""
    return f"table {table} dropped"


def delete_rows(table: str, where: str) -> str:
    """Delete rows (which no policy should let an agent do)."""
    return f"rows of {table} deleted"


TOOLS: dict[str, Callable[..., str]] = {
    "issue_refund": issue_refund,
    "send_email": send_email,
    "issue_credit": issue_credit,
    "db.drop_table": drop_table,
    "db.delete_rows": delete_rows,
}
