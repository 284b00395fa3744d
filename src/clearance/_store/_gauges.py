"""What the server's metrics read from the store at each scrape: small aggregate reads, each on an index."""

from __future__ import annotations

from dataclasses import dataclass

from .._wire import ApprovalStatus, DeliveryStatus
from ._db import Database


@dataclass(frozen=True)
class StoreGauges:
    """The store's state as a scrape shows it.

    Attributes:
        pending_approvals: Approvals waiting for a decision.
        oldest_pending_us: When the oldest of them was requested (None: none waits).
        outbox_pending: Webhooks not delivered yet (retries included).
        oldest_outbox_us: When the oldest of them was written (None: none waits).
        outbox_failed: Webhooks given up after their last attempt.
        chain_head: The audit log's newest chain position (0: empty).
    """

    pending_approvals: int
    oldest_pending_us: int | None
    outbox_pending: int
    oldest_outbox_us: int | None
    outbox_failed: int
    chain_head: int


def read(db: Database) -> StoreGauges:
    """The gauges, in one read.

    Raises:
        StoreError: The store cannot be read.
    """
    with db.read() as cur:
        cur.execute(
            db.sql("SELECT COUNT(*), MIN(created_at_us) FROM approvals WHERE status = :s"),
            {"s": ApprovalStatus.PENDING},
        )
        pending, oldest_pending = cur.fetchone()
        cur.execute(
            db.sql("SELECT status, COUNT(*), MIN(created_at_us) FROM outbox WHERE status IN (:p, :f) GROUP BY status"),
            {"p": DeliveryStatus.PENDING, "f": DeliveryStatus.FAILED},
        )
        outbox = {str(status): (int(n), oldest) for status, n, oldest in cur.fetchall()}
        cur.execute("SELECT MAX(seq) FROM events")
        head = cur.fetchone()[0]
    waiting, oldest_outbox = outbox.get(DeliveryStatus.PENDING, (0, None))
    return StoreGauges(
        pending_approvals=int(pending),
        oldest_pending_us=None if oldest_pending is None else int(oldest_pending),
        outbox_pending=waiting,
        oldest_outbox_us=None if oldest_outbox is None else int(oldest_outbox),
        outbox_failed=outbox.get(DeliveryStatus.FAILED, (0, None))[0],
        chain_head=int(head or 0),
    )
