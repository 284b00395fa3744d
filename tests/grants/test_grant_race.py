"""Racing for a grant: concurrent calls, revocations, expiry and sweeps, on SQLite and PostgreSQL.

Every racer has its own `Database` (its own connection), as separate processes would, so the
store's own locking is what is tested, not a lock shared in this process.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from clearance._clock import ManualClock
from clearance._granting import GrantRequest
from clearance._guard._record import RecordedCall, call_recorder
from clearance._store import Database
from clearance._store import _grants as grants
from clearance.policy import Effect, parse_policy

from ._shared import POLICY, call, granted, records, refund

RACERS = 50
T = TypeVar("T")


@pytest.fixture
def connections(db: Database) -> Iterator[Callable[[], Database]]:
    """Opens more connections to `db`'s store (closed after the test)."""
    opened: list[Database] = []
    lock = threading.Lock()

    def connect() -> Database:
        other = Database(db.url)
        with lock:
            opened.append(other)
        return other

    yield connect
    for other in opened:
        other.close()


def race(count: int, connect: Callable[[], Database], act: Callable[[Database, int], T]) -> list[T]:
    """Run `act(its own connection, i)` for `count` racers released at the same moment."""
    # Opened one after another: alembic's context is process-global, so PostgreSQL stores
    # opened at once from threads of one process can take each other's connection and hang.
    stores = [connect() for _ in range(count)]
    start = threading.Barrier(count)

    def one(i: int) -> T:
        start.wait(timeout=60)
        return act(stores[i], i)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(one, range(count)))


def outcomes(calls: list[RecordedCall]) -> tuple[int, int]:
    allowed = sum(1 for c in calls if c.decision.effect is Effect.ALLOW)
    asked = sum(1 for c in calls if c.decision.effect is Effect.REQUIRE_APPROVAL)
    return allowed, asked


def used_by_records(db: Database, grant_id: str) -> list[dict[str, Any]]:
    return [r for r in records(db, "tool_call.decided") if r.get("grant_id") == grant_id]


def test_fifty_calls_race_for_ten_uses(db: Database, connections: Callable[[], Database]) -> None:
    grant_id = granted(db, refund(db, 150), GrantRequest("agent", "1h", max_calls=10))
    calls = race(RACERS, connections, lambda store, i: refund(store, 150, session=f"s{i}"))
    assert outcomes(calls) == (10, RACERS - 10)
    assert {c.decision.grant_id for c in calls if c.decision.effect is Effect.ALLOW} == {grant_id}
    assert sorted(r["grant_use"]["calls_used"] for r in used_by_records(db, grant_id)) == list(range(1, 11))
    assert grants.get(db, grant_id).calls_used == 10
    assert len(records(db, "grant.exhausted")) == 1


def test_fifty_calls_race_for_a_total_that_admits_ten(db: Database, connections: Callable[[], Database]) -> None:
    """100.1 ten times is 1001 exactly; the eleventh would pass it (in floats, ten already differ)."""
    grant_id = granted(db, refund(db, 150), GrantRequest("agent", "1h", max_total={"amount": "1001"}))
    calls = race(RACERS, connections, lambda store, i: refund(store, 100.1, session=f"s{i}"))
    assert outcomes(calls) == (10, RACERS - 10)
    grant = grants.get(db, grant_id)
    assert (grant.calls_used, grant.total_used) == (10, Decimal("1001.0"))
    totals = sorted(Decimal(r["grant_use"]["total_used"]) for r in used_by_records(db, grant_id))
    assert totals == [Decimal("100.1") * n for n in range(1, 11)]
    [ended] = records(db, "grant.exhausted")
    assert Decimal(ended["total_used"]) == Decimal(1001)


def test_calls_of_one_group_commit_share_a_grant_exactly(db: Database) -> None:
    """The server commits many calls in one (pipelined, on PostgreSQL) transaction: each use counts once."""
    grant_id = granted(db, refund(db, 150), GrantRequest("agent", "1h", max_calls=10))
    policy = parse_policy(POLICY, "policy.yaml")
    steps = [
        call_recorder(
            db,
            policy,
            agent="refunds",
            environment="test",
            tool="issue_refund",
            args={"order_id": "A-1", "amount": 150},
            session=f"s{i}",
        )
        for i in range(15)
    ]
    with db.write(pipelined=True) as cur:
        calls = [step(cur) for step in steps]
    assert outcomes(calls) == (10, 5)
    assert [c.decision.effect for c in calls[:10]] == [Effect.ALLOW] * 10  # in order: the first ten
    assert grants.get(db, grant_id).calls_used == 10
    assert len(records(db, "grant.exhausted")) == 1


def test_one_call_in_a_pipelined_transaction_uses_a_grant_once(db: Database) -> None:
    grant_id = granted(db, refund(db, 150), GrantRequest("agent", "1h", max_calls=5))
    step = call_recorder(
        db,
        parse_policy(POLICY, "policy.yaml"),
        agent="refunds",
        environment="test",
        tool="issue_refund",
        args={"order_id": "A-1", "amount": 150},
        session="s1",
    )
    with db.write(pipelined=True) as cur:
        call = step(cur)
    assert call.decision.grant_id == grant_id
    assert grants.get(db, grant_id).calls_used == 1


