"""`clearance.model_call` is the model-call gate's alone: no tool, policy entry or outside call can take it.

Budgets alone decide that name, past every tool rule, so a tool that could call itself so (an
MCP server's, a framework's) would walk around the policy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import clearance
from clearance import ConfigurationError, PolicyError, ToolCallBlocked
from clearance._guard._record import record_call
from clearance._names import INVALID_TOOL, MODEL_CALL, admit_names, model_call_gate
from clearance._store import Database
from clearance.integrations._common import begin
from clearance.policy import parse_policy

POLICY = """\
version: 1
default: block
budgets:
  session: {max_cost_usd: 1, on_exceed: require_approval}
"""


@pytest.mark.parametrize("spelling", [MODEL_CALL, "Clearance.Model-Call", "clearance.model call"])
def test_no_tool_can_be_guarded_or_declared_under_the_reserved_name(spelling: str) -> None:
    with pytest.raises(ConfigurationError, match="reserved for Clearance's model-call gate"):
        clearance.guard_tool(spelling, lambda: None)
    with pytest.raises(PolicyError, match="reserved for Clearance's model-call gate"):
        parse_policy(f"version: 1\ntools:\n  {spelling!r}: {{default: allow}}\n")


def test_a_call_under_the_reserved_name_from_outside_the_gate_is_refused_and_recorded(tmp_path: Path) -> None:
    # Without the refusal the budgets alone would decide it: allowed under `default: block`.
    assert admit_names(MODEL_CALL, "s")[0] == INVALID_TOOL
    with model_call_gate():
        assert admit_names(MODEL_CALL, "s") == (MODEL_CALL, "s", None)
    assert admit_names(MODEL_CALL, "s", reserved=True)[2] is None
    db = Database(str(tmp_path / "s.db"))
    try:
        call = record_call(
            db, parse_policy(POLICY), agent="a", environment="e", tool="Clearance.Model_Call", args={}, session="s"
        )
        assert call.decision.effect.value == "block" and "reserved" in call.decision.reason
        assert call.tool == INVALID_TOOL
    finally:
        db.close()


def test_a_framework_tool_named_so_is_blocked_not_decided_by_the_budgets(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    clearance.configure(policy=str(tmp_path / "p.yaml"), database_url=str(tmp_path / "c.db"), agent="a")
    try:
        with pytest.raises(ToolCallBlocked, match="reserved for Clearance's model-call gate"):
            begin("clearance.model_call", {"model": "x"})  # an MCP server's tool, say
    finally:
        clearance.shutdown()
