from __future__ import annotations

import asyncio
import inspect
import sqlite3
import threading
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import clearance
from clearance import ConfigurationError, PolicyError, ToolCallBlocked
from clearance._guard._governor import Governor
from clearance._store import EventFilter
from clearance._store._events import query, verify


def events(gov: Governor, **f: Any) -> list[dict[str, Any]]:
    return [e.body for e in query(gov.db, EventFilter(**f))]


def test_signature_docstring_and_hints_are_kept(configure: Callable[..., Governor]) -> None:
    def issue_refund(order_id: str, amount: float = 10.0, *, note: str | None = None) -> str:
        """Refund an order."""
        return "ok"

    governed = clearance.guard(issue_refund)
    assert inspect.signature(governed) == inspect.signature(issue_refund)
    assert governed.__doc__ == "Refund an order." and governed.__name__ == "issue_refund"
    assert typing.get_type_hints(governed) == typing.get_type_hints(issue_refund)


def test_arguments_bind_by_name_whether_positional_or_keyword(configure: Callable[..., Governor]) -> None:
    gov = configure()

    @clearance.guard
    def issue_refund(order_id: str, amount: float, currency: str = "USD") -> str:
        return f"{order_id}:{amount}"

    assert issue_refund("A1", 50) == "A1:50"
    assert issue_refund(amount=50, order_id="A1") == "A1:50"
    decided = events(gov, kind="tool_call.decided")
    assert decided[0]["args"] == decided[1]["args"] == {"order_id": "A1", "amount": 50, "currency": "USD"}
    assert decided[0]["args_hash"] == decided[1]["args_hash"]
    with pytest.raises(ToolCallBlocked):
        issue_refund("A2", 2000)  # positional amount still reaches the daily-cap rule


def test_var_kwargs_and_methods(configure: Callable[..., Governor]) -> None:
    gov = configure()

    class Payments:
        @clearance.guard(name="issue_refund")
        def refund(self, order_id: str, **extra: Any) -> str:
            return order_id

    assert Payments().refund("A1", amount=10, reason="x") == "A1"
    assert events(gov, kind="tool_call.decided")[0]["args"] == {"order_id": "A1", "amount": 10, "reason": "x"}


def test_blocked_call_never_runs_and_says_why(configure: Callable[..., Governor]) -> None:
    gov = configure()
    ran = []

    @clearance.guard(name="db.drop_table")
    def drop(table: str) -> None:
        ran.append(table)

    with pytest.raises(ToolCallBlocked) as info:
        drop("customers")
    assert ran == [] and info.value.reason == "no rule matched; default of 'db.*' is block"
    assert info.value.tool == "db.drop_table" and info.value.call_id.startswith("call_")
    [decided] = events(gov, kind="tool_call.decided")
    assert decided["decision"] == "block" and events(gov, kind="tool_call.finished") == []


def test_record_is_committed_before_the_tool_runs(configure: Callable[..., Governor], db_path: Path) -> None:
    configure()
    seen: list[tuple[str, str]] = []

    @clearance.guard
    def send_email(to: str, subject: str) -> None:
        # Another connection (as another process would) already sees the decision.
        with sqlite3.connect(db_path) as other:
            seen.extend(other.execute("SELECT kind, decision FROM events WHERE tool = 'send_email'").fetchall())

    send_email("bob@acme.com", "hi")
    assert seen == [("tool_call.decided", "allow")]


def test_outcome_records_errors_and_reraises(configure: Callable[..., Governor]) -> None:
    gov = configure()

    @clearance.guard
    def send_email(to: str) -> None:
        raise TimeoutError("smtp timed out")

    with pytest.raises(TimeoutError):
        send_email("bob@acme.com")
    clearance.flush()
    [finished] = events(gov, kind="tool_call.finished")
    assert finished["decision"] == "error" and finished["error"] == "TimeoutError: smtp timed out"
    assert finished["duration_ms"] >= 0


