"""The argument boundary in the SDK: refused calls never run and are recorded truthfully.

And what is admitted reaches the conditions exactly as the tool receives it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cel_expr_python import cel

import clearance
from clearance import ToolCallBlocked
from clearance._guard._governor import Governor
from clearance._store import Database
from clearance._store._events import EventFilter, query, verify
from clearance.policy import Effect, parse_policy
from clearance.policy import _functions as fn
from clearance.policy._compile import engine

POLICY = """\
version: 1
default: allow
tools:
  send_email:
    rules:
      - {id: external, when: '!all_in(domains(args.to), ["acme.com"])', effect: block, reason: outside mail}
  issue_refund:
    rules:
      - {id: big, when: 'args.amount > 200.0', effect: block, reason: too big}
"""


def decided(db_path: Path) -> list[dict[str, Any]]:
    db = Database(str(db_path))
    try:
        assert verify(db).ok
        return [e.body for e in query(db, EventFilter(kind="tool_call.decided"))]
    finally:
        db.close()


def cyclic() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


def deep(n: int) -> Any:
    value: Any = 1
    for _ in range(n):
        value = {"a": value}
    return value


@pytest.mark.parametrize(
    "value, why, recorded",
    [
        (float("nan"), "args.value is nan, which is not a finite number", {"$float": "nan"}),
        (float("-inf"), "args.value is -inf, which is not a finite number", {"$float": "-inf"}),
        ("bob@acme.com\x00, eve@evil.io", "args.value holds a NUL character (U+0000) at position 12", None),
        ("a\ud800b", "args.value holds a lone surrogate (U+D800) at position 1", None),
        ({"k\ud800": 1}, "args.value['k\\ud800'] has a name that holds a lone surrogate", {"'k\\ud800'": 1}),
        (2**64 + 1, "args.value is an integer of 20 digits, beyond ±(2**53 − 1)", {"$int": str(2**64 + 1)}),
        (deep(100), "is nested more than 64 levels deep", None),
        (cyclic(), "args.value[0] contains itself (a cyclic list)", None),
        ([1.5, float("inf")], "args.value[1] is inf", [1.5, {"$float": "inf"}]),
    ],
)
def test_a_value_json_cannot_carry_blocks_the_call_and_is_recorded_truthfully(
    configure: Callable[..., Governor], db_path: Path, value: Any, why: str, recorded: Any
) -> None:
    configure(POLICY)
    ran: list[Any] = []

    @clearance.guard
    def store_value(value: Any) -> None:
        ran.append(value)

    with pytest.raises(ToolCallBlocked, match="the arguments cannot be decided") as blocked:
        store_value(value)
    assert why in blocked.value.reason and blocked.value.rule_ids == ("boundary:arguments",)
    assert ran == []
    [record] = decided(db_path)
    assert record["decision"] == "block" and why in record["reason"]
    assert record["args"]["value"] is not None  # never recorded as null
    if recorded is not None:
        assert record["args"]["value"] == recorded
    if isinstance(value, str) and "\x00" in value:
        assert record["args"]["value"] == value  # kept exactly (JSON escapes the NUL)
    if isinstance(value, str) and "\ud800" in value:
        assert record["args"]["value"]["$escaped"] == "a\\ud800b"


def test_the_largest_exact_integers_and_control_characters_run(
    configure: Callable[..., Governor], db_path: Path
) -> None:
    configure(POLICY)

    @clearance.guard
    def store_value(value: Any) -> Any:
        return value

    hostile = "x\x01\x1b[31m\u202etxt.exe\u200b\U0001f600"
    assert store_value([2**53 - 1, -(2**53 - 1), hostile]) == [2**53 - 1, -(2**53 - 1), hostile]
    [record] = decided(db_path)
    assert record["args"]["value"] == [2**53 - 1, -(2**53 - 1), hostile] and record["args_hash_alg"] == "sha256-jcs"


def test_a_nul_cannot_smuggle_a_recipient_past_a_domain_rule(configure: Callable[..., Governor]) -> None:
    """Before the boundary the condition saw 'bob@acme.com' and allowed the call."""
    configure(POLICY)
    sent: list[str] = []

    @clearance.guard
    def send_email(to: str) -> None:
        sent.append(to)

    with pytest.raises(ToolCallBlocked, match="NUL character"):
        send_email("bob@acme.com\x00, eve@evil.io")
    send_email("bob@acme.com")
    with pytest.raises(ToolCallBlocked, match="outside mail"):
        send_email("bob@acme.com, eve@evil.io")
    assert sent == ["bob@acme.com"]


def test_tool_names_are_one_spelling_in_decisions_facts_and_records(
    configure: Callable[..., Governor], db_path: Path
) -> None:
    gov = configure(POLICY)

    @clearance.guard(name="Send_Email")
    def mail(to: str) -> None:
        pass

    with pytest.raises(ToolCallBlocked, match="outside mail"):
        mail("eve@evil.io")
    # An integration hands over whatever name the framework (or the model) gave.
    for hostile in ("send\u200bemail", " send_email", "send_email\n", "s\u0435nd_email", "send_email\x00"):
        ticket = gov.begin(hostile, {"to": "eve@evil.io"}, None)
        assert ticket.decision.effect is Effect.BLOCK and ticket.tool == "invalid_tool_name"
        assert "tool name" in ticket.decision.reason
    records = decided(db_path)
    assert [r["tool"] for r in records] == ["send_email"] + ["invalid_tool_name"] * 5
    assert "U+200B" in records[1]["reason"] and "'send\\u200bemail'" in records[1]["reason"]


@pytest.mark.parametrize("session", ["s\x00", "s\u202e1", "s\ud800", " s", "x" * 201])
def test_a_session_id_outside_the_rule_is_refused_where_it_is_set(
    configure: Callable[..., Governor], session: str
) -> None:
    configure(POLICY)
    with pytest.raises(ValueError, match="session id"):
        with clearance.session(session):
            pass


def test_a_session_id_from_an_integration_is_checked_too(configure: Callable[..., Governor], db_path: Path) -> None:
    gov = configure(POLICY)
    ticket = gov.begin("send_email", {"to": "bob@acme.com"}, "thread\x00")
    assert ticket.decision.effect is Effect.BLOCK and ticket.session == "invalid-session-id"
    assert decided(db_path)[0]["session"] == "invalid-session-id"


def test_an_approver_edit_crosses_the_same_boundary() -> None:
    from clearance._edits import merge

    _, problems = merge({"amount": 5}, {"amount": float("nan")}, redacted=(), params=None)
    assert problems == ["amount: is nan, which is not a finite number (I-JSON carries no NaN or Infinity)"]
    _, problems = merge({"to": "a"}, {"to": "bob@acme.com\x00x"}, redacted=(), params=None)
    assert problems and "NUL" in problems[0]


# -- the conditions see exactly what the tool receives ------------------------------------------

ADMITTED = [
    "plain",
    "ctrl\x01\x02\x1f\x7f",
    "esc\x1b[2Jcleared",
    "bidi\u202etxt.exe\u2066x\u2069",
    "zero\u200bwidth\u200c\u200d\ufeff",
    "é and e\u0301",
    "astral \U0001f600 \U00010348",
    "line\u2028sep\u2029",
    "tab\tnew\nline\r",
    "",
]


def _eval(expression: str, args: dict[str, Any]) -> Any:
    """The value of a CEL expression, or "error" when it fails (a helper raised)."""
    program = engine().eval_env.compile(expression)
    result = program.eval(data={"args": args, "facts": {}})
    return "error" if result.type() == cel.Type.ERROR else result.plain_value()


@pytest.mark.parametrize("text", ADMITTED)
def test_every_admitted_string_reaches_cel_whole(text: str) -> None:
    args = {"s": text, "t": text[-3:]}
    assert _eval("args.s", args) == text
    assert _eval("size(args.s)", args) == len(text)
    assert _eval("args.s == args.s + ''", args) is True
    assert _eval("args.s.endsWith(args.t)", args) is True
    assert _eval("args.s.startsWith(args.s)", args) is True
    assert _eval("args.s.contains(args.t)", args) is True
    assert _eval("[args.s][0] == args.s", args) is True
    assert _eval("{'k': args.s}['k'] == args.s", args) is True
    assert _eval("args.s.matches('^(?s).*$')", args) is True
    assert _eval("all_in(args.s, [args.s])", args) is fn.all_in(text, [text])
    assert _eval("any_in([args.s], [args.s])", args) is fn.any_in([text], [text])


@pytest.mark.parametrize("text", [f"bob@acme.com{c}" for c in ADMITTED] + ["bob@acme.com", "b@x.io, c@y.io"])
def test_the_helpers_see_what_python_sees(text: str) -> None:
    """domains(), domain() and the decimal helpers decide on the whole value, or fail closed."""

    def python(f: Callable[[], Any]) -> Any:
        try:
            return f()
        except ValueError:
            return "error"

    args = {"s": text}
    assert _eval("domains(args.s)", args) == python(lambda: fn.domains(text))
    assert _eval("domain(args.s)", args) == python(lambda: fn.domain(text))
    assert _eval("dec_gt(args.s, '1')", args) == python(lambda: fn.dec_cmp(text, "1") > 0)


def test_a_policy_never_decides_on_a_cut_string() -> None:
    """Offline deciding (policy tests, test against history) goes through the boundary too."""
    from clearance._guard._record import decide_admitted

    policy = parse_policy(POLICY)
    d = decide_admitted(policy, "send_email", {"to": "bob@acme.com\x00, eve@evil.io"}, {})
    assert d.effect is Effect.BLOCK and "NUL" in d.reason
    assert decide_admitted(policy, "send_email", {"to": "bob@acme.com"}, {}).effect is Effect.ALLOW


def test_refused_records_stay_readable_json(configure: Callable[..., Governor], db_path: Path) -> None:
    configure(POLICY)

    @clearance.guard
    def store_value(value: Any) -> None:
        pass

    for value in (float("nan"), "a\ud800", {"\ud800": "\udfff"}, 2**70, deep(70), "x\x00y"):
        with pytest.raises(ToolCallBlocked):
            store_value(value)
    for record in decided(db_path):
        json.dumps(record, ensure_ascii=False).encode("utf-8")  # every record is valid UTF-8 JSON


def test_what_a_tool_returns_or_raises_is_recorded_whatever_it_holds(
    configure: Callable[..., Governor], db_path: Path
) -> None:
    """A tool's output is not checked like its arguments, but its record must still be stored and read."""
    configure(POLICY)

    @clearance.guard
    def echo(text: str) -> str:
        raise ValueError("bad input \ud800\x00 " + text)

    with pytest.raises(ValueError):
        echo("x")
    clearance.flush()
    db = Database(str(db_path))
    try:
        assert verify(db).ok
        [finished] = [e.body for e in query(db, EventFilter(kind="tool_call.finished"))]
    finally:
        db.close()
    assert finished["error"] == "ValueError: bad input \\ud800\\x00 x"  # escaped: it lands in a column


