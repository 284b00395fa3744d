"""The outbox: messages written in the same transaction as the change they announce.

They are delivered later, with retries. Any number of processes may deliver; a lease makes each
attempt one process's.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .._wire import DeliveryStatus
from ._db import Database

MAX_ATTEMPTS = 10
LEASE_SECONDS = 30
_FIELDS = (
    "id",
    "approval_id",
    "kind",
    "event_type",
    "url",
    "payload",
    "status",
    "attempts",
    "next_attempt_at_us",
    "lease_until_us",
    "last_error",
    "last_status",
    "created_at_us",
    "delivered_at_us",
)


@dataclass(frozen=True)
class Message:
    """One message to deliver, and how its delivery is going."""

    id: str
    approval_id: str
    kind: str
    event_type: str
    url: str
    payload: str
    status: str
    attempts: int
    next_attempt_at_us: int
    lease_until_us: int | None
    last_error: str | None
    last_status: int | None
    created_at_us: int
    delivered_at_us: int | None


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt."""

    at_us: int
    status_code: int | None
    error: str | None
    duration_ms: float


def new_id() -> str:
    """An event id for a webhook (`whe_…`): receivers use it to drop duplicates."""
    return f"whe_{secrets.token_hex(16)}"


def enqueue(
    db: Database, cur: Any, *, message_id: str, approval_id: str, event_type: str, url: str, payload: str, now_us: int
) -> None:
    """Add a webhook to deliver, inside the caller's write transaction."""
    cur.execute(
        db.sql(
            "INSERT INTO outbox (id, approval_id, kind, event_type, url, payload, status, attempts,"
            " next_attempt_at_us, created_at_us) VALUES (:id, :a, 'webhook', :t, :url, :p, :pending, 0, :now, :now)"
        ),
        {
            "id": message_id,
            "a": approval_id,
            "t": event_type,
            "url": url,
            "p": payload,
            "pending": DeliveryStatus.PENDING,
            "now": now_us,
        },
    )


def claim_due(db: Database, *, now_us: int, limit: int = 50, only: Sequence[str] = ()) -> list[Message]:
    """Lease up to `limit` messages that are due (or only those ids), for this process to deliver.

    A lease lasts `LEASE_SECONDS`; a process that dies mid-delivery leaves its messages to
    others after that.
    """
    where = "status = :pending AND next_attempt_at_us <= :now AND (lease_until_us IS NULL OR lease_until_us < :now)"
    params: dict[str, Any] = {"pending": DeliveryStatus.PENDING, "now": now_us, "n": limit}
    if only:
        where += f" AND id IN ({', '.join(f':i{n}' for n in range(len(only)))})"
        params.update({f"i{n}": v for n, v in enumerate(only)})
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT id FROM outbox WHERE {where} ORDER BY next_attempt_at_us LIMIT :n"), params)
        candidates = [r[0] for r in cur.fetchall()]
    leased = []
    lease = now_us + LEASE_SECONDS * 1_000_000
    for message_id in candidates:
        with db.write() as cur:
            cur.execute(
                db.sql(f"UPDATE outbox SET lease_until_us = :lease WHERE id = :id AND {where}"),
                {**params, "lease": lease, "id": message_id},
            )
            if cur.rowcount == 1:
                cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM outbox WHERE id = :id"), {"id": message_id})
                leased.append(Message(*cur.fetchone()))
    return leased


def record(
    db: Database,
    message: Message,
    *,
    now_us: int,
    status_code: int | None,
    error: str | None,
    duration_ms: float,
) -> Message:
    """Record an attempt: delivered (2xx), or retried later with exponential backoff, or given up."""
    attempts = message.attempts + 1
    delivered = error is None and status_code is not None and 200 <= status_code < 300
    if delivered:
        status, next_at = DeliveryStatus.DELIVERED, message.next_attempt_at_us
    elif attempts >= MAX_ATTEMPTS:
        status, next_at = DeliveryStatus.FAILED, message.next_attempt_at_us
    else:
        status, next_at = DeliveryStatus.PENDING, now_us + min(2 ** (attempts - 1), 3600) * 1_000_000
    with db.write() as cur:
        cur.execute(
            db.sql(
                "INSERT INTO outbox_attempts (outbox_id, at_us, status_code, error, duration_ms)"
                " VALUES (:id, :at, :code, :error, :ms)"
            ),
            {"id": message.id, "at": now_us, "code": status_code, "error": error, "ms": duration_ms},
        )
        cur.execute(
            db.sql(
                "UPDATE outbox SET status = :status, attempts = :attempts, next_attempt_at_us = :next,"
                " lease_until_us = NULL, last_error = :error, last_status = :code, delivered_at_us = :delivered"
                " WHERE id = :id"
            ),
            {
                "status": status,
                "attempts": attempts,
                "next": next_at,
                "error": error,
                "code": status_code,
                "delivered": now_us if delivered else None,
                "id": message.id,
            },
        )
        cur.execute(db.sql(f"SELECT {', '.join(_FIELDS)} FROM outbox WHERE id = :id"), {"id": message.id})
        return Message(*cur.fetchone())


def for_approval(db: Database, approval_id: str) -> list[tuple[Message, list[Attempt]]]:
    """An approval's messages, oldest first, each with its attempts."""
    with db.read() as cur:
        cur.execute(
            db.sql(f"SELECT {', '.join(_FIELDS)} FROM outbox WHERE approval_id = :a ORDER BY created_at_us"),
            {"a": approval_id},
        )
        messages = [Message(*r) for r in cur.fetchall()]
        out = []
        for m in messages:
            cur.execute(
                db.sql(
                    "SELECT at_us, status_code, error, duration_ms FROM outbox_attempts"
                    " WHERE outbox_id = :id ORDER BY seq"
                ),
                {"id": m.id},
            )
            out.append((m, [Attempt(*r) for r in cur.fetchall()]))
    return out


def next_due(db: Database) -> int | None:
    """When the next pending message is due (None: nothing pending)."""
    with db.read() as cur:
        cur.execute(
            db.sql("SELECT MIN(next_attempt_at_us) FROM outbox WHERE status = :pending"),
            {"pending": DeliveryStatus.PENDING},
        )
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None