@pytest.mark.parametrize("max_calls", [None, 1000], ids=["uncounted", "counted"])
def test_no_call_uses_a_grant_after_its_revocation_commits(
    db: Database, connections: Callable[[], Database], max_calls: int | None
) -> None:
    """A grant without limits is never written by a use; one with limits is: neither outlives a revoke."""
    lookup = call(db, {"key": "k"}, tool="lookup")
    grant_id = granted(db, lookup, GrantRequest("agent", "1h", max_calls=max_calls))
    revoker = connections()
    revoked = threading.Event()

    def act(store: Database, i: int) -> RecordedCall:
        if i == RACERS // 2:
            grants.revoke(revoker, grant_id, by="user:omar")
            revoked.set()
        return call(store, {"key": "k"}, tool="lookup", session=f"s{i}")

    calls = race(RACERS, connections, act)
    assert revoked.is_set()
    [revocation] = [r for r in _with_seq(db) if r[1]["kind"] == "grant.revoked"]
    uses = [
        seq for seq, body in _with_seq(db) if body.get("grant_id") == grant_id and body["kind"] == "tool_call.decided"
    ]
    assert all(seq < revocation[0] for seq in uses)  # every use is recorded before the revocation
    after = [seq for seq, body in _with_seq(db) if body["kind"] == "tool_call.decided" and seq > revocation[0]]
    assert after, "some calls were decided after the revocation"
    assert len(uses) + sum(1 for c in calls if c.decision.effect is Effect.REQUIRE_APPROVAL) == RACERS


def test_an_expired_grant_is_never_used(db: Database, connections: Callable[[], Database], clock: ManualClock) -> None:
    grant_id = granted(db, refund(db, 150), GrantRequest("agent", "10m"))
    expires = grants.get(db, grant_id).expires_at_us

    def act(store: Database, i: int) -> RecordedCall:
        call = refund(store, 150, session=f"s{i}")
        if i % 10 == 0:
            clock.advance(120)  # five moves of 2 min, each after a call: it expires while calls race
        return call

    calls = race(RACERS, connections, act)
    used = [c for c in calls if c.decision.grant_id == grant_id]
    assert used  # the call before the first move used it
    for record in used_by_records(db, grant_id):
        assert record["at_us"] < expires
    assert refund(db, 150).decision.effect is Effect.REQUIRE_APPROVAL  # ten minutes later
    assert all(c.decision.effect is Effect.REQUIRE_APPROVAL for c in calls if c.decision.grant_id is None)


def test_racing_sweeps_record_an_expiry_once(
    db: Database, connections: Callable[[], Database], clock: ManualClock
) -> None:
    ids = [granted(db, refund(db, 150, session=f"g{n}"), GrantRequest("session", "10m")) for n in range(3)]
    clock.advance(601)
    swept = race(8, connections, lambda store, _: [g.id for g in grants.sweep(store)])
    assert sorted(i for found in swept for i in found) == sorted(ids)
    assert sorted(r["grant_id"] for r in records(db, "grant.expired")) == sorted(ids)


def _with_seq(db: Database) -> list[tuple[int, dict[str, Any]]]:
    import json

    with db.read() as cur:
        cur.execute("SELECT seq, body FROM events ORDER BY seq")
        return [(int(seq), json.loads(body)) for seq, body in cur.fetchall()]


@pytest.mark.parametrize("kind", ["sqlite"])
def test_processes_race_for_ten_uses(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Separate processes on one SQLite file: the file's write lock is all they share."""
    import multiprocessing

    from ._shared import open_store

    db = open_store(request, tmp_path, kind)
    grant_id = granted(db, refund(db, 150), GrantRequest("agent", "1h", max_calls=10))
    context = multiprocessing.get_context("spawn")
    with context.Pool(6) as pool:
        effects = pool.map(_call_in_a_process, [(db.url, i) for i in range(30)])
    assert effects.count("allow") == 10 and effects.count("require_approval") == 20
    assert grants.get(db, grant_id).calls_used == 10


def _call_in_a_process(job: tuple[str, int]) -> str:
    url, i = job
    store = Database(url)
    try:
        return refund(store, 150, session=f"p{i}").decision.effect.value
    finally:
        store.close()


def test_racing_approvers_store_one_grant(db: Database, connections: Callable[[], Database]) -> None:
    """Eight approvers approve the same call at once, each granting: one decides, one grant is stored."""
    from clearance import ApprovalAlreadyDecided, _decisions
    from clearance._decisions import Decider

    from ._shared import grant_rows

    first = refund(db, 150)
    assert first.approval_id is not None
    approval_id = first.approval_id

    def act(store: Database, i: int) -> str:
        who = Decider(f"user:lead{i}", frozenset({"approver", "lead"}))
        try:
            _decisions.decide(store, approval_id, approve=True, by=who, grant=GrantRequest("session", "1h"))
        except ApprovalAlreadyDecided:
            return "late"
        return "won"

    outcomes = race(8, connections, act)
    assert sorted(outcomes) == ["late"] * 7 + ["won"]
    assert grant_rows(db) == 1 and len(records(db, "grant.created")) == 1
    [decided] = records(db, "approval.decided")
    assert decided["grant_id"] == records(db, "grant.created")[0]["grant_id"]
