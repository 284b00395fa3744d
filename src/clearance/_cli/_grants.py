"""`clearance grants list|show|revoke`, and the grant an approver gives with `approvals approve`.

On the embedded store, like deciding: whoever can write the file lists and revokes grants.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import click
from pydantic import TypeAdapter, ValidationError

from .._clock import now_us
from .._grant_views import grant_out
from .._granting import BudgetExtension, GrantRequest
from .._store import Database
from .._store import _grants as grants
from .._text import text_problem
from .._visible import shown_json, visible
from .._wire import ConstraintIn, GrantOut
from ..errors import GrantRejected
from ..policy._model import GRANT_SCOPES, ParamType
from ._common import database_option, decider, friendly, open_db, safe, table, when

_CONSTRAINT: TypeAdapter[ConstraintIn | ParamType] = TypeAdapter(ConstraintIn | ParamType)  # type: ignore[arg-type, unused-ignore]
_WHOLE = re.compile(r"\d{1,12}")


@click.group("grants")
def grants_group() -> None:
    """List and revoke what approvers let through beyond one call (grants, budget extensions)."""


def grant_options(fn: Any) -> Any:
    """The `approve` options that also grant similar calls or extend a budget."""
    options = [
        click.option(
            "--grant-scope",
            type=click.Choice(GRANT_SCOPES),
            default=None,
            help="Also let similar calls through: of this session, agent, or person the agent acts for.",
        ),
        click.option("--grant-for", metavar="DURATION", default=None, help="How long the grant lasts: 30m, 8h, 3600."),
        click.option("--grant-max-calls", type=int, default=None, metavar="N", help="At most N calls."),
        click.option(
            "--grant-max-total",
            metavar="NAME=AMOUNT",
            default=None,
            help="The running total of a numeric argument may reach AMOUNT (amount=500).",
        ),
        click.option(
            "--grant-same",
            multiple=True,
            metavar="NAME",
            help="A covered call's NAME must equal this call's (repeatable).",
        ),
        click.option(
            "--grant-constraint",
            multiple=True,
            metavar="NAME=JSON",
            help="A covered call's NAME meets this policy constraint: amount='{\"maximum\": 150}' (repeatable).",
        ),
        click.option("--extend-usd", metavar="AMOUNT", default=None, help="Add this many US dollars to the budget."),
        click.option("--extend-tokens", type=int, metavar="N", default=None, help="Add N tokens to the budget."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def grant_request(
    scope: str | None,
    duration: str | None,
    max_calls: int | None,
    max_total: str | None,
    same: tuple[str, ...],
    constraints: tuple[str, ...],
) -> GrantRequest | None:
    """The grant the `--grant-*` options ask for, or None when they ask for none."""
    if scope is None and duration is None:
        if max_calls is not None or max_total is not None or same or constraints:
            raise click.UsageError("a grant needs --grant-scope and --grant-for")
        return None
    if scope is None or duration is None:
        raise click.UsageError("a grant needs both --grant-scope and --grant-for")
    total = None
    if max_total is not None:
        name, sep, amount = max_total.partition("=")
        if not sep or not name.strip() or not amount.strip():
            raise click.BadParameter(
                f"{safe(max_total)!r}: write NAME=AMOUNT, like amount=500", param_hint="--grant-max-total"
            )
        total = {name.strip(): amount.strip()}
    return GrantRequest(
        scope=scope,
        duration=int(duration) if _WHOLE.fullmatch(duration.strip()) else duration,
        max_calls=max_calls,
        max_total=total,
        constraints=_constraints(constraints),
        same=tuple(n.strip() for n in same),
    )


def _constraints(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`NAME=JSON` pairs as constraints, checked as the API checks them."""
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        hint = "--grant-constraint"
        if not sep or not name.strip():
            raise click.BadParameter(
                f"{safe(pair)!r}: write NAME=JSON, like amount='{{\"maximum\": 150}}'", param_hint=hint
            )
        try:
            spec = _CONSTRAINT.validate_python(json.loads(raw) if raw.strip()[:1] in '{"' else raw.strip())
        except (ValueError, RecursionError, ValidationError) as exc:
            why = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
            raise click.BadParameter(f"{safe(name)}: {safe(why)[:200]}", param_hint=hint) from None
        out[name.strip()] = spec.spec() if isinstance(spec, ConstraintIn) else spec
    return out


def extension(usd: str | None, tokens: int | None) -> BudgetExtension | None:
    """The budget extension `--extend-usd` and `--extend-tokens` ask for, or None."""
    return None if usd is None and tokens is None else BudgetExtension(usd=usd, tokens=tokens)


def refused(exc: GrantRejected) -> click.UsageError:
    """A refused grant for the terminal: each problem on its own line."""
    problems = "\n  ".join(safe(p) for p in exc.problems)
    return click.UsageError(f"the grant was refused:\n  {problems}")


def given_with(db: Database, approval_id: str, agent: str) -> grants.Grant | None:
    """The grant (or extension) given with this approval, if any."""
    return next((g for g in grants.listing(db, agent=agent, limit=1000) if g.approval_id == approval_id), None)


