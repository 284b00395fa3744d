"""Bad grants given with an approval: each refused with a clear reason, nothing decided or stored.

Every field of a `GrantRequest` may come from an API body or a Slack modal: wider than the rule,
malformed, or hostile (RTL override, lone surrogate, NUL, 10 MB).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from clearance import ApprovalForbidden, _decisions
from clearance._decisions import Decider
from clearance._granting import GrantRequest
from clearance._store import Database
from clearance._store import _approvals as approvals
from clearance.errors import GrantRejected
from clearance.policy import Effect

from ._shared import LEAD, OTHER, call, grant_rows, granted, records, refund

BIG = "x" * 10_000_000
RTL = "\u202e"
SURROGATE = "\ud800"

# (what, the request, words the refusal must contain); made on an `issue_refund` call of 150
# (rule `big`: scopes session/agent/requester, 8h, 20 calls, a total of amount up to 5000).
BAD: list[tuple[str, GrantRequest, str]] = [
    ("unknown scope", GrantRequest("team", "1h"), "scope: 'team' is not a scope; write session, agent or requester"),
    ("no scope", GrantRequest(None, "1h"), "is not a scope"),  # type: ignore[arg-type]
    ("a list scope", GrantRequest(["session"], "1h"), "is not a scope"),  # type: ignore[arg-type]
    ("RTL scope", GrantRequest(RTL + "session", "1h"), "is not a scope"),
    ("surrogate scope", GrantRequest(SURROGATE, "1h"), "is not a scope"),
    ("10 MB scope", GrantRequest(BIG, "1h"), "is not a scope"),
    ("negative duration", GrantRequest("session", "-1h"), "'-1h' is not a duration"),
    ("years", GrantRequest("session", "1y"), "'1y' is not a duration"),
    ("absurd seconds", GrantRequest("session", 10**20), "longer than the rule's max_duration of 28800s"),
    ("longer than the rule", GrantRequest("session", "9h"), "longer than the rule's max_duration of 28800s"),
    ("NUL duration", GrantRequest("session", "1h\x00"), "is not a duration"),
    ("newline duration", GrantRequest("session", "1h\n"), "is not a duration"),
    ("non-ASCII digits", GrantRequest("session", "\u0661h"), "is not a duration"),
    ("5000 digits", GrantRequest("session", "9" * 5000 + "h"), "is not a duration"),
    ("zero duration", GrantRequest("session", 0), "a duration must be positive"),
    ("float duration", GrantRequest("session", 3600.0), "is not a duration"),
    ("NaN duration", GrantRequest("session", float("nan")), "is not a duration"),
    ("no duration", GrantRequest("session", None), "is not a duration"),  # type: ignore[arg-type]
    ("10 MB duration", GrantRequest("session", BIG), "is not a duration"),
    ("zero calls", GrantRequest("session", "1h", max_calls=0), "max_calls: 0 is not between 1 and 1000000"),
    ("negative calls", GrantRequest("session", "1h", max_calls=-1), "max_calls: -1 is not between 1"),
    ("more calls than the rule", GrantRequest("session", "1h", max_calls=21), "max_calls: 21 is above the rule's 20"),
    ("absurd calls", GrantRequest("session", "1h", max_calls=10**30), "is not between 1 and 1000000"),
    ("true calls", GrantRequest("session", "1h", max_calls=True), "max_calls: 'True' is not a whole number"),
    ("float calls", GrantRequest("session", "1h", max_calls=2.0), "is not a whole number"),  # type: ignore[arg-type]
    ("text calls", GrantRequest("session", "1h", max_calls="5"), "is not a whole number"),  # type: ignore[arg-type]
    ("10 MB calls", GrantRequest("session", "1h", max_calls=BIG), "is not a whole number"),  # type: ignore[arg-type]
    ("a wider total", GrantRequest("session", "1h", max_total={"amount": 5001}), "5001 is above the rule's 5000"),
    ("another total", GrantRequest("session", "1h", max_total={"order_id": 5}), "limits the total of amount"),
    ("two totals", GrantRequest("session", "1h", max_total={"amount": 5, "order_id": 1}), "name one numeric argument"),
    ("NaN total", GrantRequest("session", "1h", max_total={"amount": float("nan")}), "is not a finite number"),
    ("inf total", GrantRequest("session", "1h", max_total={"amount": float("inf")}), "is not a finite number"),
    ("sNaN total", GrantRequest("session", "1h", max_total={"amount": "sNaN"}), "is not a finite number"),
    ("Decimal NaN", GrantRequest("session", "1h", max_total={"amount": Decimal("NaN")}), "is not a finite number"),
    ("negative total", GrantRequest("session", "1h", max_total={"amount": -1}), "-1 is not above 0"),
    ("zero total", GrantRequest("session", "1h", max_total={"amount": 0}), "0 is not above 0"),
    ("1e400 total", GrantRequest("session", "1h", max_total={"amount": "1e400"}), "is above the rule's 5000"),
    ("5000-digit total", GrantRequest("session", "1h", max_total={"amount": "1" + "0" * 5000}), "above the rule's"),
    ("true total", GrantRequest("session", "1h", max_total={"amount": True}), "True is not a number"),
    ("text total", GrantRequest("session", "1h", max_total={"amount": "lots"}), "is not a number"),
    ("a total as a list", GrantRequest("session", "1h", max_total=[("amount", 5)]), "name one numeric argument"),  # type: ignore[arg-type]
    ("10 MB total name", GrantRequest("session", "1h", max_total={BIG: 5}), "limits the total of amount"),
    ("bad constraint", GrantRequest("session", "1h", constraints={"amount": {"maximum": "lots"}}), "amount.maximum"),
    ("unknown argument", GrantRequest("session", "1h", constraints={"nope": {"maximum": 1}}), "has no argument 'nope'"),
    ("NaN maximum", GrantRequest("session", "1h", constraints={"amount": {"maximum": float("nan")}}), "maximum"),
    ("inf maximum", GrantRequest("session", "1h", constraints={"amount": {"maximum": float("inf")}}), "maximum"),
    ("null constraint", GrantRequest("session", "1h", constraints={"amount": None}), "constraints.amount"),
    ("constraints list", GrantRequest("session", "1h", constraints=["amount"]), "give an object"),  # type: ignore[arg-type]
    ("no constraints", GrantRequest("session", "1h", constraints=None), "give an object"),  # type: ignore[arg-type]
    ("bad pattern", GrantRequest("session", "1h", constraints={"order_id": {"pattern": "("}}), "regular expression"),
    ("unknown key", GrantRequest("session", "1h", constraints={"amount": {"maxim": 1}}), "amount.maxim"),
    ("unknown type", GrantRequest("session", "1h", constraints={"amount": "nonsense"}), "amount.type"),
    ("nested enum", GrantRequest("session", "1h", constraints={"amount": {"enum": [[[[1]]]]}}), "amount.enum"),
    ("number key", GrantRequest("session", "1h", constraints={5: {"maximum": 1}}), "has no argument 5"),  # type: ignore[dict-item]
    ("surrogate key", GrantRequest("session", "1h", constraints={SURROGATE: {"maximum": 1}}), "has no argument"),
    ("surrogate enum", GrantRequest("session", "1h", constraints={"order_id": {"enum": [SURROGATE]}}), "order_id"),
    ("10 MB enum", GrantRequest("session", "1h", constraints={"order_id": {"enum": [BIG]}}), "constraints:"),
    ("Decimal maximum", GrantRequest("session", "1h", constraints={"amount": {"maximum": Decimal(1)}}), "constraints"),
    ("bytes enum", GrantRequest("session", "1h", constraints={"order_id": {"enum": [b"x"]}}), "constraints"),
    (
        "same names no argument",
        GrantRequest("session", "1h", same=("nope",)),
        "same: the approved call has no argument",
    ),
    ("same as text", GrantRequest("session", "1h", same="order_id"), "same: give a list of argument names"),  # type: ignore[arg-type]
    ("same as null", GrantRequest("session", "1h", same=None), "same: give a list of argument names"),  # type: ignore[arg-type]
    ("same of lists", GrantRequest("session", "1h", same=[["order_id"]]), "same: give a list of argument names"),  # type: ignore[arg-type]
    ("same of numbers", GrantRequest("session", "1h", same=(5,)), "same: give a list of argument names"),  # type: ignore[arg-type]
]


def _refused_cleanly(db: Database, what: str, request: GrantRequest, says: str, session: str) -> list[str]:
    """What went wrong refusing `request` (empty when it was refused as it should be)."""
    first = refund(db, 150, session=session)
    if first.approval_id is None:
        return [f"{what}: the call was not put to approval ({first.decision.reason})"]
    stored, refused = grant_rows(db), len(records(db, "approval.refused"))
    try:
        _decisions.decide(db, first.approval_id, approve=True, by=LEAD, grant=request)
    except GrantRejected as exc:
        wrong = []
        if says not in str(exc):
            wrong.append(f"{what}: refused as {str(exc)[:300]!r}, not saying {says!r}")
        if len(str(exc)) > 2000:
            wrong.append(f"{what}: a refusal of {len(str(exc))} characters")
        if approvals.get(db, first.approval_id).status != "pending":
            wrong.append(f"{what}: the approval did not stay pending")
        if grant_rows(db) != stored:
            wrong.append(f"{what}: a grant was stored")
        after = records(db, "approval.refused")
        if len(after) != refused + 1 or "the grant was refused" not in after[-1]["reason"]:
            wrong.append(f"{what}: no approval.refused record says why")
        return wrong
    except Exception as exc:
        return [f"{what}: {type(exc).__name__}: {str(exc)[:200]}"]
    return [f"{what}: accepted"]


def test_bad_grants_are_refused_and_change_nothing(db: Database) -> None:
    wrong = [
        w for i, (what, request, says) in enumerate(BAD) for w in _refused_cleanly(db, what, request, says, f"b{i}")
    ]
    assert not wrong, "\n".join(wrong)
    assert records(db, "approval.decided") == [] and records(db, "grant.created") == []


def test_a_long_total_name_on_a_rule_without_a_total(db: Database) -> None:
    """`lookup`'s rule sets no total: a name is still one of the tool's numeric arguments, never stored raw."""
    for i, (total, says) in enumerate(
        [
            ({"k" * 200: 5}, "is not an argument name"),
            ({BIG: 5}, "is not an argument name"),
            ({"nope": 5}, "the tool has no argument 'nope'"),
            ({"key": 5}, "key is a string, not a number"),
            ({RTL: 5}, "'\\u202e' is not an argument name"),
        ]
    ):
        first = call(db, {"key": "k"}, tool="lookup", session=f"t{i}")
        assert first.approval_id is not None
        with pytest.raises(GrantRejected) as info:
            _decisions.decide(
                db, first.approval_id, approve=True, by=LEAD, grant=GrantRequest("session", "1h", max_total=total)
            )
        assert says in str(info.value) and len(str(info.value)) < 2000
        assert approvals.get(db, first.approval_id).status == "pending"
    assert grant_rows(db) == 0


def test_a_stored_grant_that_cannot_be_read_covers_nothing(db: Database) -> None:
    """A row whose constraints do not parse (written by hand, or by an older version) asks, never crashes."""
    grant_id = granted(db, refund(db, 150), GrantRequest("agent", "1h", same=("order_id",)))
    with db.write() as cur:
        cur.execute(
            db.sql("UPDATE grants SET id = :new, constraints_json = :bad WHERE id = :id"),
            {"new": "grt_" + "0" * 32, "bad": '{"order_id":{"enum":[{"$escaped":"x"}]}}', "id": grant_id},
        )
    asked = refund(db, 150)
    assert asked.decision.effect is Effect.REQUIRE_APPROVAL and asked.decision.grant_id is None


def test_the_requester_cannot_grant(db: Database) -> None:
    first = refund(db, 150, requested_by="lena")
    assert first.approval_id is not None
    with pytest.raises(ApprovalForbidden, match="lena requested this call and cannot decide it"):
        _decisions.decide(db, first.approval_id, approve=True, by=LEAD, grant=GrantRequest("requester", "1h"))
    assert grant_rows(db) == 0 and approvals.get(db, first.approval_id).status == "pending"
    assert records(db, "approval.refused")[-1]["by"] == "user:lena"


def test_someone_outside_the_approvers_cannot_grant(db: Database) -> None:
    first = refund(db, 150)
    assert first.approval_id is not None
    outsider = Decider("user:pia", frozenset({"approver"}))
    with pytest.raises(ApprovalForbidden, match="only role:lead may decide"):
        _decisions.decide(db, first.approval_id, approve=True, by=outsider, grant=GrantRequest("session", "1h"))
    assert grant_rows(db) == 0


def test_a_denial_cannot_grant(db: Database) -> None:
    first = refund(db, 150)
    assert first.approval_id is not None
    with pytest.raises(GrantRejected, match="only an approval can grant"):
        _decisions.decide(db, first.approval_id, approve=False, by=LEAD, grant=GrantRequest("session", "1h"))
    assert grant_rows(db) == 0 and approvals.get(db, first.approval_id).status == "pending"


QUORUM = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval: {quorum: 2, approvers: [role:lead], grants: {scopes: [session], max_calls: 3}}
"""