def test_async_tools_are_awaited(configure: Callable[..., Governor]) -> None:
    gov = configure()

    @clearance.guard
    async def send_email(to: str) -> str:
        await asyncio.sleep(0)
        return "sent"

    assert inspect.iscoroutinefunction(send_email)
    assert asyncio.run(send_email("bob@acme.com")) == "sent"
    with pytest.raises(ToolCallBlocked):
        asyncio.run(send_email("eve@evil.com"))
    assert [e["decision"] for e in events(gov, kind="tool_call.decided")] == ["allow", "block"]


def test_unserialisable_and_huge_arguments_are_recorded_safely(configure: Callable[..., Governor]) -> None:
    gov = configure()

    class Connection:
        pass

    @clearance.guard(name="send_email")
    def send(to: str, body: str, conn: Any = None) -> int:
        return len(body)

    assert send("bob@acme.com", "x" * 10_000_000, Connection()) == 10_000_000
    [decided] = events(gov, kind="tool_call.decided")
    assert decided["args_truncated"] is True
    assert decided["args"]["body"].endswith("[truncated, 10000000 characters]")
    assert decided["args"]["conn"]["$type"].endswith("Connection")
    from clearance._canonical import canonical_json, sha256_hex, to_plain

    full = to_plain({"to": "bob@acme.com", "body": "x" * 10_000_000, "conn": Connection()})
    assert decided["args_hash"] == sha256_hex(canonical_json(full))


def test_redaction_happens_before_storage(configure: Callable[..., Governor], db_path: Path) -> None:
    configure()

    @clearance.guard
    def issue_refund(order_id: str, amount: float, card_number: str) -> None:
        pass

    issue_refund("A1", 10, "4111111111111111")
    raw = db_path.read_bytes() + Path(str(db_path) + "-wal").read_bytes()
    assert b"4111111111111111" not in raw


def test_unconfigured_calls_fail_closed(db_path: Path) -> None:
    ran = []

    @clearance.guard
    def send_email(to: str) -> None:
        ran.append(to)

    with pytest.raises(ConfigurationError, match="Clearance is not configured"):
        send_email("bob@acme.com")
    assert ran == []


def test_environment_configures_and_arguments_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, db_path: Path
) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\n")
    monkeypatch.setenv("CLEARANCE_POLICY", str(policy))
    monkeypatch.setenv("CLEARANCE_DATABASE_URL", str(db_path))
    monkeypatch.setenv("CLEARANCE_AGENT", "from-env")

    @clearance.guard
    def ping() -> str:
        return "pong"

    assert ping() == "pong"  # configured lazily from the environment
    from clearance._guard import _runtime

    assert _runtime.current().settings.agent == "from-env"
    clearance.configure(agent="from-arg")
    assert _runtime.current().settings.agent == "from-arg"
    assert _runtime.current().settings.database_url == str(db_path)


