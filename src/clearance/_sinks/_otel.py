"""OpenTelemetry: an `execute_tool` span for every governed call, made from the committed records.

```
tool_call.decided ──┐                          execute_tool refund           (parent: the span the
approval.requested  │ one call, by call_id  ─>   ├ events: requested,         call was made in,
approval.decided    │ (held until it ends)       │   decided by …, resumed    from the record)
tool_call.finished ─┘                            └ clearance.approval  (the wait, a span of its own)
```

The spans are made here, on the sink's thread, from what the guard committed: the call itself
only noted the span it was made in (`_trace.current()`), so tracing costs the hot path one
context read, and an exporter that is down, slow or raising holds up only this thread. Each
span keeps the times the records hold and the parent the record names, so it nests under the
framework's own tool span (or the user's span) in the trace, however late it is exported.

A call is held from its decision until it ends: blocked (at once), denied, expired or
cancelled (at that record), or finished. A call resumed in another trace (another process, a
resumed graph) also gets an `execute_tool` span there, linked to the one where it was asked
(and naming it in `clearance.asked_in.trace_id` / `.span_id`, for backends that keep no links).
What a restart loses: a call decided before the sink started (or one evicted after
`keep` calls waiting at once) gets its span from its `tool_call.finished` record alone, linked
to where it was asked; a call still held at shutdown is emitted as it stands, marked
`clearance.unfinished`. Delivery is at least once, so a crash may repeat a batch's spans.

Attributes follow the OpenTelemetry GenAI conventions for tool execution (`gen_ai.operation.name`
`execute_tool`, `gen_ai.tool.name`, `gen_ai.tool.call.id`, …) with Clearance's own under
`clearance.*`. Text is shown as people must see it (hidden and direction-changing characters
named, `_visible`), cut at 4,096 characters. Arguments go on a span only with `args=True`, and
then as recorded: a redacted value is never on a span.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson

from .. import _trace
from .._version import __version__
from .._visible import shown_json, visible
from ._record import Record

log = logging.getLogger("clearance.sinks")

_MAX_TEXT = 4096
_ENDS_WAIT = ("approval.decided", "approval.expired")
_SCOPE = "clearance"


@dataclass
class _Call:
    """One call held between its decision and its end."""

    fields: dict[str, Any]
    start_ns: int
    events: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)
    wait: tuple[int, int, dict[str, Any]] | None = None  # requested at, decided at, attributes
    requested_ns: int | None = None
    on_timeout: str | None = None
    approved: bool = False


class OtelSink:
    """Turns committed records into OpenTelemetry spans (the `otel` extra), through a tracer provider.

    `configure(otel=True)` (or `CLEARANCE_OTEL=true`, on the SDK or the server) adds one; build
    your own to choose its provider or options.

    Args:
        args: Put each call's recorded arguments on its span (`gen_ai.tool.call.arguments`).
        usage: `llm.call` records as `chat <model>` spans with `gen_ai.usage.*`: `auto` (only
            those no framework instrumentation traced), `always`, or `never`.
        tracer_provider: Where the spans go; default the global one (your exporter).
        name: The sink's name (its position is kept under it).
        keep: Most calls held at once while they wait for their end; the oldest is emitted as
            it stands when more arrive.
    """

    SCHEMES: ClassVar[tuple[str, ...]] = ("otel",)

    @classmethod
    def from_spec(cls, scheme: str, target: str) -> OtelSink:
        """The sink `otel:traces` names (`CLEARANCE_EXPORTERS=otel:traces`)."""
        return cls()

    def __init__(
        self,
        *,
        args: bool = False,
        usage: Literal["auto", "always", "never"] = "auto",
        tracer_provider: Any = None,
        name: str = "otel",
        keep: int = 10_000,
    ) -> None:
        try:
            from opentelemetry import trace
        except ImportError:
            from ..errors import ConfigurationError

            raise ConfigurationError("the OpenTelemetry sink needs pip install 'clearance[otel]'") from None
        self.name = name
        self.args, self.usage, self.keep = args, usage, keep
        self._trace = trace
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        self._held: OrderedDict[str, _Call] = OrderedDict()

    # -- the records -----------------------------------------------------------------------

    def deliver(self, batch: Sequence[Record]) -> None:
        """Make the spans of the calls that end in `batch`; hold the rest. Never raises for a record."""
        ended: list[tuple[_Call, dict[str, Any] | None]] = []
        for record in batch:
            try:
                self._take(record, ended)
            except Exception as exc:  # one record that cannot be traced must not stop the others
                log.warning("no span for record %s (%s): %r", record.id, record.kind, exc)
        for call, finished in ended:
            try:
                self._emit(call, finished)
            except Exception as exc:
                log.warning("a span could not be made for call %s: %r", call.fields.get("call_id"), exc)
            time.sleep(0)  # let a governed call take the interpreter between spans, not after the batch

    def _take(self, record: Record, ended: list[tuple[_Call, dict[str, Any] | None]]) -> None:
        kind = record.kind
        if kind not in _KINDS:
            return
        try:  # a strict JSON object, as the guard writes it: the fast reader
            event = orjson.loads(record.body)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            event = record.event()  # as every reader shows a body that is not (marked)
        at_ns = record.at_us * 1000
        call_id = event.get("call_id")
        if kind == "llm.call":
            self._usage(event, at_ns)
            return
        if not isinstance(call_id, str):
            return
        if kind == "tool_call.decided":
            call = _Call(event, at_ns)
            if event.get("decision") == "block":
                ended.append((call, None))
                return
            self._held[call_id] = call
            if len(self._held) > self.keep:
                _, oldest = self._held.popitem(last=False)
                ended.append((oldest, None))
            return
        if kind == "tool_call.finished":
            held = self._held.pop(call_id, None)
            if held is None:  # decided before this sink started, or let go: the span from this record alone
                held = _Call({}, at_ns - _ms_ns(event.get("duration_ms")))
            ended.append((held, event))
            return
        held_call = self._held.get(call_id) or _last(ended, call_id)
        if held_call is None:
            return
        by = event.get("by")
        if kind == "approval.requested":
            held_call.requested_ns = at_ns
            held_call.on_timeout = str(event.get("on_timeout") or "")
            held_call.events.append(("clearance.approval.requested", _approvers(event), at_ns))
        elif kind in ("approval.executed", "approval.failed"):
            held_call.events.append(("clearance.approval.resumed", _attrs({"clearance.executor": by}), at_ns))
        elif kind in _ENDS_WAIT or kind in ("approval.voted", "approval.escalated", "approval.refused"):
            decision = str(event.get("decision") or kind.partition(".")[2])
            attrs = _attrs(
                {
                    "clearance.approval.decision": decision,
                    "clearance.approval.by": by,
                    "clearance.approval.note": event.get("note"),
                }
            )
            held_call.events.append((f"clearance.{kind}", attrs, at_ns))
            if kind in _ENDS_WAIT:
                self._end_wait(held_call, event, decision, at_ns, ended)

    def _end_wait(
        self,
        call: _Call,
        event: dict[str, Any],
        decision: str,
        at_ns: int,
        ended: list[tuple[_Call, dict[str, Any] | None]],
    ) -> None:
        """An approval's decision: the wait is over; a call that will not run ends here."""
        begun = call.requested_ns if call.requested_ns is not None else call.start_ns
        attrs = _attrs(
            {
                "clearance.approval_id": event.get("approval_id"),
                "clearance.approval.decision": decision,
                "clearance.approval.by": event.get("by"),
                "clearance.wait_ms": (at_ns - begun) / 1e6,
            }
        )
        call.wait = (begun, at_ns, attrs)
        runs = decision == "approved" or (decision == "expired" and call.on_timeout == "allow")
        call.approved = runs
        call_id = call.fields.get("call_id")
        if not runs and isinstance(call_id, str) and self._held.pop(call_id, None) is not None:
            ended.append((call, None))

    # -- the spans -------------------------------------------------------------------------

    def _emit(self, call: _Call, finished: dict[str, Any] | None) -> None:
        """The call's span (and its wait's), from its decision to its end; a resume elsewhere gets its own."""
        trace = self._trace
        decided = call.fields
        tool = str(decided.get("tool") or (finished or {}).get("tool") or "unknown")
        parent_tp = _trace.checked(decided.get("trace")) if decided else None
        if not decided and finished is not None:  # only the outcome is known: it ran where it finished
            parent_tp = _trace.checked(finished.get("trace"))
        asked_in = _trace.checked((finished or {}).get("asked_in"))
        ran_tp = _trace.checked((finished or {}).get("trace"))
        elsewhere = asked_in is not None and ran_tp is not None and decided != {}
        links = []
        attributes = self._call_attributes(tool, decided, finished)
        if not decided and asked_in is not None:
            links.append(trace.Link(_remote(trace, asked_in), {"clearance.link": "asked"}))
            attributes.update(_asked_attributes(_remote(trace, asked_in)))
        end_ns = call.start_ns
        if finished is not None:
            end_ns = max(end_ns, self._at_ns(finished, call))
        elif call.wait is not None:
            end_ns = call.wait[1]
        span = self._tracer.start_span(
            f"execute_tool {visible(tool)[:_MAX_TEXT]}",
            context=self._context(parent_tp),
            kind=trace.SpanKind.INTERNAL,
            attributes=attributes,
            links=links,
            start_time=call.start_ns,
        )
        for name, attrs, at_ns in call.events:
            span.add_event(name, attrs, timestamp=at_ns)
        if call.wait is not None:
            begun, until, attrs = call.wait
            wait = self._tracer.start_span(
                "clearance.approval",
                context=trace.set_span_in_context(span),
                attributes=attrs,
                start_time=begun,
            )
            wait.end(end_time=until)
        self._status(span, decided, finished, call)
        if finished is None and decided and not call.wait and decided.get("decision") != "block":
            span.set_attribute("clearance.unfinished", True)
        span.end(end_time=end_ns)
        if elsewhere and finished is not None and ran_tp is not None:
            self._resumed(tool, span, decided, finished, ran_tp)

    def _resumed(self, tool: str, asked: Any, decided: dict[str, Any], finished: dict[str, Any], ran_tp: str) -> None:
        """The span of a call run in another trace than the one it was asked in, linked to the asked one."""
        trace = self._trace
        end_ns = self._at_ns(finished, None)
        span = self._tracer.start_span(
            f"execute_tool {visible(tool)[:_MAX_TEXT]}",
            context=self._context(ran_tp),
            kind=trace.SpanKind.INTERNAL,
            attributes={
                **self._call_attributes(tool, decided, finished),
                **_asked_attributes(asked.get_span_context()),
                "clearance.resumed": True,
            },
            links=[trace.Link(asked.get_span_context(), {"clearance.link": "asked"})],
            start_time=end_ns - _ms_ns(finished.get("duration_ms")),
        )
        self._status(span, decided, finished, None)
        span.end(end_time=end_ns)

    def _usage(self, event: dict[str, Any], at_ns: int) -> None:
        """A model call's usage as a `chat <model>` span, unless a framework's instrumentation traced it."""
        if self.usage == "never" or (self.usage == "auto" and event.get("usage_traced")):
            return
        model = visible(str(event.get("model") or "unknown"))[:_MAX_TEXT]
        attrs = _attrs(
            {
                "gen_ai.operation.name": "chat",
                "gen_ai.request.model": model,
                "gen_ai.provider.name": event.get("provider"),
                "gen_ai.usage.input_tokens": _int(event.get("input_tokens")),
                "gen_ai.usage.output_tokens": _int(event.get("output_tokens")),
                "gen_ai.agent.name": event.get("agent"),
                "gen_ai.conversation.id": event.get("session"),
                "clearance.usage.cached_input_tokens": _int(event.get("cached_input_tokens")),
                "clearance.usage.reasoning_tokens": _int(event.get("reasoning_tokens")),
                "clearance.cost_usd": event.get("cost_usd"),
                "clearance.environment": event.get("environment"),
                "clearance.event_id": event.get("id"),
            }
        )
        span = self._tracer.start_span(
            f"chat {model}",
            context=self._context(_trace.checked(event.get("trace"))),
            kind=self._trace.SpanKind.CLIENT,
            attributes=attrs,
            start_time=at_ns - _ms_ns(event.get("latency_ms")),
        )
        span.end(end_time=at_ns)

    def _call_attributes(self, tool: str, decided: dict[str, Any], finished: dict[str, Any] | None) -> dict[str, Any]:
        d, f = decided, finished or {}
        found: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": d.get("call_id") or f.get("call_id"),
            "gen_ai.agent.name": d.get("agent") or f.get("agent"),
            "gen_ai.conversation.id": d.get("session") or f.get("session"),
            "clearance.call_id": d.get("call_id") or f.get("call_id"),
            "clearance.environment": d.get("environment") or f.get("environment"),
            "clearance.decision": d.get("decision"),
            "clearance.rule_ids": _texts(d.get("rule_ids")),
            "clearance.reason": d.get("reason"),
            "clearance.policy_revision": d.get("policy_revision"),
            "clearance.approval_id": d.get("approval_id") or f.get("approval_id"),
            "clearance.grant_id": d.get("grant_id"),
            "clearance.args_hash": d.get("args_hash"),
            "clearance.monitored": _texts([m.get("rule_id") for m in d.get("monitored") or () if isinstance(m, dict)]),
            "clearance.outcome": f.get("decision"),
            "clearance.duration_ms": f.get("duration_ms"),
        }
        shadow = d.get("shadow")
        if isinstance(shadow, dict):
            found["clearance.shadow.decision"] = shadow.get("decision")
            found["clearance.shadow.revision"] = shadow.get("revision")
        if self.args and isinstance(d.get("args"), dict):
            found["gen_ai.tool.call.arguments"] = shown_json(d["args"])
            if d.get("args_redacted"):
                found["clearance.args_redacted"] = _texts(d.get("args_redacted"))
        return _attrs(found)

    def _status(self, span: Any, decided: dict[str, Any], finished: dict[str, Any] | None, call: _Call | None) -> None:
        status = self._trace.Status
        code = self._trace.StatusCode
        if finished is not None:
            if finished.get("decision") == "error":
                error = str(finished.get("error") or "error")
                span.set_attribute("error.type", visible(error.partition(":")[0])[:200])
                span.set_status(status(code.ERROR, visible(error)[:_MAX_TEXT]))
            return
        if decided.get("decision") == "block":
            span.set_attribute("error.type", "clearance.blocked")
            span.set_status(status(code.ERROR, visible(f"blocked: {decided.get('reason') or ''}")[:_MAX_TEXT]))
        elif call is not None and call.wait is not None and not call.approved:
            outcome = str(call.wait[2].get("clearance.approval.decision") or "not approved")
            span.set_attribute("error.type", f"clearance.{outcome}")
            span.set_status(status(code.ERROR, f"approval {outcome}"))

    def _context(self, traceparent: str | None) -> Any:
        """The context a span is made in: under the recorded parent, or a new trace (never this thread's own)."""
        from opentelemetry.context import Context

        if traceparent is None:
            return Context()
        return self._trace.set_span_in_context(
            self._trace.NonRecordingSpan(_remote(self._trace, traceparent)), Context()
        )

    @staticmethod
    def _at_ns(finished: dict[str, Any], call: _Call | None) -> int:
        at = finished.get("at_us")
        return at * 1000 if isinstance(at, int) else (call.start_ns if call else 0)

    def close(self) -> None:
        """Emit the calls still held, as they stand (`clearance.unfinished`)."""
        held, self._held = self._held, OrderedDict()
        for call in held.values():
            with contextlib.suppress(Exception):
                self._emit(call, None)


