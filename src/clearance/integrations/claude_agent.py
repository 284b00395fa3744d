"""Claude Agent SDK: every tool call decided through the SDK's own hooks, and each turn's usage recorded.

- `governed_options(options)`: a copy of `ClaudeAgentOptions` with Clearance's hooks added after
  the user's own (theirs, and `can_use_tool`, are kept). A `PreToolUse` hook with no matcher
  sees every tool the CLI runs — built-in ones, in-process SDK MCP tools and external MCP tools
  (`mcp__<server>__<tool>`, the name a policy matches) — with the input the CLI validated,
  which is what the tool receives, and in every permission mode (`bypassPermissions` and
  `allowed_tools` included, which skip `can_use_tool`). A blocked or denied call is denied
  with the reason as `permissionDecisionReason`, which the model reads as the tool's error and
  can tell the user; an approval is awaited without blocking the event loop; an approver's edit
  is returned as `updatedInput`, so the edited input is what runs. An allowed call gets no
  opinion from Clearance (not `allow`): the SDK's own permission rules and `can_use_tool` still
  apply — Clearance only ever takes permission away. `PostToolUse` / `PostToolUseFailure`
  record each call's outcome. A hook that cannot decide (say the store is down) denies.
  The CLI runs hooks side by side on the model's input and then the last rewrite it got, so
  the user's `PreToolUse` / `PermissionRequest` hooks and `can_use_tool` are wrapped: an input
  they rewrite is decided too (hooks from settings files are not the SDK's, and not seen).
  Budgets: the CLI asks the model after a prompt and after tool results, so `UserPromptSubmit`
  and the Post hooks check them (`before_model_call`): while one is spent the run stops
  (`continue: false`, the reason as `stopReason`) or waits until an approver extends it.
- `install()` (done by `clearance.configure()` when the SDK is imported): every run —
  `query()` and `ClaudeSDKClient` alike — gets the hooks and its usage recorded, by wrapping
  the one class both drive the CLI through (`Query`: its `__init__` and `receive_messages`).

Usage: one `llm.call` per model per turn, from the turn's `ResultMessage`. The CLI makes the
model requests itself, so no raw client here sees them, and its per-request figures are not
usable: each `AssistantMessage` repeats the `message_start` usage of its request (output
tokens 1 — the final count arrives later and is never sent on), once per content block. The
result's `modelUsage` is exact but cumulative over the CLI process (a `ClaudeSDKClient`'s
second turn reports both), so each turn records the difference since the previous result of
the same process: nothing is counted twice (a process resuming a session starts from its earlier
totals: its first turn records the result's own per-turn `usage`). Cache reads and writes count as input, cache reads
as its cached part, thinking tokens as reasoning; Clearance prices the tokens (genai-prices
and your price overrides, like every other integration) rather than taking the CLI's
`costUSD`, so budgets and reports use one price list.

Needs `pip install "clearance[claude-agent]"`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

try:
    import claude_agent_sdk
    from claude_agent_sdk import (
        ClaudeAgentOptions,
        HookMatcher,
        PermissionResultAllow,
        PermissionResultDeny,
        ToolPermissionContext,
    )
    from claude_agent_sdk._internal.query import Query
    from claude_agent_sdk.types import _hooks_to_internal_format
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        'the Claude Agent SDK integration needs its extra: pip install "clearance[claude-agent]"'
    ) from exc

from .._canonical import canonical_json, to_plain
from .._guard._backend import Backend
from .._guard._tickets import Ticket
from ..errors import ApprovalError, ToolCallBlocked
from ._common import before_model_call_async, begin, record_model_call, refusal_text
from ._patching import MARK, check_version, wrap_method

log = logging.getLogger("clearance")
# How long the CLI waits for the PreToolUse hook: long enough for a human; the policy's own
# approval timeout ends the wait before this does.
HOOK_TIMEOUT_S = 7 * 24 * 3600.0
# (CLI session, tool use id) → the inputs let through for it (the model's, a hook's or can_use_tool's
# rewrite: each decided), until its Post hook records the outcome of the one that ran
_Running = tuple[Backend, Ticket, str, float]  # the input let through is kept as its fingerprint only
_running: OrderedDict[tuple[str, str], list[_Running]] = OrderedDict()
_running_lock = threading.Lock()  # clients in several threads (each its own event loop) share it
_RUNNING_KEEP = 10_000  # calls the CLI refused after Clearance allowed them get no Post hook
_GUARDED = "__clearance_guarded__"  # a user's PreToolUse hook or can_use_tool whose rewrites Clearance decides


def _pre(reason: str | None = None, updated: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"hookEventName": "PreToolUse"}
    if reason is not None:
        out |= {"permissionDecision": "deny", "permissionDecisionReason": reason}
    if updated is not None:
        out["updatedInput"] = updated
    return {"hookSpecificOutput": out}


def _key(data: Any, tool_use_id: str | None) -> tuple[str, str]:
    return str(data.get("session_id")), str(tool_use_id or data.get("tool_use_id"))


async def _decide(data: Any, tool_use_id: str | None, context: Any) -> Any:
    """PreToolUse: decide the call; deny with the reason, wait for an approval, apply an edit."""
    try:
        name = str(data.get("tool_name"))
        raw = data.get("tool_input")
        args = to_plain(raw if isinstance(raw, dict) else {"input": raw})
        governor, ticket = begin(name, args)
        approved = await governor.wait_async(ticket) if ticket.approval_id is not None else None
    except (ToolCallBlocked, ApprovalError) as exc:
        return _pre(refusal_text(exc))
    except Exception as exc:  # fail closed: a call Clearance could not decide does not run
        log.exception("Clearance could not decide a Claude Agent SDK tool call")
        return _pre(f"Clearance could not decide this call: {type(exc).__name__}")
    edited = approved.args if approved is not None and approved.args is not None else None
    key = _key(data, tool_use_id)
    entry = (governor, ticket, _fingerprint(args if edited is None else edited), time.perf_counter())
    with _running_lock:
        _running.setdefault(key, []).append(entry)
        _running.move_to_end(key)
        while len(_running) > _RUNNING_KEEP:
            _running.popitem(last=False)
    if edited is not None:
        return _pre(updated=edited)
    return {}  # no opinion: the SDK's own permission rules still apply


async def _decide_rewrite(data: Any, tool_use_id: str | None, updated: Any) -> dict[str, Any]:
    """A rewrite of the call's input (a user's PreToolUse hook, `can_use_tool`) decided like the model's.

    The CLI runs what the last rewrite says, after Clearance's own hook decided the model's input,
    so each rewrite is decided too: `_pre`'s shape (a deny, or the input to run).
    """
    verdict = await _decide({**data, "tool_input": updated}, tool_use_id, None)
    specific: dict[str, Any] = verdict.get("hookSpecificOutput") or {}
    if specific.get("permissionDecision") == "deny":
        return specific
    return {"hookEventName": "PreToolUse", "updatedInput": specific.get("updatedInput", updated)}


def _fingerprint(value: Any) -> str:
    """A short digest of an input as JSON (its repr when it is not JSON-like): equal inputs, equal digests."""
    try:
        text = canonical_json(to_plain(value))
    except Exception:  # NaN, a lone surrogate, too deep: still a digest, never equal to a JSON one
        text = "\0repr:" + repr(value)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def _rewrites(given: Any, updated: Any) -> bool:
    return _fingerprint(updated) != _fingerprint(given)


def _guard_hook(hook: Any) -> Any:
    """A user's PreToolUse or PermissionRequest callback whose rewritten input Clearance decides first."""
    if getattr(hook, _GUARDED, False) or getattr(hook, MARK, False):
        return hook

    async def guarded(data: Any, tool_use_id: str | None, context: Any) -> Any:
        out = await hook(data, tool_use_id, context)
        specific = out.get("hookSpecificOutput") if isinstance(out, dict) else None
        if not isinstance(specific, dict):
            return out
        given = data.get("tool_input") if isinstance(data, dict) else None
        if specific.get("hookEventName") == "PermissionRequest":
            decision = specific.get("decision")
            if (
                not isinstance(decision, dict)
                or decision.get("behavior") != "allow"
                or "updatedInput" not in decision
                or not _rewrites(given, decision["updatedInput"])
            ):
                return out
            verdict = await _decide_rewrite(data, tool_use_id, decision["updatedInput"])
            if verdict.get("permissionDecision") == "deny":
                decision = {"behavior": "deny", "message": verdict.get("permissionDecisionReason")}
            else:
                decision = {**decision, "updatedInput": verdict["updatedInput"]}
            return {**out, "hookSpecificOutput": {**specific, "decision": decision}}
        if (
            "updatedInput" not in specific
            or specific.get("permissionDecision") == "deny"
            or not _rewrites(given, specific["updatedInput"])
        ):
            return out
        decided = await _decide_rewrite(data, tool_use_id, specific["updatedInput"])
        kept = {k: v for k, v in specific.items() if k != "updatedInput"}
        if decided.get("permissionDecision") == "deny":
            kept.pop("permissionDecision", None)
        return {**out, "hookSpecificOutput": {**kept, **decided}}

    setattr(guarded, _GUARDED, True)
    return guarded


