"""What every framework integration shares: deciding a call, refusing it, resuming a paused one."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Literal

from .._canonical import to_plain
from .._context import get_session
from .._guard import _runtime
from .._guard._backend import Backend
from .._guard._tickets import Approved, Ticket
from ..errors import ApprovalAlreadyExecuted, ApprovalError, ToolCallBlocked
from ..policy import Effect

OnBlock = Literal["message", "raise"]
log = logging.getLogger("clearance")


def refusal_text(exc: ToolCallBlocked | ApprovalError) -> str:
    """What the model is told when a call does not run: the reason, so it can tell the user."""
    if isinstance(exc, ToolCallBlocked):
        return f"Blocked by policy: {exc.reason}"
    return f"Not approved: {exc}"


def recorded_outcome(exc: ApprovalError) -> str | None:
    """What the model is told of an approved call that already ran: its recorded result (or failure).

    A paused run resumed a second time from the same saved state asks for a call that ran on the
    first resume; the model must get what the tool returned then, not a refusal (it would tell the
    user the refund failed, or retry it). None when `exc` is not such a call (it is still running
    elsewhere, or was refused).
    """
    if not isinstance(exc, ApprovalAlreadyExecuted):
        return None
    if exc.status == "executed":
        result = exc.result
        text = recorded_text(result)
        if text is not None:
            return text
        return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)
    if exc.status == "failed":
        return f"Error: {exc.tool} failed when it ran: {exc.error or 'no reason recorded'}"
    return None


def recorded_text(result: Any) -> str | None:
    """A result recorded as text (not JSON-like, or too large: `{"repr": …}`) as the model reads it, else None.

    A cut one says so, so the model does not take its beginning for the whole result.
    """
    if not (isinstance(result, dict) and isinstance(result.get("repr"), str) and set(result) <= {"repr", "truncated"}):
        return None
    text: str = result["repr"]
    if result.get("truncated") is True:
        text += f" … [cut: Clearance recorded only the first {len(text)} characters of this result's JSON]"
    return text


def blocked(ticket: Ticket) -> ToolCallBlocked:
    """The error of a call policy blocked."""
    return ToolCallBlocked(ticket.tool, ticket.decision.reason, ticket.decision.rule_ids, ticket.call_id)


def paused_call_key(tool_call_id: str | None, scope: str | None = None) -> str | None:
    """A paused call's key in the store: its tool-call id within `scope` (as is, if short and plain).

    The model's id may be anything (10 MB, NUL, lone surrogates): such a key is a hash of it.
    Scoped by the framework's conversation (a LangGraph thread, an ADK session), so a provider
    that reuses ids (`call_0`) across conversations, or a model that copies another
    conversation's, does not find that conversation's approval — nor its recorded result.
    Applying it to a key it made gives the same key.
    """
    if not tool_call_id:
        return None
    key = f"{scope}/{tool_call_id}" if scope else tool_call_id
    if len(key) <= 120 and key.isprintable():  # (neither control, format nor surrogate characters)
        return key
    return "sha256:" + hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def begin(
    tool: str, args: dict[str, Any], *, call_key: str | None = None, scope: str | None = None
) -> tuple[Backend, Ticket]:
    """Decide and record a call in the current session.

    With a `call_key` (the framework's tool-call id, within `scope`: see `paused_call_key`) the
    approval, if one is needed, waits for the framework's own pause (mode `pause`), and a hook
    replayed on resume gets the first ticket back instead of a second record.

    Raises:
        ToolCallBlocked: Policy blocks the call.
        ApprovalError: The key's approval holds other arguments.
    """
    governor = _runtime.current()
    key = paused_call_key(call_key, scope) if call_key else call_key  # (an empty id stays as it was)
    mode = "pause" if key is not None else "wait"
    ticket = governor.begin(tool, args, get_session(), mode=mode, call_key=key)
    if ticket.decision.effect is Effect.BLOCK:
        raise blocked(ticket)
    return governor, ticket


def claim_approved(governor: Backend, ticket: Ticket) -> tuple[Ticket, Approved]:
    """Claim a paused call whose approval was decided, to run it here (exactly once anywhere).

    Returns the ticket to record its outcome under, and the approval (with any edits).

    Raises:
        ApprovalPending: Nobody has decided yet.
        ApprovalError: Denied, expired, cancelled — or it ran already elsewhere.
    """
    assert ticket.approval_id is not None
    decided, approved, _ = governor.approved_call(ticket.approval_id)
    governor.claim(decided)
    return decided, approved


def status(governor: Backend, ticket: Ticket) -> Approved | None:
    """The approval of a paused call once approved (None when the call needs none).

    Raises:
        ApprovalPending: Nobody has decided yet.
        ApprovalError: It may not run (denied, expired, cancelled, ran already).
    """
    if ticket.approval_id is None:
        return None
    return governor.approved_call(ticket.approval_id)[1]


def normalise(args: Mapping[str, Any], schema: Mapping[str, Any] | None) -> dict[str, Any]:
    """The arguments as the tool will receive them: whole numbers where its schema wants numbers become floats.

    Models write `850` for a `float` parameter; the framework passes `850.0`. Deciding (and
    showing the approver) the coerced value keeps the decision, the approval and the run alike.
    """
    properties = (schema or {}).get("properties") or {}
    out: dict[str, Any] = {}
    for name, value in args.items():
        spec = properties.get(name) if isinstance(properties, Mapping) else None
        if isinstance(value, int) and not isinstance(value, bool) and _wants_number(spec):
            value = float(value)
        out[name] = value
    plain = to_plain(out)
    assert isinstance(plain, dict)
    return plain


def _wants_number(spec: Any) -> bool:
    if not isinstance(spec, Mapping):
        return False
    kind = spec.get("type")
    if kind == "number" or (isinstance(kind, list) and "number" in kind and "integer" not in kind):
        return True
    options = spec.get("anyOf") or spec.get("oneOf") or ()
    kinds = {o.get("type") for o in options if isinstance(o, Mapping)}
    return "number" in kinds and "integer" not in kinds


def parse_json_args(raw: str | None) -> dict[str, Any]:
    """A model's JSON arguments as a dict.

    Raises:
        ValueError: They are not a JSON object.
    """
    value = json.loads(raw or "{}")
    if not isinstance(value, dict):
        raise ValueError("the arguments are not a JSON object")
    return value


def before_model_call(model: object) -> None:
    """Before a framework's model call: stop or pause it while a budget is spent.

    See `Backend.before_model_call`; the call is checked in the current session. Does nothing
    when Clearance is not configured, and costs next to nothing when the policy has no budgets.

    Raises:
        ModelCallBlocked: A spent budget blocks it.
        ApprovalDenied: A human denied it.
        ApprovalTimeout: Nobody decided in time.
    """
    governor = _runtime._current
    if governor is not None:
        governor.before_model_call(get_session(), str(model) if model is not None else None)


async def before_model_call_async(model: object) -> None:
    """`before_model_call`, waiting for an approval without blocking the event loop.

    Raises:
        ModelCallBlocked: A spent budget blocks it.
        ApprovalDenied: A human denied it.
        ApprovalTimeout: Nobody decided in time.
    """
    governor = _runtime._current
    if governor is not None:
        await governor.before_model_call_async(get_session(), str(model) if model is not None else None)


def record_model_call(
    model: str | None,
    input_tokens: Any,
    output_tokens: Any,
    cached_input_tokens: Any = 0,
    reasoning_tokens: Any = 0,
    *,
    provider: str | None = None,
    started: float | None = None,
    traced: bool = False,
) -> None:
    """Record a framework's model call in the current session; never raises.

    Counts come as frameworks report them (None, floats): they are made whole numbers, and the
    cached and reasoning parts are kept within their totals. Nothing is recorded when Clearance
    is not configured (or shut down), and a failure to record is logged — the agent's model call
    must not fail for it. `started` is the call's `time.perf_counter()` start, for its latency.
    `traced`: the framework puts this call's usage on an OpenTelemetry span of its own (no usage
    span is added for it).
    """
    governor = _runtime._current
    if governor is None:
        return
    given = _count(input_tokens), _count(output_tokens)
    try:
        governor.record_usage(
            str(model or "unknown"),
            given[0],
            given[1],
            min(_count(cached_input_tokens), given[0]),
            min(_count(reasoning_tokens), given[1]),
            provider=provider,
            session=get_session(),
            latency_ms=round((time.perf_counter() - started) * 1000, 3) if started is not None else None,
            traced=traced,
        )
    except Exception:
        log.exception("Clearance could not record a %s call's usage", model)


_MAX_COUNT = 2**53  # past any real count; the store's integers hold it on every backend


def _count(value: Any) -> int:
    """A token count as a framework reported it, as a whole number: 0 for None, NaN, text or a bool."""
    if isinstance(value, bool) or value is None:
        return 0
    try:
        return min(max(int(value), 0), _MAX_COUNT)
    except (TypeError, ValueError, OverflowError):  # NaN, inf, "12k", an object
        return 0