_KINDS = frozenset(
    {
        "tool_call.decided",
        "tool_call.finished",
        "approval.requested",
        "approval.voted",
        "approval.escalated",
        "approval.refused",
        "approval.decided",
        "approval.expired",
        "approval.executed",
        "approval.failed",
        "llm.call",
    }
)


def _last(ended: list[tuple[_Call, dict[str, Any] | None]], call_id: str) -> _Call | None:
    """A call that ended earlier in this batch (its `approval.executed` follows its `tool_call.finished`)."""
    for call, finished in reversed(ended):
        if call.fields.get("call_id") == call_id or (finished or {}).get("call_id") == call_id:
            return call
    return None


def _remote(trace: Any, traceparent: str) -> Any:
    trace_id, span_id, flags = _trace.parts(traceparent)
    return trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags & 0xFF))


def _asked_attributes(asked: Any) -> dict[str, Any]:
    """Where a resumed call was asked, as attributes too: some backends (Phoenix) keep no links."""
    return {
        "clearance.asked_in.trace_id": f"{asked.trace_id:032x}",
        "clearance.asked_in.span_id": f"{asked.span_id:016x}",
    }


def _approvers(event: dict[str, Any]) -> dict[str, Any]:
    return _attrs(
        {
            "clearance.approval_id": event.get("approval_id"),
            "clearance.approvers": _texts(event.get("approvers")),
            "clearance.approval.expires_at": event.get("expires_at"),
            "clearance.requested_by": event.get("requested_by"),
        }
    )


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    """Values OpenTelemetry takes: text shown visibly and cut, numbers, flags, lists of text; no None."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or value == ():
            continue
        if isinstance(value, str):
            out[key] = visible(value)[:_MAX_TEXT]
        elif isinstance(value, bool | int | float):
            out[key] = value
        elif isinstance(value, tuple):
            out[key] = value
        else:
            out[key] = visible(shown_json(value))[:_MAX_TEXT]
    return out


def _texts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list | tuple):
        return ()
    return tuple(visible(str(v))[:_MAX_TEXT] for v in value[:64] if v is not None)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _ms_ns(value: Any) -> int:
    """A duration in milliseconds from a record, in nanoseconds (0 when it is not a sane number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e12:
        return 0
    return int(value * 1_000_000)