_REWRITING = ("PreToolUse", "PermissionRequest")  # the hook events whose output can rewrite a call's input


def _guard_permission(callback: Any) -> Any:
    """A user's `can_use_tool` whose `updated_input` Clearance decides before the CLI runs it."""
    if callback is None or getattr(callback, _GUARDED, False):
        return callback

    async def guarded(name: str, tool_input: dict[str, Any], context: ToolPermissionContext) -> Any:
        result = await callback(name, tool_input, context)
        if not isinstance(result, PermissionResultAllow) or result.updated_input is None:
            return result
        if not _rewrites(tool_input, result.updated_input):
            return result
        data = {"session_id": _ANY_SESSION, "tool_name": name, "tool_input": result.updated_input}
        decided = await _decide_rewrite(data, context.tool_use_id, result.updated_input)
        if decided.get("permissionDecision") == "deny":
            return PermissionResultDeny(message=str(decided.get("permissionDecisionReason")))
        return dataclasses.replace(result, updated_input=decided["updatedInput"])

    setattr(guarded, _GUARDED, True)
    return guarded


_ANY_SESSION = ""  # can_use_tool is not told the CLI session: its rewrites are found by tool use id


def _finish(data: Any, tool_use_id: str | None, error: BaseException | None, result: Any) -> None:
    key = _key(data, tool_use_id)
    with _running_lock:
        candidates = [*_running.pop(key, ()), *_running.pop((_ANY_SESSION, key[1]), ())]
    if candidates:
        ran = _fingerprint(data.get("tool_input"))
        governor, ticket, _, started = next((c for c in reversed(candidates) if c[2] == ran), candidates[-1])
        try:
            governor.finish(ticket, error=error, duration_s=time.perf_counter() - started, result=result)
        except Exception:
            log.exception("Clearance could not record a Claude Agent SDK tool call's outcome")


