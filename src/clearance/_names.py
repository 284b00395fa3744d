"""Names at the boundary: tool names, session ids, agent names and the people agents act for.

Tool names are ASCII — letters, digits, `_ . : / ' -` and single inner spaces — and compared in
lower case with `-` and spaces read as `_`: `Send_Email`, `send-email` and `Send Email` are
`send_email` in decisions, facts and records. Session ids, agent names and people are Unicode
text in NFC without control, format, private-use or unassigned characters, line separators, or
spaces at either end, 1 to 200 characters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache

MAX_NAME = 200
# Apostrophes too: CrewAI's own tools are named like "Read a file's content".
_TOOL = re.compile(r"[A-Za-z0-9_.:/'-]+(?: [A-Za-z0-9_.:/'-]+)*")
_BAD_NAME_CATEGORIES = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def tool_problem(name: object) -> str | None:
    """Why `name` is not a tool name, or None when it is (compare it as `tool_name` returns it)."""
    if not isinstance(name, str):
        return f"a tool name must be text, not {type(name).__name__}"
    if not name or len(name) > MAX_NAME:
        return f"a tool name has 1 to {MAX_NAME} characters (this one has {len(name)})"
    if _TOOL.fullmatch(name) is None:
        bad = next((c for c in name if not (c.isascii() and (c.isalnum() or c in "_.:/'- "))), None)
        if bad is not None:
            return f"tool name {ascii(name)} holds {_describe(bad)}; tool names are ASCII letters, digits, _ . : / ' -"
        return f"tool name {ascii(name)} has a space at an end or two in a row"
    return None


def tool_name(name: str) -> str:
    """The canonical form of a tool name (see `fold_tool`).

    Raises:
        ValueError: It is not a tool name (see the module's rules).
    """
    problem = tool_problem(name)
    if problem is not None:
        raise ValueError(problem)
    return fold_tool(name)


_SEPARATORS = re.compile(r"[ -]")


def fold_tool(name: str) -> str:
    """A tool name (or glob) as it is compared and recorded: lower case, `-` and spaces as `_`.

    Names a person reads as one tool are one tool (`Send-Email`, `send email`, `SEND_EMAIL`),
    whichever the model or the framework spelt. In a glob, `-` inside `[…]` is kept (a range).
    """
    folded = name.lower()
    if "[" not in folded:
        return _SEPARATORS.sub("_", folded)
    out, in_class = [], False
    for char in folded:
        if char == "[":
            in_class = True
        elif char == "]":
            in_class = False
        out.append("_" if char in " -" and not in_class else char)
    return "".join(out)


def name_problem(value: object, what: str) -> str | None:
    """Why `value` is not a valid session id / agent name / person (`what`), or None."""
    if not isinstance(value, str):
        return f"{what} must be text, not {type(value).__name__}"
    if not value or len(value) > MAX_NAME:
        return f"{what} has 1 to {MAX_NAME} characters (this one has {len(value)})"
    if not (value.isascii() and value.isprintable()):
        for i, char in enumerate(value):
            if (char.isascii() and char.isprintable()) or unicodedata.category(char) not in _BAD_NAME_CATEGORIES:
                continue
            return f"{what} {ascii(value[:60])} holds {_describe(char)} at position {i}"
    if value != value.strip():
        return f"{what} {ascii(value[:60])} has spaces at an end"
    return None


def checked_name(value: str, what: str) -> str:
    """A session id, agent name or person in NFC.

    Raises:
        ValueError: It is not valid (see the module's rules).
    """
    problem = name_problem(value, what)
    if problem is not None:
        raise ValueError(problem)
    return value if value.isascii() else unicodedata.normalize("NFC", value)


def _describe(char: str) -> str:
    label = unicodedata.name(char, "") or unicodedata.category(char)
    return f"U+{ord(char):04X} ({label.lower()})"


MODEL_CALL = "clearance.model_call"  # the model-call gate's calls: decided by the budgets alone
_GATE: ContextVar[bool] = ContextVar("clearance_model_call_gate", default=False)


@contextmanager
def model_call_gate() -> Iterator[None]:
    """Within it, `MODEL_CALL` is admitted: the gate's own calls, never a tool's."""
    token = _GATE.set(True)
    try:
        yield
    finally:
        _GATE.reset(token)


def in_model_call_gate() -> bool:
    """Whether this is the model-call gate's own call (see `model_call_gate`)."""
    return _GATE.get()


def admit_names(tool: object, session: object, *, reserved: bool = False) -> tuple[str, str, str | None]:
    """The canonical tool name and session id, and why the call is refused for them (or None).

    Names repeat from call to call, so the answers for text are cached. `MODEL_CALL` is refused
    unless `reserved` or inside `model_call_gate()`: a tool of that name (an MCP server's, say)
    would otherwise be decided by the budgets alone, past every rule.
    """
    if type(tool) is str and type(session) is str:
        out = _admit_text_names(tool, session)
    else:
        out = _admit_names(tool, session)
    if out[0] == MODEL_CALL and not (reserved or _GATE.get()):
        why = f"tool name {ascii(tool)} is reserved for Clearance's model-call gate"
        return INVALID_TOOL, out[1], "; ".join(w for w in (why, out[2]) if w)
    return out


@lru_cache(maxsize=4096)
def _admit_text_names(tool: str, session: str) -> tuple[str, str, str | None]:
    return _admit_names(tool, session)


def _admit_names(tool: object, session: object) -> tuple[str, str, str | None]:
    """`admit_names`, uncached.

    A refused name is replaced by `INVALID_TOOL` / `INVALID_SESSION`, so the refusal itself is
    recorded; its reason quotes the name, escaped.
    """
    tool_why = tool_problem(tool)
    session_why = name_problem(session, "the session id")
    tool_out = fold_tool(tool) if tool_why is None and isinstance(tool, str) else INVALID_TOOL
    session_out = (
        checked_name(session, "session") if session_why is None and isinstance(session, str) else INVALID_SESSION
    )
    why = "; ".join(w for w in (tool_why, session_why) if w is not None)
    return tool_out, session_out, why or None


# What a call refused for its tool name or session is recorded under (the reason quotes the
# refused name, escaped), so the record itself passes every check on the way to the server.
INVALID_TOOL = "invalid_tool_name"
INVALID_SESSION = "invalid-session-id"
