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

A call is held from its decision until it ends: blocked (at once), denied, expired undecided,
cancelled (at that record), or finished (a call allowed on its approval's timeout runs, so it
ends when it has run). A call resumed in another trace (another process, a resumed graph)
also gets an `execute_tool` span there, linked to the one where it was asked (and naming it
in `clearance.asked_in.trace_id` / `.span_id`, for backends that keep no links).

What is held is what the span needs, its text already shown and cut (the arguments only with
`args=True`), by agent and call id; at most `keep` calls, and none that has had no record for
`max_age` seconds (of this process's clock: a record dated in the future cannot age the rest):
the quietest is emitted as it stands, marked `clearance.unfinished`. A new configuration's sink
of the same name on the same store takes over the calls the last one held; the last one to
close emits them as they stand. A process with nowhere to send spans (no tracer provider)
leaves the store's records to one that has (`ready`). What a restart loses: a call
decided before the sink started gets its span from its `tool_call.finished` record alone.
Delivery is at least once, so a crash may repeat a batch's spans. Times come from records
(an agent's shipped ones included) and are clamped to what OTLP can carry, a span never
ending before it starts.

Attributes follow the OpenTelemetry GenAI conventions for tool execution (`gen_ai.operation.name`
`execute_tool`, `gen_ai.tool.name`, `gen_ai.tool.call.id`, …) with Clearance's own under
`clearance.*`. Text is shown as people must see it (hidden and direction-changing characters
named, `_visible`), cut at 4,096 characters. Arguments go on a span only with `args=True`, and
then as recorded: a redacted value is never on a span.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import orjson

from .. import _trace
from .._clock import now_us
from .._version import __version__
from .._visible import shown_json, visible
from ._record import Record

log = logging.getLogger("clearance.sinks")

_MAX_TEXT = 4096
_MAX_NS = 2**63 - 1  # OTLP times are unsigned 64-bit; the SDK's are signed
# Seconds of span-making between giving the interpreter up. A call waiting for it otherwise
# waits up to a switch interval (5 ms); giving it up after every span costs each call one span.
_SLICE = 0.001
_ENDS_WAIT = ("approval.decided", "approval.expired", "approval.abandoned")  # abandoned: its waiter died
_RUNS = ("approved", "allowed_on_timeout")  # decisions after which the call runs
_SCOPE = "clearance"
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
        "approval.abandoned",
        "approval.executed",
        "approval.failed",
        "llm.call",
    }
)

Key = tuple[str, str]  # (agent, call id): an agent names its own calls


@dataclass
class _Call:
    """One call held between its decision and its end: only what its span needs, shown and cut."""

    key: Key
    tool: str
    attributes: dict[str, Any]
    parent: str | None  # the traceparent it was made in
    start_ns: int
    blocked_reason: str | None = None
    events: list[tuple[str, dict[str, Any], int]] = field(default_factory=list)
    wait: tuple[int, int, dict[str, Any]] | None = None  # requested at, decided at, attributes
    requested_ns: int | None = None
    outcome: str | None = None  # the approval's decision, once decided
    last_ns: int = 0  # the newest record of it (record time)
    seen_us: int = 0  # when this process last had a record of it (its clock: records may lie)

    @property
    def runs(self) -> bool:
        """Whether the call goes on to run (allowed, or approved): it ends when it has."""
        return self.outcome is None or self.outcome in _RUNS