def summary(g: grants.Grant | GrantOut) -> str:
    """One line saying what a grant lets through, safe to print."""
    if g.kind == "budget":
        added = [
            f"${g.extend_usd}" if g.extend_usd is not None else "",
            f"{g.extend_tokens} tokens" if g.extend_tokens else "",
        ]
        whose = f"session {visible(g.session or '')}" if g.scope == "session" else f"agent {visible(g.agent)}"
        return safe(f"extended the budget of {whose} by {' and '.join(a for a in added if a)} ({g.id})")
    covers = {
        "session": f"session {visible(g.session or '')}",
        "agent": f"agent {visible(g.agent)}",
        "requester": f"{visible(g.requester or '')} (any session of agent {visible(g.agent)})",
    }[g.scope]
    limits = []
    if g.max_calls is not None:
        limits.append(f"at most {g.max_calls} calls")
    if g.max_total is not None:
        limits.append(f"{visible(g.total_arg or '')} totalling at most {g.max_total}")
    if g.constraints:
        limits.append(f"where {shown_json(g.constraints)}")
    more = f", {', '.join(limits)}" if limits else ""
    return safe(f"granted {g.id}: {visible(g.tool or '')} calls of {covers} until {when(g.expires_at_us)} UTC{more}")


@grants_group.command("list")
@click.option("--agent", default=None, help="Only this agent's.")
@click.option("--session", default=None, help="Only this session's.")
@click.option("--live", is_flag=True, help="Only those that still let calls through.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (as the API sends a grant).")
@database_option
@friendly
def list_(agent: str | None, session: str | None, live: bool, as_json: bool, database: str) -> None:
    """Grants and budget extensions, newest first (recording the expiry of those whose time is up)."""
    db = open_db(database)
    try:
        grants.sweep(db)
        at = now_us()
        found = [grant_out(db, g, at) for g in grants.listing(db, agent=agent, session=session, live=live, limit=1000)]
    finally:
        db.close()
    if as_json:
        for g in found:
            click.echo(json.dumps(g.model_dump(mode="json"), ensure_ascii=True))
        return
    if not found:
        click.echo("no live grants" if live else "no grants")
        return
    click.echo(
        table(
            ["id", "status", "kind", "scope", "agent", "covers", "tool", "used", "expires", "granted by"],
            [
                [
                    g.id,
                    g.status,
                    g.kind,
                    g.scope,
                    visible(g.agent),
                    visible((g.session if g.scope == "session" else g.requester) or "-"),
                    visible(g.tool or "-"),
                    _used(g),
                    when(g.expires_at_us),
                    visible(g.granted_by),
                ]
                for g in found
            ],
        )
    )


def _used(g: GrantOut) -> str:
    if g.kind == "budget":
        return " + ".join(
            x
            for x in (f"${g.extend_usd}" if g.extend_usd else "", f"{g.extend_tokens} tok" if g.extend_tokens else "")
            if x
        )
    parts = [f"{g.calls_used}/{g.max_calls if g.max_calls is not None else '∞'} calls"]
    if g.max_total is not None:
        parts.append(f"{_plain(g.total_used)}/{_plain(g.max_total)} {visible(g.total_arg or '')}")
    return ", ".join(parts)


def _plain(amount: str) -> str:
    d = Decimal(amount)
    return format(d.normalize(), "f") if d == d.to_integral_value() else amount


@grants_group.command("show")
@click.argument("grant_id")
@click.option("--json", "as_json", is_flag=True, help="As the API sends it.")
@database_option
@friendly
def show(grant_id: str, as_json: bool, database: str) -> None:
    """Everything about GRANT_ID: what it covers, how much is used, how it ended."""
    db = open_db(database)
    try:
        g = grants.get(db, grant_id.strip())
        out = grant_out(db, g, now_us())
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps(out.model_dump(mode="json"), ensure_ascii=True, indent=2))
        return
    click.echo(summary(g))
    rows: list[tuple[str, object]] = [
        ("status", out.status),
        ("agent", visible(g.agent)),
        ("environment", visible(g.environment)),
        ("rules", ", ".join(visible(r) for r in g.rule_ids) or "-"),
        ("used", _used(out)),
        ("approval", g.approval_id or "-"),
        ("policy revision", g.policy_revision or "-"),
        ("granted by", visible(g.granted_by)),
        ("note", visible(g.note) if g.note else "-"),
        ("created", f"{when(g.created_at_us)} UTC"),
        ("expires", f"{when(g.expires_at_us)} UTC"),
    ]
    if g.revoked_at_us is not None:
        rows.append(("revoked", f"{when(g.revoked_at_us)} UTC by {visible(g.revoked_by or '-')}"))
        rows.append(("reason", visible(g.revoke_reason) if g.revoke_reason else "-"))
    width = max(len(k) for k, _ in rows)
    for name, value in rows:
        click.echo(f"{name.ljust(width)}  {safe(value)}")


@grants_group.command("revoke")
@click.argument("grant_id")
@click.option("--reason", default=None, help="Why (kept in the audit log).")
@click.option("--by", default=None, help="Who is revoking (default: CLEARANCE_USER, else the OS user).")
@database_option
@friendly
def revoke(grant_id: str, reason: str | None, by: str | None, database: str) -> None:
    """Revoke GRANT_ID: no call uses it after this (a budget extension stops counting)."""
    who = decider(by)
    if reason is not None and (problem := text_problem(reason)) is not None:
        raise click.BadParameter(f"the reason {problem}", param_hint="--reason")
    db = open_db(database)
    try:
        g = grants.revoke(db, grant_id.strip(), by=who, why=reason)
    except ValueError as exc:  # it had ended already
        click.echo(f"error: {safe(exc)}", err=True)
        raise SystemExit(1) from None
    finally:
        db.close()
    click.echo(f"revoked {g.id} by {safe(visible(who))} at {when(g.revoked_at_us)} UTC")
