"""A validated document → an immutable, compiled `Policy` that decides calls."""

from __future__ import annotations

import fnmatch
import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from .._names import MODEL_CALL, fold_tool
from ..errors import PolicyError, PolicyProblem
from ._cel import CelEngine, ConditionSet, arg_names, fact_names
from ._facts import FactSpec, parse_fact
from ._load import Locator, read_document
from ._model import ApprovalSpec, Effect, GrantLimits, ParamSpec, ParamType, PolicyDocument, Rule
from ._params import check as check_params
from ._plain import condition_message, key_path

_ENGINE: CelEngine | None = None
_ENGINE_LOCK = threading.Lock()
_GLOB_CHARS = frozenset("*?[")
_KEEP = 4096  # entries a per-tool cache keeps before it starts again (tool names come from agents)
_DEFAULT_APPROVAL = ApprovalSpec()  # frozen: one shared instance for rules that say nothing


def engine() -> CelEngine:
    """The process's condition engine (built once; it is immutable)."""
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            _ENGINE = CelEngine()
        return _ENGINE


@dataclass(frozen=True)
class Monitored:
    """A `mode: monitor` rule that matched: what it would have done, never enforced."""

    rule_id: str
    effect: Effect
    reason: str

    def record(self) -> dict[str, str]:
        """As the call's record keeps it."""
        return {"rule_id": self.rule_id, "would": self.effect.value, "reason": self.reason}


@dataclass(frozen=True)
class Decision:
    """What policy says about one call.

    Attributes:
        effect: allow, require_approval or block.
        reason: Why, in words for the agent and the audit log.
        rule_ids: The matching rules whose effect decided (all of them, most restrictive first).
        errors: `rule-id: error` for each condition that could not be evaluated.
        approval: The approval settings, when the effect is require_approval.
        revision: The policy revision that decided.
        monitored: The `mode: monitor` rules that matched (recorded, not enforced).
        budget: `session` or `agent` when an exhausted budget asks for approval.
        grant_id: The live grant that let the call through instead of an approval.
    """

    effect: Effect
    reason: str
    rule_ids: tuple[str, ...]
    errors: tuple[str, ...]
    approval: ApprovalSpec | None
    revision: str
    monitored: tuple[Monitored, ...] = ()
    budget: str | None = None
    grant_id: str | None = None


@dataclass(frozen=True)
class ToolPlan:
    """Everything policy needs to decide calls to one tool name, resolved once."""

    tool: str
    rules: tuple[Rule, ...]
    conditional: tuple[Rule, ...]
    unconditional: tuple[Rule, ...]
    default: Effect
    default_source: str
    conditions: ConditionSet
    facts: tuple[FactSpec, ...]
    redact: tuple[str, ...]
    monitors: bool = False  # some rule has mode: monitor
    when_server_unreachable: str = "block"
    params: Mapping[str, ParamType] | None = None  # as the tool's own entry declares them
    constraints: Mapping[str, ParamSpec] | None = None  # the same entry's full declarations
    additional: str = "block"  # what an undeclared argument does when there are constraints


def _is_glob(name: str) -> bool:
    return not _GLOB_CHARS.isdisjoint(name)