# By store and name: a closing sink hands the calls it holds to a newer one of the same.
_live: dict[tuple[str, str], list[weakref.ref[OtelSink]]] = {}
_live_lock = threading.Lock()


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
        max_age: Seconds a call is held with no record of it (an approval never decided, a
            process that died mid-call); then it is emitted as it stands.
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
        max_age: float = 86_400.0,
    ) -> None:
        try:
            from opentelemetry import trace
            from opentelemetry.context import Context
        except ImportError:
            from ..errors import ConfigurationError

            raise ConfigurationError("the OpenTelemetry sink needs pip install 'clearance[otel]'") from None
        self.name = name
        self.args, self.usage, self.keep, self.max_age_ns = args, usage, keep, int(max_age * 1e9)
        self._trace, self._empty = trace, Context
        self._tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
        self._held: OrderedDict[Key, _Call] = OrderedDict()  # oldest decision first
        self._lock = threading.Lock()  # the sink's thread, and a predecessor handing over
        self._provider = tracer_provider
        self._store: str | None = None
        self._ended: OrderedDict[Key, None] = OrderedDict()  # calls it ended lately, not to take over again

    def bind(self, store: str) -> None:
        """Learn the store (or spool) it delivers: the calls it holds are handed on within it."""
        self._store = store
        with _live_lock:
            _live.setdefault((store, self.name), []).append(weakref.ref(self))

    def ready(self) -> bool:
        """Whether its spans go anywhere: a provider given, or a global one set (else another process delivers)."""
        if self._provider is not None:
            return True
        provider = self._trace.get_tracer_provider()
        return not isinstance(provider, self._trace.ProxyTracerProvider | self._trace.NoOpTracerProvider)

    # -- the records -----------------------------------------------------------------------

    def deliver(self, batch: Sequence[Record]) -> None:
        """Make the spans of the calls that end in `batch`; hold the rest. Never raises for a record."""
        ended: list[tuple[_Call, dict[str, Any] | None, int]] = []
        with self._lock:
            for record in batch:
                try:
                    self._take(record, ended)
                except Exception as exc:  # one record that cannot be traced must not stop the others
                    log.warning("no span for record %s (%s): %r", record.id, record.kind, exc)
            self._let_go(ended)
        slice_began = time.perf_counter()
        for call, finished, end_ns in ended:
            try:
                self._emit(call, finished, end_ns)
            except Exception as exc:
                log.warning("a span could not be made for a %s call: %r", call.tool, exc)
            if time.perf_counter() - slice_began > _SLICE:
                time.sleep(0)  # a governed call waiting for the interpreter waits a slice, not a switch interval
                slice_began = time.perf_counter()

    def _take(self, record: Record, ended: list[tuple[_Call, dict[str, Any] | None, int]]) -> None:
        kind = record.kind
        if kind not in _KINDS:
            return
        try:  # a strict JSON object, as the guard writes it: the fast reader
            event = orjson.loads(record.body)
        except orjson.JSONDecodeError:
            event = None
        if not isinstance(event, dict):
            event = record.event()  # as every reader shows a body that is not (marked)
        at_ns = _ns(record.at_us * 1000 if isinstance(record.at_us, int) else 0)
        if kind == "llm.call":
            self._usage(event, at_ns)
            return
        call_id = event.get("call_id")
        if not isinstance(call_id, str):
            return
        key = (str(event.get("agent")), call_id)
        if kind == "tool_call.decided":
            call = self._decided(key, event, at_ns)
            if event.get("decision") == "block":
                ended.append((call, None, at_ns))
            else:
                self._held.pop(key, None)  # a repeated record: the newer one
                self._held[key] = call
                call.seen_us = now_us()
            return
        if kind == "tool_call.finished":
            held = self._held.pop(key, None)
            self._ended[key] = None
            if len(self._ended) > self.keep:
                self._ended.popitem(last=False)
            if held is None:  # decided before this sink started: the span from this record alone
                start = _ns(at_ns - _ms_ns(event.get("duration_ms")))
                tool = visible(str(event.get("tool") or "unknown"))[:_MAX_TEXT]
                held = _Call(key, tool, {}, _trace.checked(event.get("trace")), start)
            ended.append((held, event, at_ns))
            return
        found = self._held.get(key) or _ended(ended, key)
        if found is None:
            return
        found.last_ns, found.seen_us = at_ns, now_us()
        if key in self._held:
            self._held.move_to_end(key)  # held in the order of their last record: the quietest first
        by = event.get("by")
        if kind == "approval.requested":
            found.requested_ns = at_ns
            found.events.append(("clearance.approval.requested", _approvers(event), at_ns))
        elif kind in ("approval.executed", "approval.failed"):
            found.events.append(("clearance.approval.resumed", _attrs({"clearance.executor": by}), at_ns))
        else:
            decision = str(event.get("decision") or kind.partition(".")[2])
            attrs = _attrs(
                {
                    "clearance.approval.decision": decision,
                    "clearance.approval.by": by,
                    "clearance.approval.note": event.get("note"),
                }
            )
            found.events.append((f"clearance.{kind}", attrs, at_ns))
            if kind in _ENDS_WAIT:
                self._end_wait(key, found, event, decision, at_ns, ended)

    def _decided(self, key: Key, d: dict[str, Any], at_ns: int) -> _Call:
        """A decided call's span, as far as its decision says."""
        tool = visible(str(d.get("tool") or "unknown"))[:_MAX_TEXT]
        found: dict[str, Any] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.type": "function",
            "gen_ai.tool.call.id": d.get("call_id"),
            "gen_ai.agent.name": d.get("agent"),
            "gen_ai.conversation.id": d.get("session"),
            "clearance.call_id": d.get("call_id"),
            "clearance.environment": d.get("environment"),
            "clearance.decision": d.get("decision"),
            "clearance.rule_ids": _texts(d.get("rule_ids")),
            "clearance.reason": d.get("reason"),
            "clearance.policy_revision": d.get("policy_revision"),
            "clearance.approval_id": d.get("approval_id"),
            "clearance.grant_id": d.get("grant_id"),
            "clearance.args_hash": d.get("args_hash"),
            "clearance.monitored": _texts([m.get("rule_id") for m in d.get("monitored") or () if isinstance(m, dict)]),
        }
        shadow = d.get("shadow")
        if isinstance(shadow, dict):
            found["clearance.shadow.decision"] = shadow.get("decision")
            found["clearance.shadow.revision"] = shadow.get("revision")
        if self.args and isinstance(d.get("args"), dict):
            found["gen_ai.tool.call.arguments"] = shown_json(d["args"])
            if d.get("args_redacted"):
                found["clearance.args_redacted"] = _texts(d.get("args_redacted"))
        blocked = str(d.get("reason") or "") if d.get("decision") == "block" else None
        return _Call(key, tool, _attrs(found), _trace.checked(d.get("trace")), at_ns, blocked, last_ns=at_ns)

    def _end_wait(
        self,
        key: Key,
        call: _Call,
        event: dict[str, Any],
        decision: str,
        at_ns: int,
        ended: list[tuple[_Call, dict[str, Any] | None, int]],
    ) -> None:
        """An approval's decision: the wait is over; a call that will not run ends here.

        An approved call abandoned later (its waiter died; nothing ran it) keeps the wait it had.
        """
        if call.wait is None:
            begun = call.requested_ns if call.requested_ns is not None else call.start_ns
            attrs = _attrs(
                {
                    "clearance.approval_id": event.get("approval_id"),
                    "clearance.approval.decision": decision,
                    "clearance.approval.by": event.get("by"),
                    "clearance.wait_ms": max(0, at_ns - begun) / 1e6,
                }
            )
            call.wait = (begun, at_ns, attrs)
        call.outcome = decision
        if not call.runs and self._held.pop(key, None) is not None:
            self._ended[key] = None
            ended.append((call, None, at_ns))

    def _let_go(self, ended: list[tuple[_Call, dict[str, Any] | None, int]]) -> None:
        """Emit, as they stand, the calls held past `keep`, or with no record for `max_age` (quietest first).

        Their age is this process's clock, not the records': a record dated in the future (an
        agent's clock, or a hostile one) cannot age every other call at once.
        """
        stale = now_us() - self.max_age_ns // 1000
        while self._held:
            key, oldest = next(iter(self._held.items()))
            if len(self._held) <= self.keep and oldest.seen_us >= stale:
                break
            del self._held[key]
            ended.append((oldest, None, oldest.last_ns))

    # -- the spans -------------------------------------------------------------------------

    def _emit(self, call: _Call, finished: dict[str, Any] | None, end_ns: int) -> None:
        """The call's span (and its wait's), from its decision to its end; a resume elsewhere gets its own."""
        trace = self._trace
        decided = bool(call.attributes)
        f = finished or {}
        asked_in = _trace.checked(f.get("asked_in"))
        ran_in = _trace.checked(f.get("trace"))
        attributes = {**call.attributes, **_outcome(f)} if finished is not None else dict(call.attributes)
        links = []
        if not decided:  # only the outcome is known: it ran where it finished
            attributes.update(_attrs(_base(f, call.tool)))
            if asked_in is not None:
                asked = _trace.span_context(asked_in)
                links.append(trace.Link(asked, {"clearance.link": "asked"}))
                attributes.update(_asked_attributes(asked))
        unfinished = finished is None and call.runs and call.blocked_reason is None
        if unfinished:
            attributes["clearance.unfinished"] = True
        span = self._tracer.start_span(
            f"execute_tool {call.tool}",
            context=self._context(call.parent),
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
                context=trace.set_span_in_context(span, self._empty()),
                attributes=attrs,
                start_time=begun,
            )
            wait.end(end_time=max(begun, until))
        self._status(span, call, finished)
        span.end(end_time=max(call.start_ns, end_ns))
        if decided and asked_in is not None and ran_in is not None and finished is not None:
            self._resumed(call, span, finished, ran_in, end_ns)

    def _resumed(self, call: _Call, asked: Any, finished: dict[str, Any], ran_in: str, end_ns: int) -> None:
        """The span of a call run in another trace than the one it was asked in, linked to the asked one."""
        trace = self._trace
        start = _ns(end_ns - _ms_ns(finished.get("duration_ms")))
        span = self._tracer.start_span(
            f"execute_tool {call.tool}",
            context=self._context(ran_in),
            kind=trace.SpanKind.INTERNAL,
            attributes={
                **call.attributes,
                **_outcome(finished),
                **_asked_attributes(asked.get_span_context()),
                "clearance.resumed": True,
            },
            links=[trace.Link(asked.get_span_context(), {"clearance.link": "asked"})],
            start_time=start,
        )
        self._status(span, call, finished)
        span.end(end_time=max(start, end_ns))

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
        start = _ns(at_ns - _ms_ns(event.get("latency_ms")))
        span = self._tracer.start_span(
            f"chat {model}",
            context=self._context(_trace.checked(event.get("trace"))),
            kind=self._trace.SpanKind.CLIENT,
            attributes=attrs,
            start_time=start,
        )
        span.end(end_time=max(start, at_ns))

    def _status(self, span: Any, call: _Call, finished: dict[str, Any] | None) -> None:
        status, code = self._trace.Status, self._trace.StatusCode
        if finished is not None:
            if finished.get("decision") == "error":
                error = str(finished.get("error") or "error")
                span.set_attribute("error.type", visible(error.partition(":")[0])[:200])
                span.set_status(status(code.ERROR, visible(error)[:_MAX_TEXT]))
            return
        if call.blocked_reason is not None:
            span.set_attribute("error.type", "clearance.blocked")
            span.set_status(status(code.ERROR, visible(f"blocked: {call.blocked_reason}")[:_MAX_TEXT]))
        elif not call.runs:
            outcome = visible(str(call.outcome))[:200]
            span.set_attribute("error.type", f"clearance.{outcome}")
            span.set_status(status(code.ERROR, f"approval {outcome}"))

    def _take_over(self, held: OrderedDict[Key, _Call]) -> None:
        """The calls a retired sink held, but those this one has ended meanwhile (their outcome came first)."""
        let_go: list[tuple[_Call, dict[str, Any] | None, int]] = []
        with self._lock:
            for key, call in held.items():
                if key not in self._ended and key not in self._held:
                    self._held[key] = call
            self._let_go(let_go)
        for call, finished, end_ns in let_go:
            self._emit(call, finished, end_ns)

    def _context(self, traceparent: str | None) -> Any:
        """The context a span is made in: under the recorded parent, or a new trace (never this thread's own)."""
        if traceparent is None:
            return self._empty()
        parent = self._trace.NonRecordingSpan(_trace.span_context(traceparent))
        return self._trace.set_span_in_context(parent, self._empty())

    def close(self) -> None:
        """Hand the calls still held to a newer sink of the same name on the same store, or emit them as they stand."""
        place = (self._store or "", self.name)
        with _live_lock:
            others = [s for r in _live.get(place, []) if (s := r()) is not None and s is not self]
            if others:
                _live[place] = [weakref.ref(s) for s in others]
            else:
                _live.pop(place, None)
            successor = others[-1] if others and self._store is not None else None
        with self._lock:
            held, self._held = self._held, OrderedDict()
        if successor is not None:
            successor._take_over(held)
            return
        for call in held.values():
            try:
                self._emit(call, None, call.last_ns)
            except Exception as exc:
                log.warning("a span could not be made for a %s call: %r", call.tool, exc)


