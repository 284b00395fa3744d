"""How a policy decides a model call (the reserved tool `MODEL_CALL`): by its budgets alone."""

from __future__ import annotations

from clearance.policy import Effect, parse_policy
from clearance.policy._compile import MODEL_CALL

STRICT = """\
version: 1
default: block
tools:
  "*":
    default: block
    rules:
      - {id: all-blocked, effect: block, reason: nothing runs}
      - {id: all-ask, effect: require_approval}
redact:
  "*": [/model]
budgets:
  session:
    max_cost_usd: 2
    on_exceed: require_approval
    approval: {approvers: [role:finance], timeout: 5m}
"""
SPENT = {"session_cost_usd": 2.0, "session_tokens": 0, "session_budget_extension_usd": 0.0}


def test_the_tools_rules_defaults_and_redactions_never_apply_to_a_model_call() -> None:
    policy = parse_policy(STRICT)
    plan = policy.plan(MODEL_CALL)
    assert plan.rules == () and plan.default is Effect.ALLOW and plan.redact == ()
    assert plan.facts == policy.budget_facts()
    unspent = policy.decide(MODEL_CALL, {"model": "gpt"}, {**SPENT, "session_cost_usd": 1.99})
    assert unspent.effect is Effect.ALLOW and unspent.reason == "no rule matched; the default of a model call is allow"
    assert policy.decide("anything", {}, {}).effect is Effect.BLOCK  # while tool calls are blocked


def test_a_spent_budget_decides_a_model_call_as_it_decides_a_tool_call_with_no_rules() -> None:
    policy = parse_policy(STRICT.replace('default: block\ntools:\n  "*":', 'default: allow\ntools:\n  "x.*":', 1))
    by_model = policy.decide(MODEL_CALL, {"model": "gpt"}, SPENT)
    by_tool = policy.decide("other", {}, SPENT)  # a tool no rule names
    assert by_model == by_tool
    assert by_model.effect is Effect.REQUIRE_APPROVAL and by_model.budget == "session"
    assert by_model.rule_ids == ("budget:session",)
    assert by_model.approval is not None and by_model.approval.approvers == ("role:finance",)
    assert by_model.approval.timeout == 300
    extended = policy.decide(MODEL_CALL, {}, {**SPENT, "session_budget_extension_usd": 1.0})
    assert extended.effect is Effect.ALLOW


def test_a_blocking_budget_blocks_a_model_call_and_no_budget_never_does() -> None:
    blocking = parse_policy("version: 1\ndefault: block\nbudgets:\n  agent: {max_tokens: 10, window: 1h}\n")
    blocked = blocking.decide(MODEL_CALL, {}, {"agent_cost_usd_3600s": 0.0, "agent_tokens_3600s": 10})
    assert blocked.effect is Effect.BLOCK and blocked.rule_ids == ("budget:agent",)
    assert blocked.reason == "agent budget exhausted: 10 tokens used in the last 1h, limit 10"
    unbudgeted = parse_policy("version: 1\ndefault: block\n")
    assert unbudgeted.plan(MODEL_CALL).facts == () and unbudgeted.budget_facts() == ()
    assert unbudgeted.decide(MODEL_CALL, {}, {}).effect is Effect.ALLOW


def test_the_reserved_name_is_folded_like_any_tool_name() -> None:
    policy = parse_policy(STRICT)
    assert policy.plan("Clearance.Model_Call").rules == ()
    assert policy.plan("clearance.model_calls").rules != ()  # only the reserved name itself