async def _ran(data: Any, tool_use_id: str | None, context: Any) -> Any:
    """PostToolUse: record the result; the model is asked next, so check the budgets."""
    _finish(data, tool_use_id, None, to_plain(data.get("tool_response")))
    return await _gate(data, tool_use_id, context)


async def _failed(data: Any, tool_use_id: str | None, context: Any) -> Any:
    """PostToolUseFailure: record the error; the model is asked next, so check the budgets."""
    _finish(data, tool_use_id, RuntimeError(str(data.get("error"))[:2000]), None)
    return await _gate(data, tool_use_id, context)


async def _gate(data: Any, tool_use_id: str | None, context: Any) -> Any:
    """Before the model is asked (a prompt, a tool result): while a budget is spent, stop, or wait for an approver."""
    try:
        await before_model_call_async(None)  # the CLI does not say which model it will ask
    except (ToolCallBlocked, ApprovalError) as exc:  # ModelCallBlocked is a ToolCallBlocked
        return {"continue_": False, "stopReason": refusal_text(exc)}
    except Exception as exc:  # fail closed, as a model call that could not be checked does elsewhere
        log.exception("Clearance could not check the budgets before a Claude Agent SDK model call")
        return {"continue_": False, "stopReason": f"Clearance could not check the budgets: {type(exc).__name__}"}
    return {}