def _ended(ended: list[tuple[_Call, dict[str, Any] | None, int]], key: Key) -> _Call | None:
    """A call that ended earlier in this batch (its `approval.executed` follows its `tool_call.finished`)."""
    return next((call for call, _, _ in reversed(ended) if call.key == key), None)


def _base(finished: dict[str, Any], tool: str) -> dict[str, Any]:
    """What a span made from a `tool_call.finished` record alone says of its call."""
    return {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool,
        "gen_ai.tool.type": "function",
        "gen_ai.tool.call.id": finished.get("call_id"),
        "gen_ai.agent.name": finished.get("agent"),
        "gen_ai.conversation.id": finished.get("session"),
        "clearance.call_id": finished.get("call_id"),
        "clearance.environment": finished.get("environment"),
        "clearance.approval_id": finished.get("approval_id"),
    }


def _outcome(finished: dict[str, Any]) -> dict[str, Any]:
    return _attrs({"clearance.outcome": finished.get("decision"), "clearance.duration_ms": finished.get("duration_ms")})


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
    """Values OpenTelemetry takes: text shown visibly and cut, finite numbers, flags, lists of text; no None."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if value is None or value == ():
            continue
        if isinstance(value, str):
            out[key] = visible(value)[:_MAX_TEXT]
        elif isinstance(value, bool):
            out[key] = value
        elif isinstance(value, int):
            out[key] = value if -(2**63) <= value < 2**63 else str(value)  # OTLP's integers are 64-bit
        elif isinstance(value, float):
            out[key] = value if value == value and abs(value) != float("inf") else str(value)
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
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63 else None


def _ns(value: int) -> int:
    """A time in nanoseconds OTLP can carry: within 0 and 2**63 - 1."""
    return min(max(value, 0), _MAX_NS)


def _ms_ns(value: Any) -> int:
    """A duration in milliseconds from a record, in nanoseconds (0 when it is not a sane number)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e12:
        return 0
    return int(value * 1_000_000)
