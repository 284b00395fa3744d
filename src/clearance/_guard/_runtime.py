"""The process's current configuration, swapped atomically by `configure()`."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .. import _otel_env, _trace
from .._settings import Settings
from .._sinks import Sink
from .._sinks import _process as sinks
from ..errors import ConfigurationError, PolicyError
from ..policy import Policy, load_policy
from ._backend import Backend
from ._binding import Binder
from ._governor import Governor

_lock = threading.RLock()
_current: Backend | None = None
_tools: dict[str, tuple[Callable[..., Any], Binder]] = {}
_after_configure: list[Callable[[], None]] = []


class _Missing:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


NOT_GIVEN: Any = _Missing()
"""The default of `configure()`'s arguments: not given, so the `CLEARANCE_*` environment or the default applies."""


def configure(
    *,
    policy: str | os.PathLike[str] | Policy | None = NOT_GIVEN,
    shadow_policy: str | os.PathLike[str] | Policy | None = NOT_GIVEN,
    database_url: str = NOT_GIVEN,
    agent: str = NOT_GIVEN,
    environment: str = NOT_GIVEN,
    busy_timeout: float = NOT_GIVEN,
    price_overrides: dict[str, Any] = NOT_GIVEN,
    outcome_delay: float = NOT_GIVEN,
    server_url: str = NOT_GIVEN,
    api_key: str = NOT_GIVEN,
    evaluation: str = NOT_GIVEN,
    spool_path: str | os.PathLike[str] = NOT_GIVEN,
    webhook_url: str = NOT_GIVEN,
    webhook_secret: str = NOT_GIVEN,
    exporters: Sequence[Sink | str] = NOT_GIVEN,
    otel: bool = NOT_GIVEN,
    otel_args: bool = NOT_GIVEN,
    otel_usage: str = NOT_GIVEN,
) -> None:
    """Set up Clearance for this process: the policy, the audit store and who this agent is.

    Every argument not given comes from its `CLEARANCE_*` environment variable, else its
    default (see `Settings`). Calling it again swaps in the new configuration atomically;
    tools guarded before or after are governed by whichever is current when they are called.

    Args:
        policy: A policy file path, or a `Policy` from `clearance.policy.parse_policy`.
        shadow_policy: A policy decided beside `policy` on every call and recorded with it,
            never enforced (a path or a `Policy`); None for none. Embedded store only.
        database_url: The audit store: SQLite file path or SQLAlchemy URL.
        agent: This agent's name.
        environment: Its environment (`test`, `live`, …).
        busy_timeout: Seconds to wait for another process's lock on the store.
        price_overrides: Prices per model in USD per million tokens
            (`{"my-model": {"input_per_mtok": 1, "output_per_mtok": 2}}`).
        outcome_delay: Seconds an outcome record may wait to share the next commit
            (default 0.05; 0 commits it before the call returns).
        server_url: A Clearance server: remote mode. The policy comes from the server and
            records are spooled locally and shipped to it; `policy` and `database_url` are
            not used.
        api_key: The agent key for the server.
        evaluation: `local` (decide in-process; default) or `server` (`POST /v1/check` each call).
        spool_path: Remote mode's local spool file (default `.clearance/spool.db`).
        webhook_url: Where webhook-mode approvals are announced (a tool's own wins).
        webhook_secret: The secret webhooks are signed with: to verify them here
            (`handle_webhook`) and, on the embedded store, to deliver them.
        exporters: Event sinks every committed record passes (`JsonLinesSink`, your own
            `Sink`, or specs like `"jsonl:audit.jsonl"`); default `CLEARANCE_EXPORTERS`.
        otel: Trace governed calls with OpenTelemetry (the `otel` extra): an `execute_tool`
            span per call, under the span it was made in, through your tracer provider (or, when
            the process has none, one made from `OTEL_EXPORTER_OTLP_ENDPOINT` and the other
            standard variables). In remote mode the server emits them; the agent sends its
            trace context.
        otel_args: Also put the recorded (redacted) arguments on each call's span.
        otel_usage: Usage spans for LLM calls: `auto` (where no framework instrumentation
            traced them), `always`, `never`.

    Raises:
        ConfigurationError: Invalid settings, no policy, or a policy that does not fit a
            registered tool.
        PolicyError: The policy (or the shadow policy) does not validate or compile; nothing
            is configured.
        StoreError: The audit store cannot be opened.
    """
    given: dict[str, Any] = {
        "database_url": database_url,
        "agent": agent,
        "environment": environment,
        "busy_timeout": busy_timeout,
        "price_overrides": price_overrides,
        "outcome_delay": outcome_delay,
        "server_url": server_url,
        "api_key": api_key,
        "evaluation": evaluation,
        "spool_path": spool_path,
        "webhook_url": webhook_url,
        "webhook_secret": webhook_secret,
        "otel": otel,
        "otel_args": otel_args,
        "otel_usage": otel_usage,
    }
    compiled = policy if isinstance(policy, Policy) else None
    if policy is not NOT_GIVEN and not isinstance(policy, Policy):
        given["policy"] = Path(os.fspath(policy)) if policy is not None else None
    shadow = shadow_policy if isinstance(shadow_policy, Policy) else None
    if shadow_policy is not NOT_GIVEN and not isinstance(shadow_policy, Policy):
        given["shadow_policy"] = Path(os.fspath(shadow_policy)) if shadow_policy is not None else None
    try:
        settings = Settings(**{k: v for k, v in given.items() if v is not NOT_GIVEN})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigurationError(f"invalid Clearance settings: {problems}") from None
    own_sink = exporters is not NOT_GIVEN and sinks.has_otel_sink(exporters)
    if settings.otel and not own_sink:  # spans go where OTEL_* says, unless the process has a provider
        _otel_env.provide(settings.agent, default_otlp=False)
    governor: Backend
    if settings.server_url is not None and (shadow is not None or settings.shadow_policy is not None):
        raise ConfigurationError(
            "shadow_policy is for the embedded store: in remote mode, activate a shadow on the server"
            " (clearance policy shadow REV, or POST /v1/policies/{rev}/shadow)"
        )
    if settings.server_url is not None:
        from .._remote._governor import RemoteGovernor  # remote mode: the policy is the server's

        governor = RemoteGovernor(settings)
        try:
            _check_tools(governor.policy, _tools)
        except BaseException:
            governor.close()
            raise
    else:
        if compiled is None:
            if settings.policy is None:
                raise ConfigurationError("no policy: pass configure(policy='policy.yaml') or set CLEARANCE_POLICY")
            compiled = load_policy(settings.policy)
        if shadow is None and settings.shadow_policy is not None:
            shadow = load_policy(settings.shadow_policy)
        _check_tools(compiled, _tools)
        if shadow is not None:
            _check_tools(shadow, _tools)
        governor = Governor(settings, compiled, shadow)
    try:  # the new sinks first: when they cannot open, the old configuration keeps running with its own
        retire_sinks = sinks.replace(settings, None if exporters is NOT_GIVEN else exporters, governor)
    except BaseException:
        governor.close()
        raise
    _trace.enable(settings.otel)  # the sinks opened: OpenTelemetry is there when asked for
    global _current
    with _lock:
        old, _current = _current, governor
    try:
        if old is not None:
            old.close()
    finally:
        retire_sinks()  # the old sinks deliver what the old governor committed, then stop
    for hook in _after_configure:
        hook()


