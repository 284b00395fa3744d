"""The stateful facts a condition can read as `facts.NAME`, and how their names parse.

Facts are computed exactly from the store, only when a tool's rules (or a budget) use them:

| name                    | value                                                        |
|-------------------------|--------------------------------------------------------------|
| `session_cost_usd`      | LLM cost recorded in this session so far (priced calls only) |
| `session_tokens`        | input + output tokens recorded in this session so far       |
| `session_calls`         | earlier calls to this tool in this session                  |
| `calls_<window>`        | earlier calls to this tool by this agent within the window  |
| `sum_<window>_<arg>`    | sum of argument `<arg>` over those calls                     |
| `agent_cost_usd_<window>` | LLM cost recorded by this agent within the window          |
| `agent_tokens_<window>` | tokens recorded by this agent within the window              |
| `grant_id`              | the id of a live grant that covers this call, else `""`      |
| `session_budget_extension_usd`, `session_budget_extension_tokens` | added to this session's budget by approvers |
| `agent_budget_extension_usd_<window>`, `..._tokens_<window>` | added to the agent's budget within the window |

A window is a number and a unit, e.g. `10m`, `1h`, `24h`, `7d`. Calls count unless they were
blocked, denied, expired or cancelled, so a cap also counts calls still waiting for approval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

FactKind = Literal[
    "session_cost_usd",
    "session_tokens",
    "session_calls",
    "calls",
    "sum",
    "agent_cost_usd",
    "agent_tokens",
    "grant_id",
    "session_budget_extension_usd",
    "session_budget_extension_tokens",
    "agent_budget_extension_usd",
    "agent_budget_extension_tokens",
]

_WINDOWED = re.compile(
    r"^(?:(?P<calls>calls)_(?P<w1>\d+[smhd])"
    r"|(?P<sum>sum)_(?P<w2>\d+[smhd])_(?P<arg>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<agent>agent_cost_usd|agent_tokens|agent_budget_extension_usd|agent_budget_extension_tokens)"
    r"_(?P<w3>\d+[smhd]))$"
)
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PLAIN: dict[str, FactKind] = {
    "session_cost_usd": "session_cost_usd",
    "session_tokens": "session_tokens",
    "session_calls": "session_calls",
    "grant_id": "grant_id",
    "session_budget_extension_usd": "session_budget_extension_usd",
    "session_budget_extension_tokens": "session_budget_extension_tokens",
}
FACT_NAMES_HELP = (
    "session_cost_usd, session_tokens, session_calls, calls_<window>, sum_<window>_<arg>, "
    "agent_cost_usd_<window>, agent_tokens_<window>, grant_id, session_budget_extension_usd, "
    "session_budget_extension_tokens, agent_budget_extension_usd_<window> and "
    "agent_budget_extension_tokens_<window>, with a window like 10m, 1h or 7d"
)


@dataclass(frozen=True)
class FactSpec:
    """One fact a policy uses, parsed from its name.

    Attributes:
        name: The name as written after `facts.`.
        kind: What is computed.
        window_seconds: The rolling window, for windowed facts.
        arg: The summed argument, for `sum_*` facts.
    """

    name: str
    kind: FactKind
    window_seconds: int = 0
    arg: str = ""


def parse_fact(name: str) -> FactSpec | None:
    """The spec of a fact name, or None when no fact has that name."""
    if name in _PLAIN:
        return FactSpec(name, _PLAIN[name])
    m = _WINDOWED.match(name)
    if m is None:
        return None
    window = m.group("w1") or m.group("w2") or m.group("w3")
    seconds = int(window[:-1]) * _UNIT[window[-1]]
    if seconds <= 0:
        return None
    if m.group("calls"):
        return FactSpec(name, "calls", seconds)
    if m.group("sum"):
        return FactSpec(name, "sum", seconds, m.group("arg"))
    kind: FactKind = m.group("agent")  # type: ignore[assignment]  # the pattern admits only FactKind names
    return FactSpec(name, kind, seconds)
