"""The shadow report, on SQLite and PostgreSQL: exact counts and examples, windows, filters,
paging, and records no version writes."""

from __future__ import annotations

import json
import textwrap
from typing import Any

import pytest

from clearance import _clock, _decisions
from clearance._granting import GrantRequest
from clearance._guard._record import decide_shadow, llm_event, record_call, shadow_record
from clearance._store import Database
from clearance._store import _events as events
from clearance._store import _policies as policies
from clearance._store import _shadow as shadows
from clearance._store import _shadow_report as shadow_report
from clearance.policy import Policy, parse_policy

from ._policies import ENFORCED, SHADOW

# Text a prompt-injected model may put in an argument: an RTL override, a terminal escape, a
# forged line and quotes. The boundary admits it; the report keeps it as recorded.
HOSTILE = 'gift\u202etxt.exe\x1b[2J\n"FAKE: approved"'


@pytest.fixture
def enforced() -> Policy:
    return parse_policy(textwrap.dedent(ENFORCED))


@pytest.fixture
def shadow() -> Policy:
    return parse_policy(textwrap.dedent(SHADOW))


def call(
    db: Database,
    enforced: Policy,
    shadow: Policy | None,
    amount: float,
    *,
    agent: str = "bot",
    environment: str = "test",
    order: str = "A1",
) -> str:
    """Decide and record one refund; its call id."""
    recorded = record_call(
        db,
        enforced,
        agent=agent,
        environment=environment,
        tool="issue_refund",
        args={"order_id": order, "amount": amount},
        session="ses-1",
        shadow=shadow,
    )
    return recorded.call_id


def test_counts_and_examples_are_exact_newest_first(db: Database, enforced: Policy, shadow: Policy) -> None:
    ids = [call(db, enforced, shadow, amount, order=f"A{i}") for i, amount in enumerate((10, 150, 200, 300, 2000))]
    found = shadows.report(db, since_us=0, examples=2)
    assert (found.calls, found.differing) == (5, 4)
    rows = [(d.enforced, d.shadow, d.rule_id, d.count, [e.call_id for e in d.examples]) for d in found.differences]
    assert rows == [
        ("allow", "block", "refund-over-100", 3, [ids[3], ids[2]]),  # the newest two of three
        ("block", "allow", None, 1, [ids[4]]),
    ]
    first = found.differences[0].examples[0]
    assert first.args == {"order_id": "A3", "amount": 300}
    assert (first.enforced_reason, first.shadow_reason) == (
        "no rule matched; global default is allow",
        "shadow blocks refunds over $100",
    )
    assert first.shadow_rule_ids == ["refund-over-100"] and first.enforced_rule_ids == []
    none = shadows.report(db, since_us=0, examples=0)
    assert [d.examples for d in none.differences] == [[], []] and none.differing == 4


def test_an_empty_window_reports_nothing(db: Database, enforced: Policy, shadow: Policy) -> None:
    found = shadows.report(db, since_us=0)
    assert (found.calls, found.differing, found.differences, found.monitored, found.unreadable) == (0, 0, [], [], 0)
    call(db, enforced, shadow, 150)
    later = shadows.report(db, since_us=_clock.now_us() + 1)
    assert (later.calls, later.differences) == (0, [])


def test_the_window_and_the_filters_choose_the_calls(
    db: Database, enforced: Policy, shadow: Policy, clock: _clock.ManualClock
) -> None:
    call(db, enforced, shadow, 150)  # before the window
    clock.advance(3600)
    start = _clock.now_us()
    inside = [
        call(db, enforced, shadow, 150),
        call(db, enforced, shadow, 150, agent="other"),
        call(db, enforced, shadow, 150, environment="live"),
    ]
    clock.advance(60)
    end = _clock.now_us()
    call(db, enforced, shadow, 150)  # at the window's end: excluded
    found = shadows.report(db, since_us=start, until_us=end)
    assert found.calls == 3 and {e.call_id for e in found.differences[0].examples} == set(inside)
    assert shadows.report(db, since_us=start, until_us=end, agent="other").calls == 1
    assert shadows.report(db, since_us=start, until_us=end, environment="live").calls == 1
    assert shadows.report(db, since_us=start, until_us=end, environment="live", agent="other").calls == 0
    assert shadows.report(db, since_us=0, until_us=end + 1).calls == 5