def after_configure(hook: Callable[[], None]) -> None:
    """Run `hook` after every `configure()` (once however often it is registered).

    The integrations register their installer here, so the guard never imports them.
    """
    if hook not in _after_configure:
        _after_configure.append(hook)


def current() -> Backend:
    """The current governor, configuring from the environment on first use.

    Raises:
        ConfigurationError: Nothing is configured and neither `CLEARANCE_POLICY` nor
            `CLEARANCE_SERVER_URL` is set, so the call cannot be decided (it fails closed).
    """
    governor = _current
    if governor is not None:
        return governor
    with _lock:
        if _current is None:
            if not (os.environ.get("CLEARANCE_POLICY") or os.environ.get("CLEARANCE_SERVER_URL")):
                raise ConfigurationError(
                    "Clearance is not configured: call clearance.configure(policy=...) or set "
                    "CLEARANCE_POLICY (or CLEARANCE_SERVER_URL) before calling a guarded tool"
                )
            configure()
        assert _current is not None
        return _current


def flush() -> bool:
    """Commit every queued outcome record now; in remote mode, ship the spool too.

    Outcomes are otherwise committed with the next record, within `outcome_delay` seconds, and
    at exit. Does nothing when Clearance is not configured.

    Returns:
        True when every record was delivered. False in remote mode when records are still in the
        spool (the server did not take them within 10 s) or were set aside as refused or too
        large since the previous `flush()` (`clearance spool` lists them); a warning names which.
    """
    governor = _current
    return governor.flush() if governor is not None else True


def shutdown() -> None:
    """Close the current configuration; the next guarded call configures from the environment."""
    global _current
    with _lock:
        old, _current = _current, None
    _trace.enable(False)
    try:
        if old is not None:
            old.close()
    finally:
        sinks.close()


def register(name: str, fn: Callable[..., Any], binder: Binder) -> None:
    """Remember a guarded tool by name, and check the current policy against its parameters.

    Raises:
        ConfigurationError: The name is taken by another function, or the policy's conditions
            for it name parameters it does not have.
    """
    with _lock:
        known = _tools.get(name)
        if known is not None and known[0] is not fn and _qualname(known[0]) != _qualname(fn):
            raise ConfigurationError(
                f"two different functions are guarded as tool {name!r}: {_qualname(known[0])} and {_qualname(fn)}"
            )
        if _current is not None:
            _check_tools(_current.policy, {name: (fn, binder)})
        _tools[name] = (fn, binder)


def _qualname(fn: Callable[..., Any]) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _check_tools(policy: Policy, tools: dict[str, tuple[Callable[..., Any], Binder]]) -> None:
    problems = []
    for name, (_, binder) in tools.items():
        if binder.params is not None:
            problems.extend(policy.check_params(name, binder.params))
    if problems:
        raise PolicyError(problems)
