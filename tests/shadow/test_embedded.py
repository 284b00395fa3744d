"""A shadow policy in the embedded SDK: decided and recorded beside the enforced one, never enforced."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import PolicyError, ToolCallBlocked
from clearance._guard import _runtime
from clearance._guard._governor import Governor
from clearance._store import EventFilter
from clearance._store import _shadow as shadows
from clearance._store._events import query
from clearance.policy import parse_policy

from ._policies import ENFORCED, SHADOW


def _decided(gov: Governor) -> list[dict[str, Any]]:
    return [e.body for e in query(gov.db, EventFilter(kind="tool_call.decided"))]


def _tools() -> tuple[Callable[..., str], Callable[..., str]]:
    @clearance.guard
    def issue_refund(order_id: str, amount: float) -> str:
        return f"refunded {amount}"

    @clearance.guard
    def send_email(to: str, body: str = "") -> str:
        return "sent"

    return issue_refund, send_email


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def run_calls(refund: Callable[..., str], email: Callable[..., str]) -> list[str]:
    """The calls every test here makes: what each returned, or `blocked`."""
    out = []
    with clearance.session("ses-1"):
        for amount in (50, 80, 150, 500, 2000):
            try:
                out.append(refund(f"A{amount}", amount))
            except ToolCallBlocked:
                out.append("blocked")
        out.append(email("ann@acme.com"))
    return out


def test_calls_run_as_enforced_and_each_record_carries_the_shadow(
    configure: Callable[..., Governor], tmp_path: Path
) -> None:
    refund, email = _tools()
    gov = configure(ENFORCED, shadow_policy=_write(tmp_path, "shadow.yaml", SHADOW))
    shadow = parse_policy(textwrap.dedent(SHADOW))
    # The shadow would block 150 and 500 and ask about 80; the enforced policy blocks only 2000.
    assert run_calls(refund, email) == ["refunded 50", "refunded 80", "refunded 150", "refunded 500", "blocked", "sent"]
    decided = _decided(gov)
    assert [d["decision"] for d in decided] == ["allow"] * 4 + ["block", "allow"]
    got = [(d["shadow"]["decision"], d["shadow"]["rule_ids"]) for d in decided]
    assert got == [
        ("allow", []),
        ("require_approval", ["refund-again"]),  # facts.calls_1h: a fact only the shadow reads
        ("block", ["refund-over-100"]),
        ("block", ["refund-over-100"]),
        ("allow", []),
        ("allow", []),
    ]
    assert {d["shadow"]["revision"] for d in decided} == {shadow.revision}
    assert decided[1]["shadow"]["monitored"] == [
        {"rule_id": "shadow-watch", "would": "require_approval", "reason": "shadow watches refunds over $50"}
    ]
    assert "facts" not in decided[1]  # the shadow's facts are not the enforced decision's
    # Nothing was put to approval: the shadow's require_approval is only recorded.
    assert not list(query(gov.db, EventFilter(kind="approval.requested")))


def test_the_report_counts_where_they_differed_with_examples(
    configure: Callable[..., Governor], tmp_path: Path
) -> None:
    refund, email = _tools()
    gov = configure(ENFORCED, shadow_policy=_write(tmp_path, "shadow.yaml", SHADOW))
    run_calls(refund, email)
    calls = {d["args"].get("amount", "email"): d["call_id"] for d in _decided(gov)}
    found = shadows.report(gov.db, since_us=0, examples=1)
    assert (found.calls, found.differing, found.unreadable) == (6, 4, 0)
    got = [(d.enforced, d.shadow, d.rule_id, d.count, [e.call_id for e in d.examples]) for d in found.differences]
    assert got == [
        ("allow", "block", "refund-over-100", 2, [calls[500]]),  # the newest example only (examples=1)
        ("allow", "require_approval", "refund-again", 1, [calls[80]]),
        ("block", "allow", None, 1, [calls[2000]]),
    ]
    example = found.differences[2].examples[0]
    assert (example.agent, example.session, example.tool, example.args) == (
        "test-agent",
        "ses-1",
        "issue_refund",
        {"order_id": "A2000", "amount": 2000},
    )
    assert (
        example.enforced_rule_ids == ["huge-refund"] and example.enforced_reason == "refunds over $1000 are never made"
    )
    assert example.shadow_rule_ids == [] and example.shadow_reason is not None
    monitors = [(m.policy, m.rule_id, m.would, m.count) for m in found.monitored]
    assert monitors == [
        ("shadow", "shadow-watch", "require_approval", 4),
        ("enforced", "refund-watch", "block", 2),
    ]
    assert found.revisions == {parse_policy(textwrap.dedent(SHADOW)).revision: 6}


def test_a_shadow_that_fails_to_compile_is_refused_at_configure_and_nothing_changes(
    configure: Callable[..., Governor], tmp_path: Path
) -> None:
    refund, _ = _tools()
    gov = configure(ENFORCED)
    broken = _write(tmp_path, "broken.yaml", SHADOW.replace("args.amount > 5000", "args.amount >"))
    with pytest.raises(PolicyError, match="broken.yaml"):
        configure(ENFORCED, shadow_policy=broken)
    assert _runtime.current() is gov  # the configuration in place keeps running
    kinds = [e.body["kind"] for e in query(gov.db, EventFilter())]
    assert "policy.shadow_activated" not in kinds
    with clearance.session("s"):
        assert refund("A1", 150) == "refunded 150"
    assert "shadow" not in _decided(gov)[0]


def test_a_shadow_that_does_not_fit_a_guarded_tool_is_refused(
    configure: Callable[..., Governor], tmp_path: Path
) -> None:
    _tools()
    # send_email has no `subject`: a condition on it could never hold.
    misfit = SHADOW.replace(
        "  send_email: {}", "  send_email:\n    rules: [{id: subj, when: 'args.subject == \"x\"', effect: block}]"
    )
    with pytest.raises(PolicyError, match="subject"):
        configure(ENFORCED, shadow_policy=_write(tmp_path, "misfit.yaml", misfit))
    configure(ENFORCED, shadow_policy=_write(tmp_path, "fits.yaml", SHADOW))  # the same shadow, fitting


def test_the_shadow_from_the_environment_is_recorded_once_per_revision(
    configure: Callable[..., Governor], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLEARANCE_SHADOW_POLICY", str(_write(tmp_path, "shadow.yaml", SHADOW)))
    refund, _ = _tools()
    gov = configure(ENFORCED)
    configure(ENFORCED)  # the same shadow again: no second activation record
    gov = _runtime.current()  # type: ignore[assignment]
    revision = parse_policy(textwrap.dedent(SHADOW)).revision
    activated = [e.body for e in query(gov.db, EventFilter(kind="policy.shadow_activated"))]
    assert [(a["agent"], a["environment"], a["policy_revision"]) for a in activated] == [
        ("test-agent", "test", revision)
    ]
    with clearance.session("s"):
        refund("A1", 150)
    assert _decided(gov)[0]["shadow"]["revision"] == revision
    other = parse_policy(textwrap.dedent(ENFORCED))
    gov = configure(ENFORCED, shadow_policy=other)  # another shadow: recorded
    activated = [e.body for e in query(gov.db, EventFilter(kind="policy.shadow_activated"))]
    assert [a["policy_revision"] for a in activated] == [revision, other.revision]


def test_a_shadow_that_raises_is_recorded_as_a_shadow_error_and_the_call_runs(
    configure: Callable[..., Governor], monkeypatch: pytest.MonkeyPatch
) -> None:
    refund, _ = _tools()
    shadow = parse_policy(textwrap.dedent(SHADOW))

    def boom(*args: Any) -> Any:
        raise ZeroDivisionError("the shadow broke")

    monkeypatch.setattr(shadow, "decide", boom)
    gov = configure(ENFORCED, shadow_policy=shadow)
    with clearance.session("s"):
        assert refund("A1", 150) == "refunded 150"
    record = _decided(gov)[0]
    assert record["decision"] == "allow"
    assert record["shadow"]["rule_ids"] == ["shadow:error"]
    assert "ZeroDivisionError" in record["shadow"]["reason"]


def test_remote_mode_refuses_a_local_shadow(configure: Callable[..., Governor], tmp_path: Path) -> None:
    with pytest.raises(clearance.ConfigurationError, match="shadow_policy is for the embedded store"):
        clearance.configure(
            server_url="http://127.0.0.1:9", api_key="k", shadow_policy=_write(tmp_path, "s.yaml", SHADOW)
        )