for _hook in (_decide, _ran, _failed, _gate):
    setattr(_hook, MARK, True)
_HOOKS: dict[Any, list[HookMatcher]] = {
    "PreToolUse": [HookMatcher(hooks=[_decide], timeout=HOOK_TIMEOUT_S, on_failure="block")],
    "PostToolUse": [HookMatcher(hooks=[_ran], timeout=HOOK_TIMEOUT_S)],
    "PostToolUseFailure": [HookMatcher(hooks=[_failed], timeout=HOOK_TIMEOUT_S)],
    "UserPromptSubmit": [HookMatcher(hooks=[_gate], timeout=HOOK_TIMEOUT_S)],
}


def _has_ours(matchers: Any) -> bool:
    """Whether Clearance's hooks are among these (HookMatchers, or the dicts `Query` takes)."""
    for matcher in matchers or ():
        hooks = matcher.get("hooks") if isinstance(matcher, dict) else getattr(matcher, "hooks", None)
        if any(getattr(hook, MARK, False) for hook in hooks or ()):
            return True
    return False


def governed_options(options: ClaudeAgentOptions | None = None) -> ClaudeAgentOptions:
    """A copy of `options` whose runs Clearance governs: its hooks added after the user's own.

    Idempotent; the user's hooks and `can_use_tool` are kept as they are.
    """
    options = options or ClaudeAgentOptions()
    hooks: dict[Any, list[HookMatcher]] = {event: list(matchers) for event, matchers in (options.hooks or {}).items()}
    for event in _REWRITING:
        if event in hooks:
            hooks[event] = [dataclasses.replace(m, hooks=[_guard_hook(h) for h in m.hooks]) for m in hooks[event]]
    if not _has_ours(hooks.get("PreToolUse")):
        for event, ours in _HOOKS.items():
            hooks[event] = [*hooks.get(event, []), *ours]
    return dataclasses.replace(options, hooks=hooks, can_use_tool=_guard_permission(options.can_use_tool))