def test_calls_without_a_shadow_count_only_their_monitor_hits(db: Database, enforced: Policy) -> None:
    call(db, enforced, None, 500)
    call(db, enforced, None, 10)
    found = shadows.report(db, since_us=0)
    assert (found.calls, found.differing, found.differences) == (0, 0, [])
    assert [(m.policy, m.rule_id, m.would, m.count) for m in found.monitored] == [
        ("enforced", "refund-watch", "block", 1)
    ]
    assert found.monitored[0].examples[0].shadow_reason == "watching refunds over $400"


def test_pages_add_up_to_one_pass(
    db: Database, enforced: Policy, shadow: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    for amount in (150, 10, 500, 150, 2000, 150, 10):
        call(db, enforced, shadow, amount)
    whole = shadows.report(db, since_us=0, until_us=_clock.now_us() + 1)
    monkeypatch.setattr(shadow_report, "PAGE", 2)
    paged = shadows.report(db, since_us=0, until_us=whole.until_us)
    assert paged == whole and whole.calls == 7


def test_hostile_arguments_come_back_as_recorded(db: Database, enforced: Policy, shadow: Policy) -> None:
    call(db, enforced, shadow, 150, order=HOSTILE)
    example = shadows.report(db, since_us=0).differences[0].examples[0]
    assert example.args == {"order_id": HOSTILE, "amount": 150}


def _append(db: Database, fields: dict[str, Any]) -> None:
    base = {"agent": "bot", "environment": "test", "session": "s", "tool": "t", "call_id": "call_x"}
    with db.write() as cur:
        events.append(db, cur, [events.make_event("tool_call.decided", _clock.now_us(), {**base, **fields})])


def _append_raw(db: Database, body: str) -> None:
    """A record put in the database by hand: its body is whatever was written."""
    with db.write() as cur:
        cur.execute(
            db.sql(
                "INSERT INTO events (id, kind, at_us, agent, environment, session, tool, call_id, decision,"
                " cost_nusd, tokens, body, prev_hash, hash) VALUES (:id, 'tool_call.decided', :at, 'bot', 'test',"
                " 's', 't', NULL, NULL, NULL, NULL, :body, 'x', 'y')"
            ),
            {"id": events.new_id("evt"), "at": _clock.now_us(), "body": body},
        )


def test_records_no_version_writes_are_counted_never_fatal(
    db: Database, enforced: Policy, shadow: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    call(db, enforced, shadow, 150)
    unreadable = [
        {"decision": "allow", "shadow": "blocked"},
        {"decision": "allow", "shadow": {"decision": "maybe", "rule_ids": []}},
        {"decision": "allow", "shadow": {"decision": "block", "rule_ids": {"a": 1}}},
        {"decision": 7, "shadow": {"decision": "block", "rule_ids": []}},
        {"decision": "allow", "monitored": "yes"},
        {"decision": "allow", "monitored": [{"rule_id": "r"}]},
        {"decision": "allow", "monitored": [["r", "block"]]},
    ]
    for fields in unreadable:
        _append(db, fields)
    _append(db, {"decision": "allow", "args": {"note": '"shadow" and "monitored" in words'}})  # not a shadow
    _append(db, {"decision": "allow", "shadow": None, "monitored": None})  # a version that writes nulls
    _append_raw(db, '{"kind": "tool_call.decided", "shadow": ')  # not JSON
    _append_raw(db, '["shadow"]')  # not an object
    deep = "[" * 1000 + "]" * 1000
    _append_raw(
        db,
        '{"decision": "allow", "args": ' + deep + ', "shadow": {"decision": "block", "rule_ids": ["\\ud800x"],'
        ' "reason": "\\u0000"}, "call_id": "\\udfff"}',
    )
    _append_raw(db, json.dumps({"decision": "allow", "shadow": {"decision": "block", "rule_ids": ["r" * 10_000]}}))
    found = shadows.report(db, since_us=0)
    assert found.unreadable == len(unreadable) + 2
    assert found.calls == 3 and found.differing == 3
    by_rule = {d.rule_id: d for d in found.differences}
    assert by_rule["refund-over-100"].count == 1
    assert by_rule["\\ud800x"].examples[0].call_id == "\\udfff"  # lone surrogates shown as their escape
    args, levels = by_rule["\\ud800x"].examples[0].args, 0
    while isinstance(args, list):
        args, levels = args[0], levels + 1
    assert (levels, args) == (100, {"$truncated": "nested deeper than 100 levels"})  # cut, marked
    assert ("r" * 199 + "…") in by_rule  # a name is cut, never kept whole
    json.dumps(found.__dict__, default=lambda o: o.__dict__)  # every value is plain JSON


def test_many_rules_share_one_group_past_the_limit(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shadow_report, "MAX_GROUPS", 2)
    for i in range(5):
        _append(db, {"decision": "allow", "shadow": {"decision": "block", "rule_ids": [f"r{i}"], "revision": f"v{i}"}})
    found = shadows.report(db, since_us=0)
    assert [(d.rule_id, d.count) for d in found.differences] == [(shadow_report.OTHER, 3), ("r0", 1), ("r1", 1)]
    assert found.revisions == {"v0": 1, "v1": 1}  # the revisions kept are bounded too
    assert found.calls == 5


def _last_decided(db: Database) -> dict[str, Any]:
    with db.read() as cur:
        cur.execute("SELECT body FROM events WHERE kind = 'tool_call.decided' ORDER BY seq DESC LIMIT 1")
        return dict(json.loads(cur.fetchone()[0]))


def test_a_shadow_with_the_same_rules_decides_as_deciding_it_afresh(db: Database, enforced: Policy) -> None:
    same = parse_policy(textwrap.dedent(ENFORCED) + "# the same rules, another revision\n")
    for amount in (10, 500, 2000, "x"):  # "x": the conditions cannot be evaluated
        args = {"order_id": "A1", "amount": amount}
        record_call(
            db, enforced, agent="bot", environment="t", tool="issue_refund", args=args, session="s", shadow=same
        )
        fresh = shadow_record(decide_shadow(same, "issue_refund", args, {}))
        assert _last_decided(db)["shadow"] == fresh and fresh["revision"] == same.revision


def test_a_shadow_whose_budgets_differ_reads_its_own_facts(db: Database, enforced: Policy) -> None:
    budgeted = parse_policy(textwrap.dedent(ENFORCED) + "budgets:\n  session: {max_tokens: 100}\n")
    event, _ = llm_event(
        agent="bot",
        environment="t",
        session="s",
        model="m",
        provider=None,
        input_tokens=150,
        output_tokens=0,
        cached_input_tokens=0,
        reasoning_tokens=0,
        latency_ms=None,
        overrides={},
    )
    with db.write() as cur:
        events.append(db, cur, [event])
    args = {"order_id": "A1", "amount": 10}
    record_call(
        db, enforced, agent="bot", environment="t", tool="issue_refund", args=args, session="s", shadow=budgeted
    )
    record = _last_decided(db)
    assert record["decision"] == "allow" and "facts" not in record
    assert (record["shadow"]["decision"], record["shadow"]["rule_ids"]) == ("block", ["budget:session"])


GRANTED = """\
version: 1
default: allow
tools:
  issue_refund:
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval: {timeout: 30m, grants: {scopes: [session], max_duration: 1h, max_calls: 5}}
"""


def test_a_grant_answers_the_shadow_as_it_answers_the_enforced_policy(db: Database) -> None:
    enforced = parse_policy(GRANTED)
    same = parse_policy(GRANTED + "# the same rules\n")
    lower = parse_policy(GRANTED.replace("args.amount > 100", "args.amount > 50"))  # decided afresh

    def refund(shadow: Policy) -> tuple[str, str]:
        args = {"order_id": "A1", "amount": 150}
        record_call(
            db, enforced, agent="bot", environment="t", tool="issue_refund", args=args, session="s", shadow=shadow
        )
        record = _last_decided(db)
        return record["decision"], record["shadow"]["decision"]

    policies.activate_for_agent(db, enforced, agent="bot", environment="t", author="bot")  # what the decider reads
    asked = record_call(
        db,
        enforced,
        agent="bot",
        environment="t",
        tool="issue_refund",
        args={"order_id": "A0", "amount": 150},
        session="s",
    )
    assert asked.approval_id is not None
    _decisions.decide(
        db,
        asked.approval_id,
        approve=True,
        by=_decisions.Decider("lee", trusted=True),
        grant=GrantRequest(scope="session", duration="1h", max_calls=2),
    )
    assert refund(same) == ("allow", "allow")
    assert refund(lower) == ("allow", "allow")  # the grant's last use: the shadow saw it live, as the enforced did
    assert refund(same) == ("require_approval", "require_approval")  # used up, for both
    found = shadows.report(db, since_us=0)
    assert (found.calls, found.differing) == (3, 0)
