"""What every framework's test shares: the refund policy, a lead who decides, the records."""

from __future__ import annotations

import threading
import time
from typing import Any

from clearance import _decisions
from clearance._decisions import Decider
from clearance._guard._governor import Governor
from clearance.store import Database, EventFilter
from clearance.store import _approvals as approvals
from clearance.store._events import query

POLICY = """
version: 1
tools:
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200', effect: require_approval, reason: Refunds over $200 need a lead}
      - {id: huge, when: 'args.amount > 5000', effect: block, reason: Refunds over $5000 are never issued}
"""
LEAD = Decider("user:lena", frozenset({"approver"}))


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