class Policy:
    """A compiled policy revision. Immutable and safe to share between threads."""

    def __init__(self, document: PolicyDocument, source_text: str, source: str) -> None:
        self.document = document
        self.source_text = source_text
        self.source = source
        self.content_hash = hashlib.sha256(source_text.encode()).hexdigest()
        self.revision = f"rev_{self.content_hash[:12]}"
        self._plans: dict[str, ToolPlan] = {}
        self._limits = _limits(document)
        self._permits: dict[tuple[str, tuple[str, ...]], bool] = {}
        self._reads: dict[tuple[str, tuple[str, ...]], tuple[str, ...]] = {}
        self._budget_facts = {
            name
            for limit in self._limits
            for name in (limit.cost_fact, limit.token_fact)
            + ((limit.extra_cost_fact, limit.extra_token_fact) if limit.on_exceed == "require_approval" else ())
        }

    def plan(self, tool: str) -> ToolPlan:
        """The resolved rules, default, facts and redactions for a tool name (cached)."""
        plan = self._plans.get(tool)
        if plan is None:
            if len(self._plans) >= _KEEP:  # tool names come from agents: the cache stays bounded
                self._plans.clear()
            plan = self._plans.setdefault(tool, self._resolve(tool))
        return plan

    def _resolve(self, tool: str) -> ToolPlan:
        doc = self.document
        tool = fold_tool(tool)  # one spelling per tool (the boundary's rule)
        if tool == MODEL_CALL:  # the budgets alone decide a model call: tools' rules and defaults are for tool calls
            return ToolPlan(
                tool=tool,
                rules=(),
                conditional=(),
                unconditional=(),
                default=Effect.ALLOW,
                default_source="the default of a model call",
                conditions=engine().compile_set(()),
                facts=self.budget_facts(),
                redact=(),
            )
        exact = doc.tools.get(tool)
        globs = [(p, t) for p, t in doc.tools.items() if _is_glob(p) and fnmatch.fnmatchcase(tool, p)]
        rules = (exact.rules if exact else ()) + tuple(r for _, t in globs for r in t.rules)
        if exact is not None and exact.default is not None:
            default, source = exact.default, f"default of tool '{tool}'"
        else:
            with_default = [(p, t.default) for p, t in globs if t.default is not None]
            if with_default:
                pattern, default = max(with_default, key=lambda pd: pd[1].severity if pd[1] else 0)
                source = f"default of '{pattern}'"
                assert default is not None
            else:
                default, source = doc.default, "global default"
        conditional = tuple(r for r in rules if r.when is not None)
        names = {n for r in conditional for n in fact_names(r.when or "")} | self._budget_facts
        facts = tuple(sorted((s for n in names if (s := parse_fact(n))), key=lambda s: s.name))
        redact = tuple(
            p for pattern, ptrs in doc.redact.items() if fnmatch.fnmatchcase(tool, fold_tool(pattern)) for p in ptrs
        )
        return ToolPlan(
            tool=tool,
            rules=rules,
            conditional=conditional,
            unconditional=tuple(r for r in rules if r.when is None),
            default=default,
            default_source=source,
            conditions=engine().compile_set(r.when or "" for r in conditional),
            facts=facts,
            monitors=any(r.mode == "monitor" for r in rules),
            redact=redact,
            params=exact.param_types() if exact is not None else None,
            constraints=exact.params if exact is not None else None,
            additional=(exact.additional or "block") if exact is not None else "block",
            when_server_unreachable=(
                exact.when_server_unreachable
                if exact is not None
                else "allow"
                if globs and all(t.when_server_unreachable == "allow" for _, t in globs)
                else "block"
            ),
        )

    def decide(self, tool: str, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        """Decide one call from its plain arguments and the facts its plan asked for."""
        return self.misfit(tool, args) or self.decide_rules(tool, args, facts)

    def misfit(self, tool: str, args: Mapping[str, Any]) -> Decision | None:
        """The block of a call whose arguments do not fit the tool's `params`, or None.

        Needs no facts, so a caller that decides inside a write transaction checks this first,
        outside it (a pattern can take up to its time limit on a hostile value).
        """
        plan = self.plan(tool)
        if plan.constraints is None:
            return None
        misfits = check_params(plan.constraints, plan.additional, args)
        if not misfits:
            return None
        reason = "; ".join(f"args.{n} {why}" for n, why in misfits[:5])
        ids = tuple(dict.fromkeys(f"params:{n}" for n, _ in misfits))
        return Decision(Effect.BLOCK, f"{reason} (the tool's params)", ids, (), None, self.revision)

    def decide_rules(self, tool: str, args: Mapping[str, Any], facts: Mapping[str, Any]) -> Decision:
        """`decide` for a call whose arguments fit its `params` (see `misfit`)."""
        plan = self.plan(tool)
        matched = list(plan.unconditional)
        errors: list[str] = []
        effects: list[tuple[Effect, Rule]] = []
        if plan.conditional:
            for rule, value in zip(plan.conditional, plan.conditions.evaluate(args, facts), strict=True):
                if value is True:
                    matched.append(rule)
                elif value is not False:
                    errors.append(f"{rule.id}: {value}")
                    effects.append((rule.on_error, rule))
        monitored: tuple[Monitored, ...] = ()
        if plan.monitors:
            monitored = tuple(
                Monitored(r.id, e, _unevaluated(r, e, errors)) for e, r in effects if r.mode == "monitor"
            ) + tuple(
                Monitored(r.id, r.effect, r.reason or f"rule '{r.id}' matched") for r in matched if r.mode == "monitor"
            )
            effects = [(e, r) for e, r in effects if r.mode != "monitor"]
            matched = [r for r in matched if r.mode != "monitor"]
        effects.extend((r.effect, r) for r in matched)
        decision = self._from_effects(plan, effects, matched, errors, monitored)
        if self._limits and decision.effect is not Effect.BLOCK:
            over = self._over_budget(facts)
            if over is not None:
                limit, why = over
                if limit.on_exceed == "block":
                    return Decision(Effect.BLOCK, why, (limit.rule_id,), tuple(errors), None, self.revision, monitored)
                # The rule's own approval, when it asks for one, decides who approves.
                spec = decision.approval if decision.approval is not None else limit.approval or ApprovalSpec()
                ids = (
                    (limit.rule_id, *decision.rule_ids)
                    if decision.effect is Effect.REQUIRE_APPROVAL
                    else (limit.rule_id,)
                )
                return Decision(
                    Effect.REQUIRE_APPROVAL,
                    f"{why}; an approver may extend it",
                    ids,
                    tuple(errors),
                    spec,
                    self.revision,
                    monitored,
                    limit.scope,
                )
        return decision

    def _from_effects(
        self,
        plan: ToolPlan,
        effects: list[tuple[Effect, Rule]],
        matched: list[Rule],
        errors: list[str],
        monitored: tuple[Monitored, ...],
    ) -> Decision:
        if not effects:
            return Decision(
                plan.default,
                f"no rule matched; {plan.default_source} is {plan.default.value}",
                (),
                tuple(errors),
                None,
                self.revision,
                monitored,
            )
        if len(effects) == 1:  # the common case, on the path of every call that asks or is granted
            effect, rule = effects[0]
            if matched and matched[0] is rule:
                reason = rule.reason or f"rule '{rule.id}' matched"
            else:
                reason = _unevaluated(rule, effect, errors)
            spec = (rule.approval or _DEFAULT_APPROVAL) if effect is Effect.REQUIRE_APPROVAL else None
            return Decision(effect, reason, (rule.id,), tuple(errors), spec, self.revision, monitored)
        top = max(e.severity for e, _ in effects)
        deciding = [(e, r) for e, r in effects if e.severity == top]
        effect, first = deciding[0]
        if any(first is r for r in matched):
            reason = first.reason or f"rule '{first.id}' matched"
        else:
            reason = _unevaluated(first, effect, errors)
        approval = None
        if effect is Effect.REQUIRE_APPROVAL:
            approval = next((r.approval for _, r in deciding if r.approval), None) or _DEFAULT_APPROVAL
        return Decision(
            effect,
            reason,
            tuple(dict.fromkeys(r.id for _, r in deciding)),
            tuple(errors),
            approval,
            self.revision,
            monitored,
        )

    def _over_budget(self, facts: Mapping[str, Any]) -> tuple[_Limit, str] | None:
        for limit in self._limits:
            spent = Decimal(str(facts.get(limit.cost_fact, 0)))
            if limit.max_cost_usd is not None:
                cap = limit.max_cost_usd + Decimal(str(facts.get(limit.extra_cost_fact, 0)))
                if spent >= cap:
                    shown = format(cap.normalize(), "f")  # "$3", not "$3.0" or "$3E+0"
                    return limit, f"{limit.scope} budget exhausted: ${spent:.4f} spent{limit.window}, limit ${shown}"
            tokens = int(facts.get(limit.token_fact, 0))
            if limit.max_tokens is not None:
                cap_tokens = limit.max_tokens + int(facts.get(limit.extra_token_fact, 0))
                if tokens >= cap_tokens:
                    return limit, (
                        f"{limit.scope} budget exhausted: {tokens} tokens used{limit.window}, limit {cap_tokens}"
                    )
        return None

    def budget_state(self, facts: Mapping[str, Any]) -> tuple[str, str, str] | None:
        """For a model call about to be made: (scope, on_exceed, why) of an exhausted budget, or None.

        `facts` holds `budget_facts()`.
        """
        over = self._over_budget(facts)
        return None if over is None else (over[0].scope, over[0].on_exceed, over[1])

    def budget_facts(self) -> tuple[FactSpec, ...]:
        """The facts the budgets read (empty when the policy has none)."""
        return tuple(sorted((s for n in self._budget_facts if (s := parse_fact(n))), key=lambda s: s.name))

    def budget_approval(self, scope: str) -> ApprovalSpec:
        """Who approves extending the `scope` budget."""
        for limit in self._limits:
            if limit.scope == scope:
                return limit.approval or ApprovalSpec()
        return ApprovalSpec()

    def permits_grants(self, tool: str, rule_ids: tuple[str, ...]) -> bool:
        """Whether the rules that asked still let a grant answer them (cached: on a granted call's path)."""
        key = (tool, rule_ids)
        found = self._permits.get(key)
        if found is None:
            found = self._permits[key] = self.grant_limits(tool, rule_ids) is not None
        return found

    def grant_limits(self, tool: str, rule_ids: tuple[str, ...]) -> GrantLimits | None:
        """What an approver may grant on a call these rules put to approval, or None when nothing.

        Every rule that asked must allow grants (`approval.grants`); the limits are the
        narrowest of theirs, and None when no grant fits them all (no scope every rule allows,
        or totals of different arguments). A budget's approval never grants similar calls.
        """
        plan = self.plan(tool)
        by_id = {r.id: r for r in plan.rules}
        asked = [by_id.get(i) for i in rule_ids]
        if not asked or any(r is None or r.approval is None or r.approval.grants is None for r in asked):
            return None
        limits = [r.approval.grants for r in asked if r is not None and r.approval is not None and r.approval.grants]
        return _narrowest(limits)

    def reads(self, tool: str, rule_ids: tuple[str, ...]) -> tuple[str, ...]:
        """The arguments the conditions of these rules read: what is at stake when they ask for approval.

        In the order of `rule_ids`, then of each condition (`args.NAME`, `args["NAME"]`, and the
        argument a `facts.sum_<window>_<arg>` adds up); each once. A rule that is not the tool's
        (a budget's), or has no condition, reads none. Cached: a revision never changes.
        """
        key = (tool, rule_ids)
        found = self._reads.get(key)
        if found is None:
            by_id = {r.id: r for r in self.plan(tool).rules}
            names: dict[str, None] = {}
            for rule in (by_id.get(i) for i in rule_ids):
                if rule is None or rule.when is None:
                    continue
                names.update(dict.fromkeys(arg_names(rule.when)))
                summed = (parse_fact(n) for n in sorted(fact_names(rule.when), key=rule.when.index))
                names.update(dict.fromkeys(f.arg for f in summed if f is not None and f.kind == "sum"))
            if len(self._reads) >= _KEEP:
                self._reads.clear()
            found = self._reads[key] = tuple(names)
        return found

    def check_params(self, tool: str, params: Mapping[str, ParamType]) -> list[PolicyProblem]:
        """Type-check the conditions that apply to `tool` against its real parameters.

        When the policy declares the tool's `params`, they must name the function's parameters:
        an undeclared one would block every call (`additional: block`), a declared one the
        function does not take could never be given.
        """
        problems = []
        plan = self.plan(tool)
        if plan.constraints is not None:
            undeclared = sorted(set(params) - set(plan.constraints)) if plan.additional != "allow" else []
            unknown = sorted(set(plan.constraints) - set(params))
            for name in undeclared:
                problems.append(
                    PolicyProblem(
                        f"params of '{tool}' does not declare '{name}', a parameter of the function: declare it,"
                        " or set 'additional: allow'",
                        self.source,
                        None,
                        None,
                        None,
                    )
                )
            for name in unknown:
                problems.append(
                    PolicyProblem(
                        f"params of '{tool}' declares '{name}', which the function does not take",
                        self.source,
                        None,
                        None,
                        None,
                    )
                )
        for rule in plan.conditional:
            for issue in engine().check(rule.when or "", params):
                message = condition_message(issue.message, params)
                if message is not None:
                    problems.append(PolicyProblem(message, self.source, None, None, rule.id))
        return problems


def _unevaluated(rule: Rule, effect: Effect, errors: list[str]) -> str:
    """Why a rule whose condition could not be evaluated has its `on_error` effect."""
    error = next(e for e in errors if e.startswith(f"{rule.id}: ")).split(": ", 1)[1]
    return f"rule '{rule.id}' could not be evaluated ({error}); its on_error is {effect.value}"


def _narrowest(limits: list[GrantLimits]) -> GrantLimits | None:
    first, *rest = limits
    scopes = tuple(s for s in first.scopes if all(s in o.scopes for o in rest))
    if not scopes:
        return None  # a grant has one scope, and no scope is one every rule allows
    calls = [g.max_calls for g in limits if g.max_calls is not None]
    totals: dict[str, Decimal] = {}
    for g in limits:
        for name, cap in (g.max_total or {}).items():
            totals[name] = min(cap, totals.get(name, cap))
    if len(totals) > 1:
        return None  # a grant counts one total; the other rule's would grow without its limit
    return GrantLimits.model_construct(
        scopes=scopes,
        max_duration=min(g.max_duration for g in limits),
        max_calls=min(calls) if calls else None,
        max_total=totals or None,
    )


@dataclass(frozen=True)
class _Limit:
    scope: str
    max_cost_usd: Decimal | None
    max_tokens: int | None
    cost_fact: str
    token_fact: str
    extra_cost_fact: str
    extra_token_fact: str
    window: str
    on_exceed: str
    approval: ApprovalSpec | None

    @property
    def rule_id(self) -> str:
        return f"budget:{self.scope}"


def _limits(doc: PolicyDocument) -> tuple[_Limit, ...]:
    """The policy's budgets, with the facts that measure them (and what approvers added)."""
    limits = []
    budgets = doc.budgets
    if budgets is not None and budgets.session is not None:
        s = budgets.session
        limits.append(
            _Limit(
                "session",
                s.max_cost_usd,
                s.max_tokens,
                "session_cost_usd",
                "session_tokens",
                "session_budget_extension_usd",
                "session_budget_extension_tokens",
                "",
                s.on_exceed,
                s.approval,
            )
        )
    if budgets is not None and budgets.agent is not None:
        a, w = budgets.agent, budgets.agent.window
        limits.append(
            _Limit(
                "agent",
                a.max_cost_usd,
                a.max_tokens,
                f"agent_cost_usd_{w}s",
                f"agent_tokens_{w}s",
                f"agent_budget_extension_usd_{w}s",
                f"agent_budget_extension_tokens_{w}s",
                f" in the last {_human(w)}",
                a.on_exceed,
                a.approval,
            )
        )
    return tuple(limits)


def _human(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def compile_document(document: PolicyDocument, locator: Locator, text: str) -> Policy:
    """Check every condition and build the `Policy`.

    Raises:
        PolicyError: With every problem found, located in the source.
    """
    problems: list[PolicyProblem] = []
    seen: dict[str, tuple[str, int]] = {}
    for name, tool in document.tools.items():
        types = tool.param_types()
        if tool.params is not None and _is_glob(name):
            problems.append(
                locator.problem(
                    "'params' can only be declared for one tool name, not a glob",
                    ["tools", name, "params"],
                    key=True,
                )
            )
        for i, rule in enumerate(tool.rules):
            path: list[str | int] = ["tools", name, "rules", i]
            if rule.id in seen:
                other = seen[rule.id]
                line, _ = locator.position(["tools", other[0], "rules", other[1]])
                problems.append(
                    locator.problem(f"duplicate rule id '{rule.id}' (first used at line {line})", [*path, "id"])
                )
            seen.setdefault(rule.id, (name, i))
            limits = rule.approval.grants if rule.approval is not None else None
            if limits is not None and limits.max_total and tool.params is not None:
                (arg,) = limits.max_total
                if arg not in tool.params:
                    problems.append(
                        locator.problem(
                            f"grants.max_total limits the total of '{arg}', which is not a parameter of this tool",
                            [*path, "approval", "grants", "max_total"],
                        )
                    )
            if rule.when is None:
                continue
            for issue in engine().check(rule.when, types):
                message = condition_message(issue.message, types)
                if message is not None:
                    problems.append(_locate_issue(locator, [*path, "when"], issue.line, issue.column, message))
            for fact in fact_names(rule.when):
                spec = parse_fact(fact)
                if spec is not None and spec.kind == "sum" and tool.params is not None and spec.arg not in tool.params:
                    problems.append(
                        locator.problem(
                            f"facts.{fact} sums '{spec.arg}', which is not a parameter of this tool",
                            [*path, "when"],
                        )
                    )
    if problems:
        raise PolicyError(problems)
    return Policy(document, text, locator.source)


def _locate_issue(locator: Locator, path: list[str | int], line: int, column: int, message: str) -> PolicyProblem:
    start_line, start_col, block = locator.text_start(path)
    if start_line is None:
        return locator.problem(message, path)
    file_line = start_line + line - 1
    if block or line > 1:
        # The expression's later lines are the file's lines less their indentation.
        source_line = locator.line_text(file_line)
        lines = str(locator.node(path)).splitlines() or [""]
        expr_line = lines[min(line, len(lines)) - 1]
        indent = (len(source_line) - len(source_line.lstrip())) - (len(expr_line) - len(expr_line.lstrip()))
        start_col = indent + 1
    column = (start_col or 1) + column - 1
    return PolicyProblem(message, locator.source, file_line, column, locator.rule_id(path), key_path(path))


def parse_policy(text: str, source: str = "<string>") -> Policy:
    """Validate and compile a policy from YAML or JSON text.

    Raises:
        PolicyError: With every problem found, each located in the source.
    """
    document, locator = read_document(text, source)
    return compile_document(document, locator, text)