def test_a_result_json_cannot_carry_is_recorded_marked() -> None:
    from clearance._guard._tickets import result_value

    assert result_value({"ratio": float("nan"), "text": "a\ud800"}) == {
        "ratio": {"$float": "nan"},
        "text": {"$unstorable": "text with lone surrogates", "$escaped": "a\\ud800"},
    }


def test_values_python_tools_take_are_still_admitted(configure: Callable[..., Governor], db_path: Path) -> None:
    """Subclasses of str/int/float are their base values; an inexact Decimal and a map that only
    looks like a marker are ordinary values, not refusals."""
    import enum
    from decimal import Decimal

    class Colour(enum.StrEnum):
        RED = "red"

    class Level(enum.IntEnum):
        HIGH = 3

    configure(POLICY)

    @clearance.guard
    def store_value(value: Any) -> None:
        pass

    store_value([Colour.RED, Level.HIGH, Decimal("0.1234567890123456789"), {"$truncated": "x"}, {"$float": "1.5"}])
    [record] = decided(db_path)
    assert record["decision"] == "allow"
    assert record["args"]["value"][:3] == ["red", 3, {"$decimal": "0.1234567890123456789"}]


def test_odd_keys_and_names_are_refused_not_raised() -> None:
    from clearance._boundary import check_args
    from clearance._names import admit_names

    assert check_args({1: 5})[0].message == "has a name that is a int, not text"
    assert check_args({"k" * 1025: 1})[0].message.startswith("has a key of 1025 characters")
    tool, session, why = admit_names(["unhashable"], {"nor": "this"})
    assert (tool, session) == ("invalid_tool_name", "invalid-session-id") and why is not None
    assert "not int" in (admit_names(1, "s")[2] or "") and "not bool" in (admit_names(True, "s")[2] or "")