def test_no_approver_of_a_quorum_may_grant(request: pytest.FixtureRequest, tmp_path: Any) -> None:
    from clearance import PolicyError
    from clearance.policy import parse_policy

    from ._shared import open_store

    # One approver's grant would let later calls through that need two: refused when the policy loads...
    with pytest.raises(PolicyError, match="grants and quorum: 2 do not mix"):
        parse_policy(QUORUM, "policy.yaml")
    # ...and a decision on such a call grants nothing.
    older = QUORUM.replace(", grants: {scopes: [session], max_calls: 3}", "")
    db = open_store(request, tmp_path, "sqlite", older)
    first = refund(db, 150, policy=parse_policy(older, "policy.yaml"))
    assert first.approval_id is not None
    assert _decisions.decide(db, first.approval_id, approve=True, by=LEAD).status == "pending"  # a vote
    with pytest.raises(GrantRejected, match="no one of them may grant|allows no grants"):
        _decisions.decide(db, first.approval_id, approve=True, by=OTHER, grant=GrantRequest("session", "1h"))
    assert grant_rows(db) == 0 and approvals.get(db, first.approval_id).status == "pending"


BUDGETED = """\
version: 1
tools:
  issue_refund:
    params: {order_id: string, amount: number}
    rules:
      - id: big
        when: args.amount > 100
        effect: require_approval
        approval: {grants: {scopes: [session]}}
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval}
"""

