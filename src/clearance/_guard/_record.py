"""Deciding one call and committing its record.

The SDK's guard and the server's `/v1/check` share this, so a call is decided and recorded the
same way wherever it is decided.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Concatenate, ParamSpec

from .._boundary import check_args, check_size, storable, summary
from .._canonical import ARGS_HASH_ALG, args_hash, canonical_json, for_record, legacy_args_hash, redact
from .._clock import now_us
from .._names import INVALID_SESSION, admit_names, name_problem, tool_problem
from .._pricing import ModelPrice, Price, price
from .._store import Database
from .._store import _approvals as approvals
from .._store import _events as events
from .._store import _facts as facts
from .._store import _grants as grants
from .._store._events import MAX_MODEL_NAME, Event, make_event
from .._text import escaped
from .._wire import ApprovalStatus
from ..errors import ApprovalError
from ..policy import Decision, Effect, Policy

P = ParamSpec("P")


@dataclass(frozen=True)
class RecordedCall:
    """A decided call whose record is committed.

    Attributes:
        call_id: Its id in the audit log.
        tool: The tool, by its canonical name.
        session: The session it was recorded under.
        decision: What policy decided.
        args_hash: SHA-256 of the RFC 8785 canonical JSON of the full arguments.
        shown_args: The arguments as recorded and shown to people (redacted, maybe cut).
        approval_id: The approval created for it, when the decision requires one.
        expires_at_us: When that approval expires.
        asked_in: The span a call asked about again was first asked in (its approval's trace).
    """

    call_id: str
    tool: str
    session: str
    decision: Decision
    args_hash: str
    shown_args: dict[str, Any]
    approval_id: str | None = None
    expires_at_us: int | None = None
    asked_in: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A call's arguments, ready to record: full JSON, its hash, and the recorded form.

    `refusal` says why the arguments cannot be decided (the boundary refused them): the call is
    blocked, and `args`/`full` are then their storable, marked form.
    """

    args: dict[str, Any]
    full: str
    args_hash: str
    recorded: dict[str, Any]
    redacted: list[str]
    truncated: bool
    refusal: str | None = None


def prepare(policy: Policy, tool: str, args: dict[str, Any], refusal: str | None = None) -> Prepared:
    """Check the arguments at the boundary; serialise and hash them; redact and size them for the record.

    `refusal` is why the call is refused already (its tool name or session, say).
    """
    problems = check_args(args)
    full = None
    if not problems:
        full = canonical_json(args)
        too_big = check_size(full)
        if too_big is not None:
            problems = [too_big]
    if problems:
        refusal = "; ".join(w for w in (refusal, summary(problems)) if w)
        args = storable(args)  # recorded truthfully, marked; redacted below like any call's
        full = canonical_json(args)
    assert full is not None
    shown, hit = redact(args, policy.plan(tool).redact)
    recorded, truncated = for_record(shown) if hit or len(full) > 1024 else (shown, False)
    return Prepared(args, full, args_hash(args, full), recorded, hit, truncated, refusal)


def refused(prepared: Prepared, policy: Policy) -> Decision | None:
    """The decision for arguments the boundary refused (block), or None when they may be decided."""
    if prepared.refusal is None:
        return None
    return Decision(Effect.BLOCK, prepared.refusal, (BOUNDARY_RULE,), (), None, policy.revision)


BOUNDARY_RULE = "boundary:arguments"


def decide_admitted(policy: Policy, tool: str, args: Any, facts: Mapping[str, Any]) -> Decision:
    """`policy.decide`, behind the boundary: what a live call with these arguments would get.

    For offline deciding (policy tests, test against history), where nothing else checked them.
    """
    name_why = tool_problem(tool)
    problems = check_args(args)
    if name_why is not None or problems:
        why = "; ".join(w for w in (name_why, summary(problems) if problems else None) if w)
        return Decision(Effect.BLOCK, why, (BOUNDARY_RULE,), (), None, policy.revision)
    return policy.decide(tool, args, facts)


def decided_event(
    at: int,
    *,
    agent: str,
    environment: str,
    session: str,
    tool: str,
    call_id: str,
    decision: Decision,
    prepared: Prepared,
    facts: dict[str, Any],
    approval_id: str | None,
    shadow: Decision | None = None,
    grant: grants.Use | None = None,
    trace: str | None = None,
) -> Event:
    """The `tool_call.decided` record of a call (with what a shadow policy decided, the grant used, and its span)."""
    fields: dict[str, Any] = {
        "agent": agent,
        "environment": environment,
        "session": session,
        "tool": tool,
        "call_id": call_id,
        "decision": decision.effect.value,
        "args": prepared.recorded,
        "args_hash": prepared.args_hash,
        "args_hash_alg": ARGS_HASH_ALG,
        "rule_ids": list(decision.rule_ids),
        "reason": decision.reason,
        "policy_revision": decision.revision,
    }
    if decision.errors:
        fields["errors"] = list(decision.errors)
    if prepared.redacted:
        fields["args_redacted"] = prepared.redacted
    if prepared.truncated:
        fields["args_truncated"] = True
    if facts:
        fields["facts"] = facts
    if approval_id is not None:
        fields["approval_id"] = approval_id
    if decision.monitored:
        fields["monitored"] = [m.record() for m in decision.monitored]
    if decision.budget is not None:
        fields["budget"] = decision.budget
    if grant is not None:
        fields["grant_id"] = grant.grant_id
        if use := grant.record():
            fields["grant_use"] = use
    if shadow is not None:
        fields["shadow"] = shadow_record(shadow)
    if trace is not None:
        fields["trace"] = trace
    # The arguments were serialised once for their hash; the record reuses that text.
    raw = {"args": prepared.full} if prepared.recorded is prepared.args else None
    return make_event("tool_call.decided", at, fields, raw=raw)


def shadow_record(shadow: Decision) -> dict[str, Any]:
    """What a shadow policy decided, as the call's record keeps it."""
    out: dict[str, Any] = {
        "revision": shadow.revision,
        "decision": shadow.effect.value,
        "rule_ids": list(shadow.rule_ids),
        "reason": shadow.reason,
    }
    if shadow.monitored:
        out["monitored"] = [m.record() for m in shadow.monitored]
    return out


def decide_shadow(shadow: Policy, tool: str, args: dict[str, Any], facts: Mapping[str, Any]) -> Decision:
    """What the shadow policy would decide (never enforced); a shadow that fails says so, never raises."""
    try:
        return shadow.decide(tool, args, facts)
    except Exception as exc:  # a shadow must never change what the enforced policy does
        return Decision(
            Effect.BLOCK,
            f"the shadow policy failed: {type(exc).__name__}",
            ("shadow:error",),
            (),
            None,
            shadow.revision,
        )


def call_recorder(
    db: Database,
    policy: Policy,
    *,
    agent: str,
    environment: str,
    tool: str,
    args: dict[str, Any],
    session: str,
    prepend: Sequence[Event] = (),
    waiter: Callable[[], str | None] | None = None,
    requested_by: str | None = None,
    mode: str = "wait",
    webhook_url: str | None = None,
    call_key: str | None = None,
    shadow: Policy | None = None,
    model_gate: bool = False,
    trace: str | None = None,
    refusal: str | None = None,
) -> Callable[[Any], RecordedCall]:
    """Decide a call from `policy` and record it, after the `prepend` records, in two steps.

    The arguments are prepared now, outside any transaction; the returned function decides and
    records the call inside the caller's write transaction (given its cursor), so a server can
    commit many calls at once (`record_call` commits one in a transaction of its own). Its
    pending approval, if the decision requires one, is recorded in the same transaction. Facts
    are read inside that transaction, so two writers cannot both pass a cap. `waiter` gives
    the address the approval's waiter listens on (SDK only).

    `call_key` is the framework's own id of the call (its tool-call id). A framework that
    pauses natively runs its hook again on resume; with the same key, the call's approval is
    found and returned instead of deciding and recording the call a second time.

    A call that policy puts to approval and a live grant covers is allowed instead, and uses
    the grant (`grants.use`) in the same transaction. With a `shadow` policy, the call is also
    decided by it, on the same facts, and what it decided is recorded beside (never enforced).
    `model_gate` admits the reserved `MODEL_CALL` (a remote agent's model-call gate, at the server).
    `trace` is the span the call was made in (a checked traceparent): kept on its record and
    its approval, for the spans emitted from the log (`_sinks._otel`). `refusal` blocks the
    call before policy, for that reason (an MCP proxy's call to a tool none of its servers has).

    The returned function raises `ApprovalError` when the key's approval holds other arguments
    than these.
    """
    tool, session, names_refusal = admit_names(tool, session, reserved=model_gate)
    refusal = "; ".join(w for w in (refusal, names_refusal) if w) or None
    plan = policy.plan(tool)
    at = now_us()
    prepared = prepare(policy, tool, args, refusal)
    args = prepared.args
    blocked = refused(prepared, policy) or policy.misfit(tool, args)  # outside the transaction
    call_id = events.new_id("call")

    def record(cur: Any) -> RecordedCall:
        if call_key is not None and (earlier := approvals.by_key(db, cur, agent, call_key)) is not None:
            if prepend:
                events.append(db, cur, list(prepend))
            return _recorded_before(earlier, tool, prepared)
        fact_values: dict[str, Any] = {}
        decision = blocked
        grant = None
        ended: list[Event] = []
        shadow_decision = None
        if decision is None:
            if plan.facts:
                fact_values, fact_errors = facts.compute(
                    db,
                    cur,
                    plan.facts,
                    agent=agent,
                    environment=environment,
                    session=session,
                    tool=tool,
                    now_us=at,
                    args=args,
                    requester=requested_by,
                )
            decision = policy.decide_rules(tool, args, fact_values)
            if plan.facts and fact_errors:
                decision = _explain_fact_errors(decision, fact_errors)
            if shadow is not None:  # before a grant is used: the shadow sees the grants the enforced policy saw
                shadow_decision = _shadow_decision(
                    db,
                    cur,
                    shadow,
                    tool,
                    args,
                    fact_values,
                    agent=agent,
                    environment=environment,
                    session=session,
                    at=at,
                    requester=requested_by,
                    enforced=(policy, decision),
                )
            if fact_values.get("grant_id") and decision.effect is Effect.ALLOW:
                decision, grant, ended = _under_read_grant(
                    db, cur, policy, tool, args, fact_values, decision, agent, environment, session, requested_by, at
                )
            if (
                decision.effect is Effect.REQUIRE_APPROVAL
                and decision.budget is None
                and policy.permits_grants(tool, decision.rule_ids)  # the rule as it is now, not as it was
            ):
                used = grants.use(
                    db,
                    cur,
                    agent=agent,
                    environment=environment,
                    tool=tool,
                    session=session,
                    requester=requested_by,
                    rule_ids=decision.rule_ids,
                    args=args,
                    at=at,
                )
                if used is not None:
                    grant, ended = used
                    decision = Decision(  # not dataclasses.replace: this is the hot path of a granted call
                        Effect.ALLOW,
                        f"{decision.reason}; allowed by grant {grant.grant_id} from {grant.granted_by}",
                        decision.rule_ids,
                        decision.errors,
                        None,
                        decision.revision,
                        decision.monitored,
                        None,
                        grant.grant_id,
                    )
        if shadow is not None and shadow_decision is None:
            shadow_decision = refused(prepared, shadow) or _shadow_decision(
                db,
                cur,
                shadow,
                tool,
                args,
                fact_values,
                agent=agent,
                environment=environment,
                session=session,
                at=at,
                requester=requested_by,
            )
        approval_id = events.new_id("apr") if decision.effect is Effect.REQUIRE_APPROVAL else None
        batch = [*prepend]
        batch.append(
            decided_event(
                at,
                agent=agent,
                environment=environment,
                session=session,
                tool=tool,
                call_id=call_id,
                decision=decision,
                prepared=prepared,
                facts=fact_values,
                approval_id=approval_id,
                shadow=shadow_decision,
                grant=grant,
                trace=trace,
            )
        )
        batch.extend(ended)
        expires = None
        if approval_id is not None:
            spec = decision.approval
            assert spec is not None
            expires = at + spec.timeout * 1_000_000
            approvals.insert(
                db,
                cur,
                {
                    "id": approval_id,
                    "call_id": call_id,
                    "status": ApprovalStatus.PENDING,
                    "tool": tool,
                    "agent": agent,
                    "environment": environment,
                    "session": session,
                    "args_json": prepared.full,
                    "args_hash": prepared.args_hash,
                    "shown_args_json": canonical_json(prepared.recorded),
                    "rule_ids": json.dumps(list(decision.rule_ids)),
                    "reason": decision.reason,
                    "policy_revision": decision.revision,
                    "approvers": json.dumps(list(spec.approvers)),
                    "on_timeout": spec.on_timeout,
                    "quorum": spec.quorum,
                    "escalate_to": json.dumps(list(spec.escalate_to)) if spec.escalate_to else None,
                    "escalation_timeout_s": spec.escalation_timeout,
                    "requested_by": requested_by,
                    "mode": mode,
                    "webhook_url": webhook_url if mode == "webhook" else None,
                    "created_at_us": at,
                    "expires_at_us": expires,
                    "waiter": waiter() if waiter else None,
                    "call_key": call_key,
                    "trace_context": trace,
                },
            )
            batch.append(
                make_event(
                    "approval.requested",
                    at,
                    {
                        "agent": agent,
                        "environment": environment,
                        "session": session,
                        "tool": tool,
                        "call_id": call_id,
                        "approval_id": approval_id,
                        "expires_at": events.iso(expires),
                        "approvers": list(spec.approvers),
                        "on_timeout": spec.on_timeout,
                        **({"quorum": spec.quorum} if spec.quorum > 1 else {}),
                        **({"escalate_to": list(spec.escalate_to)} if spec.escalate_to else {}),
                        **({"requested_by": requested_by} if requested_by else {}),
                        **({"mode": mode} if mode != "wait" else {}),
                    },
                )
            )
        events.append(db, cur, batch)
        return RecordedCall(
            call_id, tool, session, decision, prepared.args_hash, prepared.recorded, approval_id, expires
        )

    return record


def _under_read_grant(
    db: Database,
    cur: Any,
    policy: Policy,
    tool: str,
    args: dict[str, Any],
    fact_values: dict[str, Any],
    decision: Decision,
    agent: str,
    environment: str,
    session: str,
    requester: str | None,
    at: int,
) -> tuple[Decision, grants.Use | None, list[Event]]:
    """A call allowed where a rule read `facts.grant_id` and a grant covers it: the grant counts the use.

    Otherwise a rule like `facts.grant_id == ""` would let a grant's calls through uncounted,
    past its limits. Only a call the grant let through counts: decided without it, it would
    not have been allowed. When the last use went to a racing call, the call is decided again
    without the grant.
    """
    without = policy.decide_rules(tool, args, {**fact_values, "grant_id": ""})
    if without.effect is Effect.ALLOW:
        return decision, None, []  # allowed either way: the grant is not used
    used = grants.use(
        db,
        cur,
        agent=agent,
        environment=environment,
        tool=tool,
        session=session,
        requester=requester,
        rule_ids=(),
        args=args,
        at=at,
    )
    if used is None:
        fact_values["grant_id"] = ""
        return policy.decide_rules(tool, args, fact_values), None, []
    use, ended = used
    fact_values["grant_id"] = use.grant_id
    return replace(decision, reason=f"{decision.reason}; under grant {use.grant_id}", grant_id=use.grant_id), use, ended


def _shadow_decision(
    db: Database,
    cur: Any,
    shadow: Policy,
    tool: str,
    args: dict[str, Any],
    known: dict[str, Any],
    *,
    agent: str,
    environment: str,
    session: str,
    at: int,
    requester: str | None,
    enforced: tuple[Policy, Decision] | None = None,
) -> Decision:
    """The shadow's decision on the facts the enforced policy read, and any more it needs.

    Where the shadow decides the tool exactly as the `enforced` policy does (a shadow changes
    a few tools, not all), the enforced policy's decision is the shadow's, from its rules. An
    approval the shadow asks for that a live grant covers is allowed, as it would be enforced
    (the grant is read, not used).
    """
    if enforced is not None and _same_plan(enforced[0], shadow, tool):
        d = enforced[1]
        decided = Decision(
            d.effect, d.reason, d.rule_ids, d.errors, d.approval, shadow.revision, d.monitored, d.budget, d.grant_id
        )
    else:
        specs = [s for s in shadow.plan(tool).facts if s.name not in known]
        values = known
        if specs:
            more, _ = facts.compute(
                db,
                cur,
                specs,
                agent=agent,
                environment=environment,
                session=session,
                tool=tool,
                now_us=at,
                args=args,
                requester=requester,
            )
            values = {**known, **more}
        decided = decide_shadow(shadow, tool, args, values)
    if decided.effect is Effect.REQUIRE_APPROVAL and decided.budget is None:
        grant = grants.covering(
            db,
            cur,
            agent=agent,
            environment=environment,
            tool=tool,
            session=session,
            requester=requester,
            args=args,
            at=at,
            rule_ids=decided.rule_ids,
        )
        if grant is not None:
            why = f"{decided.reason}; allowed by grant {grant.id} from {grant.granted_by}"
            decided = replace(decided, effect=Effect.ALLOW, reason=why, approval=None, grant_id=grant.id)
    return decided


_SAME_PLANS: dict[tuple[str, str, str], bool] = {}  # (enforced revision, shadow revision, tool): same decisions
_SAME_PLANS_KEEP = 4096


def _same_plan(policy: Policy, shadow: Policy, tool: str) -> bool:
    """Whether `shadow` decides calls to `tool` as `policy` does: the same rules, default, params and budgets."""
    key = (policy.revision, shadow.revision, tool)
    same = _SAME_PLANS.get(key)
    if same is None:
        try:
            a, b = policy.plan(tool), shadow.plan(tool)
            same = (a.rules, a.default, a.default_source, a.constraints, a.additional) == (
                b.rules,
                b.default,
                b.default_source,
                b.constraints,
                b.additional,
            ) and policy.document.budgets == shadow.document.budgets
        except Exception:  # whatever fails here is the shadow's to fail, deciding on its own
            same = False
        if len(_SAME_PLANS) >= _SAME_PLANS_KEEP:  # tool names come from agents: keep it bounded
            _SAME_PLANS.clear()
        _SAME_PLANS[key] = same
    return same


def _in_own_transaction(
    recorder: Callable[Concatenate[Database, P], Callable[[Any], RecordedCall]],
) -> Callable[Concatenate[Database, P], RecordedCall]:
    """`recorder`, committing the call it prepares in a write transaction of its own."""

    def record_call(db: Database, /, *args: P.args, **kwargs: P.kwargs) -> RecordedCall:
        """Decide a call and commit its record (`call_recorder`'s arguments), in one transaction."""
        step = recorder(db, *args, **kwargs)
        with db.write() as cur:
            return step(cur)

    return record_call


record_call = _in_own_transaction(call_recorder)


def _recorded_before(earlier: approvals.Approval, tool: str, prepared: Prepared) -> RecordedCall:
    """The call a replayed hook asks about again: as recorded the first time."""
    # An approval put before `args_hash` became JCS holds the earlier hash of the same arguments.
    same = earlier.args_hash in (prepared.args_hash, legacy_args_hash(prepared.args))
    if earlier.tool != tool or not same:
        raise ApprovalError(
            earlier.id,
            tool,
            f"tool call {earlier.call_key!r} was put to approval as {earlier.tool} with other arguments;"
            " a replayed call must be the same call",
        )
    decision = Decision(Effect.REQUIRE_APPROVAL, earlier.reason, earlier.rule_ids, (), None, earlier.policy_revision)
    session = earlier.session or ""
    return RecordedCall(
        earlier.call_id,
        tool,
        session,
        decision,
        earlier.args_hash,
        earlier.shown_args,
        earlier.id,
        earlier.expires_at_us,
        earlier.trace,
    )


def _explain_fact_errors(decision: Decision, fact_errors: dict[str, str]) -> Decision:
    """Say why a fact could not be computed where CEL only says the key was missing."""

    def better(text: str) -> str:
        for name, why in fact_errors.items():
            text = text.replace(f'Key not found in map : "{name}"', why)
        return text

    return replace(decision, reason=better(decision.reason), errors=tuple(better(e) for e in decision.errors))


def model_name(model: str) -> str:
    """A model name as records keep it: NUL and lone surrogates escaped, at most `MAX_MODEL_NAME` characters.

    A longer name (no provider's is) keeps its first `MAX_MODEL_NAME - 1` characters and ends
    with `…`, so the cut shows; the server refuses a longer one outright.
    """
    model = escaped(model)
    return model if len(model) <= MAX_MODEL_NAME else model[: MAX_MODEL_NAME - 1] + "…"


def llm_event(
    *,
    agent: str,
    environment: str,
    session: str,
    model: str,
    provider: str | None,
    input_tokens: int,
    output_tokens: int,
    cached_input_tokens: int,
    reasoning_tokens: int,
    latency_ms: float | None,
    overrides: Mapping[str, ModelPrice],
    trace: str | None = None,
    usage_traced: bool = False,
) -> tuple[Event, Price]:
    """Price one LLM call and build its `llm.call` record (unpriced: cost null, never $0).

    `trace` is the span it was recorded in; `usage_traced` says a framework's instrumentation
    already put its usage on a span of its own (the OpenTelemetry sink then adds none).

    The session follows the boundary's rule for names (else the call is recorded under
    `INVALID_SESSION`, never lost); the model name, reported by a provider, is kept as text
    every store keeps.
    """
    if name_problem(session, "the session id") is not None:
        session = INVALID_SESSION
    model = model_name(model)
    cost = price(model, input_tokens, output_tokens, cached_input_tokens, provider=provider, overrides=overrides)
    event = make_event(
        "llm.call",
        now_us(),
        {
            "agent": agent,
            "environment": environment,
            "session": session,
            "tool": None,
            "model": model,
            "provider": cost.provider or provider,
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cached_input_tokens": cached_input_tokens,
            "reasoning_tokens": reasoning_tokens,
            "tokens": input_tokens + output_tokens,
            "priced": cost.cost_usd is not None,
            "cost_usd": str(cost.cost_usd) if cost.cost_usd is not None else None,
            "cost_nusd": cost.nano_usd,
            "price_source": cost.source,
            "latency_ms": latency_ms,
            **({"trace": trace} if trace is not None else {}),
            **({"usage_traced": True} if usage_traced else {}),
        },
    )
    return event, cost