def _with_hooks(wrapped: Any, query: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """`Query.__init__` with Clearance's hooks added to the run's (in the dict form `Query` takes).

    The user's PreToolUse hooks and `can_use_tool` are wrapped so that an input they rewrite is
    decided too: the CLI runs the last rewrite, which Clearance's own hook never sees.
    """
    given = list(args)  # (transport, is_streaming_mode, can_use_tool, hooks, …) or keywords
    at = {"can_use_tool": 2, "hooks": 3}

    def get(name: str) -> Any:
        return given[at[name]] if len(given) > at[name] else kwargs.get(name)

    def put(name: str, value: Any) -> None:
        if len(given) > at[name]:
            given[at[name]] = value
        else:
            kwargs[name] = value

    hooks = {event: list(matchers) for event, matchers in (get("hooks") or {}).items()}
    for event in _REWRITING:
        if event in hooks:
            hooks[event] = [{**m, "hooks": [_guard_hook(h) for h in m.get("hooks") or ()]} for m in hooks[event]]
    if not _has_ours(hooks.get("PreToolUse")):
        for event, ours in _hooks_to_internal_format(_HOOKS).items():
            hooks[event] = [*hooks.get(event, []), *ours]
    put("hooks", hooks)
    put("can_use_tool", _guard_permission(get("can_use_tool")))
    wrapped(*given, **kwargs)


def _with_usage(wrapped: Any, query: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    """`Query.receive_messages`, recording each turn's usage from its result."""
    return _recording(query, wrapped(*args, **kwargs))


async def _recording(query: Any, messages: AsyncIterator[Any]) -> AsyncIterator[Any]:
    totals: dict[str, dict[str, Any]] = query.__dict__.setdefault("_clearance_usage", {})  # per CLI process
    try:
        async for data in messages:
            if isinstance(data, dict) and data.get("type") == "result":
                # A resumed session's CLI starts its totals from the session's earlier usage
                turn = data.get("usage") if not totals and _resumed(query) else None
                _record_turn(data.get("modelUsage"), totals, turn)
            yield data
    finally:
        await messages.aclose()  # type: ignore[attr-defined]


_COUNTS = ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheCreationInputTokens", "thinkingTokens")


def _resumed(query: Any) -> bool:
    """Whether this CLI process continues an earlier session (`resume`, `continue_conversation`)."""
    options = getattr(getattr(query, "transport", None), "_options", None)
    return bool(getattr(options, "resume", None) or getattr(options, "continue_conversation", False))


def _turn_counts(turn: Any) -> dict[str, int] | None:
    """A result's own `usage` (this turn only, all models together) in `modelUsage`'s names."""
    if not isinstance(turn, dict):
        return None
    details = turn.get("output_tokens_details")
    return {
        "inputTokens": _number(turn.get("input_tokens")),
        "outputTokens": _number(turn.get("output_tokens")),
        "cacheReadInputTokens": _number(turn.get("cache_read_input_tokens")),
        "cacheCreationInputTokens": _number(turn.get("cache_creation_input_tokens")),
        "thinkingTokens": _number(details.get("thinking_tokens")) if isinstance(details, dict) else 0,
    }


def _record_turn(model_usage: Any, totals: dict[str, dict[str, Any]], turn: Any = None) -> None:
    """Record a result's usage: per model, what it adds to `totals` (the process's usage so far); never raises.

    `turn`: the result's own `usage`, given for the first result of a resumed session, whose
    `modelUsage` also holds the earlier processes' usage; with one model it is that model's.
    """
    if not isinstance(model_usage, dict):
        return
    own = _turn_counts(turn) if len(model_usage) == 1 else None
    for model, usage in model_usage.items():
        if not isinstance(usage, dict):
            continue
        before = totals.get(model, {})
        added = {k: _number(usage.get(k)) - _number(before.get(k)) for k in _COUNTS}
        if any(v < 0 for v in added.values()):  # the CLI started counting again: all of it is new
            added = {k: _number(usage.get(k)) for k in _COUNTS}
        if own is not None:
            added = own
        totals[model] = usage
        if not any(v > 0 for v in added.values()):
            continue
        name = usage.get("canonicalModel") or model
        record_model_call(
            name,
            added["inputTokens"] + added["cacheReadInputTokens"] + added["cacheCreationInputTokens"],
            added["outputTokens"],
            added["cacheReadInputTokens"],
            added["thinkingTokens"],
            provider="anthropic" if usage.get("provider", "firstParty") == "firstParty" else None,
        )


def _number(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def install() -> None:
    """Govern every Claude Agent SDK run from now on: `query()` and `ClaudeSDKClient` (idempotent).

    Raises:
        ConfigurationError: This SDK version is not one Clearance was tested with.
    """
    check_version("claude-agent-sdk", claude_agent_sdk.__version__, minimum=(0, 2), below=(0, 3))
    wrap_method(Query, "__init__", _with_hooks)
    wrap_method(Query, "receive_messages", _with_usage)