def test_a_refused_call_is_redacted_like_any_other(configure: Callable[..., Governor], db_path: Path) -> None:
    configure(POLICY + "redact:\n  pay: [/card]\n")

    @clearance.guard
    def pay(card: str, amount: float, note: str) -> None:
        pass

    with pytest.raises(ToolCallBlocked):
        pay("4111111111111111", float("nan"), "x" * 1100)
    [record] = decided(db_path)
    assert record["args"]["card"] == "[REDACTED]" and record["args_redacted"] == ["/card"]
    raw = db_path.read_bytes() + Path(str(db_path) + "-wal").read_bytes()
    assert b"4111111111111111" not in raw


def test_crewai_style_tool_names_are_admitted_and_folded() -> None:
    from clearance._names import admit_names

    assert admit_names("Read a file's content", "s")[:2] == ("read_a_file's_content", "s")
    assert admit_names("Read a file\u2019s content", "s")[2] is not None  # a typographic apostrophe is not ASCII


def test_usage_reported_with_a_session_outside_the_rule_is_kept_under_a_marked_one(
    configure: Callable[..., Governor], db_path: Path
) -> None:
    configure(POLICY)
    clearance.record_usage("gpt-4o\x00x", input_tokens=10, output_tokens=2, session="thread\x00")
    db = Database(str(db_path))
    try:
        [usage] = [e.body for e in query(db, EventFilter(kind="llm.call"))]
        assert verify(db).ok
    finally:
        db.close()
    assert usage["session"] == "invalid-session-id" and usage["model"] == "gpt-4o\\x00x"