BAD_EXTENSIONS: list[tuple[Any, Any, str]] = [
    ("1e-10", None, "finer than a billionth of a dollar"),  # would have stored an extension of $0
    (1e-10, None, "finer than a billionth of a dollar"),
    ("0.1234567891", None, "finer than a billionth of a dollar"),
    ("1_000", None, "'1_000' is not a number"),
    ("\u0665", None, "is not a number"),
    (" 5 ", None, "is not a number"),
    ("NaN", None, "is not a finite number"),
    (float("inf"), None, "is not a finite number"),
    ("1e400", None, "is not between 0 and 1000000"),
    (10**400, None, "1.000E+400 is not between 0 and 1000000"),
    (-1, None, "is not between 0"),
    (0, None, "is not between 0"),
    (True, None, "True is not a number"),
    (SURROGATE, None, "'\\ud800' is not a number"),
    (BIG, None, "is not a number"),
    (None, 0, "extend.tokens: 0 is not between 1"),
    (None, 10**13, "is not between 1 and 1000000000000"),
    (None, True, "is not a whole number"),
    (None, 5.0, "is not a whole number"),
    (None, None, "extend: say by how much, in usd or tokens"),
]


def test_bad_budget_extensions_are_refused(request: pytest.FixtureRequest, tmp_path: Any) -> None:
    from clearance._granting import BudgetExtension
    from clearance.policy import parse_policy

    from ._shared import open_store, spend

    for kind in ("sqlite", "postgresql"):
        (tmp_path / kind).mkdir()
        db = open_store(request, tmp_path / kind, kind, BUDGETED)
        policy = parse_policy(BUDGETED, "policy.yaml")
        spend(db, "1.5")
        asked = refund(db, 50, policy=policy)
        assert asked.approval_id is not None and asked.decision.budget == "session"
        wrong = []
        for usd, tokens, says in BAD_EXTENSIONS:
            try:
                _decisions.decide(db, asked.approval_id, approve=True, by=LEAD, extend=BudgetExtension(usd, tokens))
                wrong.append(f"{usd!r:.30} {tokens!r}: accepted")
            except GrantRejected as exc:
                if says not in str(exc) or len(str(exc)) > 2000:
                    wrong.append(f"{usd!r:.30} {tokens!r}: {str(exc)[:200]!r}, not {says!r}")
        assert not wrong, "\n".join(wrong)
        assert grant_rows(db) == 0 and approvals.get(db, asked.approval_id).status == "pending"
        assert len(records(db, "approval.refused")) == len(BAD_EXTENSIONS)
        with pytest.raises(GrantRejected, match="only an approval an exhausted budget asked for can extend"):
            plain = refund(db, 150, policy=policy, session="s2")
            assert plain.approval_id is not None and plain.decision.budget is None
            _decisions.decide(db, plain.approval_id, approve=True, by=LEAD, extend=BudgetExtension("1"))
        _decisions.decide(db, asked.approval_id, approve=True, by=LEAD, extend=BudgetExtension("0.000000001"))
        [extension] = records(db, "grant.created")
        assert extension["extend_usd"] == "1E-9" and extension["grant_kind"] == "budget"
