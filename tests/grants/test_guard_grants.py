"""Grants through the SDK's guard, on the embedded store (SQLite and PostgreSQL).

The person an agent acts for is `clearance.session(user=...)`; a `requester` grant covers that
person's calls in any session, and nobody else's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import _decisions
from clearance._granting import GrantRequest
from clearance._guard import _runtime
from clearance._guard._governor import Governor
from clearance._store import Approval
from clearance._store import _approvals as approvals
from tests._wait import until

from ._shared import LEAD, OTHER, records

POLICY = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval: {approvers: [role:lead], grants: {scopes: [requester, session], max_duration: 1h, max_calls: 2}}
"""


@pytest.fixture(params=["sqlite", "postgresql"])
def refund(
    request: pytest.FixtureRequest, tmp_path: Path, configure: Callable[..., Governor]
) -> Iterator[Callable[..., str]]:
    url = str(tmp_path / "audit.db") if request.param == "sqlite" else str(request.getfixturevalue("pg_url"))
    configure(POLICY, database_url=url, agent="refunds")

    def issue_refund(order_id: str, amount: float) -> str:
        return f"refunded {amount} on {order_id}"

    yield clearance.guard_tool("issue_refund", issue_refund)
    clearance.shutdown()  # its last records are committed before the schema is dropped


def db() -> Any:
    current = _runtime.current()
    assert isinstance(current, Governor)
    return current.db


class Waiting:
    """A call made in a thread, in a session acting for `user`; its result once it ends."""

    def __init__(self, fn: Callable[[], str], session: str, user: str) -> None:
        self.result: str | None = None
        self.error: BaseException | None = None

        def run() -> None:
            with clearance.session(session, user=user):
                try:
                    self.result = fn()
                except BaseException as exc:
                    self.error = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def outcome(self) -> str | None:
        self.thread.join(15)
        assert not self.thread.is_alive(), "the call is still waiting"
        if self.error is not None:
            raise self.error
        return self.result


def asked(count: int) -> Approval:
    """The newest pending approval, once `count` are pending."""
    until(lambda: len(approvals.listing(db())) >= count, f"{count} pending approvals")
    return approvals.listing(db())[0]


def test_a_requester_grant_follows_the_person_across_sessions(refund: Callable[..., str]) -> None:
    first = Waiting(lambda: refund("A-1", 150), "s1", "pat")
    waiting = asked(1)
    assert waiting.requested_by == "pat"
    _decisions.decide(db(), waiting.id, approve=True, by=LEAD, grant=GrantRequest("requester", "1h"))
    assert first.outcome() == "refunded 150 on A-1"
    with clearance.session("s2", user="pat"):  # another session, the same person: no wait
        assert refund("A-2", 150) == "refunded 150 on A-2"
    other = Waiting(lambda: refund("A-3", 150), "s2", "quinn")  # another person waits
    assert asked(1).requested_by == "quinn"
    with clearance.session("s3", user="pat"):
        assert refund("A-4", 150) == "refunded 150 on A-4"  # the second of two calls
    third = Waiting(lambda: refund("A-5", 150), "s3", "pat")  # used up: pat waits too
    asked(2)
    uses = [r for r in records(db(), "tool_call.decided") if r.get("grant_id")]
    assert [(r["session"], r["grant_use"]["calls_used"]) for r in uses] == [("s2", 1), ("s3", 2)]
    assert len(records(db(), "grant.exhausted")) == 1
    for approval in approvals.listing(db()):
        _decisions.decide(db(), approval.id, approve=False, by=LEAD)
    for waiter in (other, third):
        with pytest.raises(clearance.ApprovalDenied):
            waiter.outcome()


def test_the_person_an_agent_acts_for_cannot_grant_themselves(refund: Callable[..., str]) -> None:
    first = Waiting(lambda: refund("A-1", 150), "s1", "lena")
    waiting = asked(1)
    with pytest.raises(clearance.ApprovalForbidden, match="lena requested this call"):
        _decisions.decide(db(), waiting.id, approve=True, by=LEAD, grant=GrantRequest("requester", "1h"))
    assert approvals.get(db(), waiting.id).status == "pending" and records(db(), "grant.created") == []
    _decisions.decide(db(), waiting.id, approve=False, by=OTHER)
    with pytest.raises(clearance.ApprovalDenied):
        first.outcome()