def test_invalid_settings_are_configuration_errors(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\n")
    with pytest.raises(ConfigurationError, match="busy_timeout"):
        clearance.configure(policy=str(policy), busy_timeout=-1)
    with pytest.raises(ConfigurationError, match="no policy"):
        clearance.configure()


def test_conditions_are_checked_against_the_tools_real_parameters(configure: Callable[..., Governor]) -> None:
    configure()  # its issue_refund rules read args.amount

    def issue_refund(order_id: str, total: float) -> None:
        pass

    with pytest.raises(PolicyError, match="the tool has no parameter 'amount'"):
        clearance.guard(issue_refund)


def test_a_tool_name_cannot_be_taken_twice(configure: Callable[..., Governor]) -> None:
    def a() -> None: ...
    def b() -> None: ...

    clearance.guard_tool("same", a)
    with pytest.raises(ConfigurationError, match="two different functions"):
        clearance.guard_tool("same", b)
    with pytest.raises(ConfigurationError, match="1 to 200 characters"):
        clearance.guard_tool("", a)
    with pytest.raises(ConfigurationError, match="a space at an end"):
        clearance.guard_tool(" ", a)
    with pytest.raises(ConfigurationError, match="two different functions"):
        clearance.guard_tool("SAME", b)  # one tool, whatever the case


def test_sessions_are_per_context(configure: Callable[..., Governor]) -> None:
    gov = configure()

    @clearance.guard
    def send_email(to: str) -> None:
        pass

    send_email("a@acme.com")  # default session of the process
    with clearance.session("s-main") as sid:
        assert clearance.get_session() == sid == "s-main"
        send_email("a@acme.com")

        def worker(name: str) -> None:
            with clearance.session(name):
                send_email("a@acme.com")

        threads = [threading.Thread(target=worker, args=(f"s-thread-{i}",)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        async def task(name: str) -> None:
            token = clearance.set_session(name)
            await asyncio.sleep(0.01)
            send_email("a@acme.com")
            clearance.reset_session(token)

        async def both() -> None:
            await asyncio.gather(task("s-task-1"), task("s-task-2"))

        asyncio.run(both())
        assert clearance.get_session() == "s-main"
    assert clearance.get_session() is None
    sessions = [e["session"] for e in events(gov, kind="tool_call.decided")]
    assert sessions[0] == gov.default_session and sessions[1] == "s-main"
    assert sorted(sessions[2:]) == ["s-task-1", "s-task-2", "s-thread-0", "s-thread-1", "s-thread-2"]


def test_record_usage_prices_and_flags_unknown_models(configure: Callable[..., Governor]) -> None:
    gov = configure(price_overrides={"house-model": {"input_per_mtok": 1, "output_per_mtok": 2}})
    with clearance.session("s1"):
        priced = clearance.record_usage("gpt-4o", 1000, 500, cached_input_tokens=200, provider="openai")
        unknown = clearance.record_usage("no-such-model-xyz", 100, 10)
        house = clearance.record_usage("house-model", 1_000_000, 1_000_000)
    assert str(priced.cost_usd) == "0.00725" and priced.price_source.startswith("genai-prices ")
    assert unknown.cost_usd is None and unknown.price_source.startswith("unpriced")
    assert house.cost_usd == 3 and house.price_source == "override"
    calls = events(gov, kind="llm.call")
    assert calls[1]["cost_usd"] is None and calls[1]["priced"] is False and calls[1]["cost_nusd"] is None
    assert calls[0]["cost_nusd"] == 7_250_000 and calls[0]["session"] == "s1"


@pytest.mark.parametrize(
    "args, message",
    [
        (("gpt-4o", -1, 0), "input_tokens must be a whole number"),
        (("gpt-4o", 1.5, 0), "input_tokens must be a whole number"),
        (("gpt-4o", 10, 0, 11), "cannot exceed"),
        (("", 1, 1), "model must be"),
    ],
)
def test_record_usage_rejects_bad_counts(
    configure: Callable[..., Governor], args: tuple[Any, ...], message: str
) -> None:
    configure()
    with pytest.raises(ConfigurationError, match=message):
        clearance.record_usage(*args)


def test_chain_verifies_after_a_mixed_run(configure: Callable[..., Governor]) -> None:
    gov = configure()

    @clearance.guard
    def send_email(to: str) -> None:
        pass

    for i in range(20):
        try:
            send_email("a@acme.com" if i % 2 else "x@evil.com")
        except ToolCallBlocked:
            pass
    clearance.flush()
    report = verify(gov.db)
    assert report.ok and report.checked == 1 + 20 + 10  # activation, decisions, outcomes


def test_condition_errors_are_recorded_with_their_text(configure: Callable[..., Governor]) -> None:
    gov = configure()

    @clearance.guard(name="issue_refund")
    def refund(order_id: str, **extra: Any) -> None:  # no `amount`: the rules cannot read it
        pass

    with pytest.raises(ToolCallBlocked) as info:
        refund("A1")
    assert "could not be evaluated" in info.value.reason and "its on_error is block" in info.value.reason
    [decided] = events(gov, kind="tool_call.decided")
    assert decided["decision"] == "block"
    assert decided["errors"] == [
        'refund-needs-approval: Key not found in map : "amount"',
        'refund-daily-cap: Key not found in map : "amount"',
    ]


def test_configure_accepts_a_compiled_policy(db_path: Path) -> None:
    policy = clearance.parse_policy("version: 1\ndefault: block\n", "inline")
    clearance.configure(policy=policy, database_url=str(db_path))

    @clearance.guard
    def anything() -> None: ...

    with pytest.raises(ToolCallBlocked, match="global default is block"):
        anything()
