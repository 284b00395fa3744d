"""`clearance approvals list|approve|deny|resolve` (and `clearance approve|deny` for short)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from .. import _decisions
from .._clock import now_us
from .._grant_views import offers
from .._granting import BudgetExtension, GrantRequest
from .._store import Approval, Database
from .._store import _approval_waiters as waiters
from .._store import _approvals as approvals
from .._store import _claims as claims
from .._store import _outbox as outbox
from .._visible import hazards, shown_json, visible, warning
from .._webhooks import deliver_due
from .._wire import ApprovalStatus, DeliveryStatus
from ..errors import ApprovalEditRejected, GrantRejected
from ._common import database_option, decider, friendly, open_db, safe, table, when
from ._grants import extension, given_with, grant_options, grant_request, refused, summary


@click.group("approvals")
def approvals_group() -> None:
    """List and decide calls waiting for a human."""


def _expires_in(a: Approval) -> str:
    left = a.expires_at_us / 1e6 - time.time()
    if a.status is not ApprovalStatus.PENDING:
        return "-"
    if left <= 0:
        return ApprovalStatus.EXPIRED
    minutes, seconds = divmod(int(left), 60)
    return f"{minutes}m{seconds:02d}s"


@approvals_group.command("list")
@click.option("--all", "show_all", is_flag=True, help="Every approval, not just pending ones.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@database_option
@friendly
def list_(show_all: bool, as_json: bool, database: str) -> None:
    """Pending approvals, nearest expiry first (expiring overdue ones first).

    Approved calls whose claimant died running them are listed too (STATUS `outcome unknown`):
    they wait for `clearance approvals resolve`.
    """
    db = open_db(database)
    try:
        _decisions.sweep(db)
        rows = approvals.listing(db, status=None if show_all else ApprovalStatus.PENDING)
        if not show_all:
            rows += claims.dead_claims(db, now_us())
        offered = {a.id: offers(db, a) for a in rows} if as_json else {}
    finally:
        db.close()
    if as_json:
        for a in rows:
            limits, budget = offered[a.id]
            click.echo(
                json.dumps(
                    {
                        "id": a.id,
                        "status": a.status,
                        "tool": a.tool,
                        "agent": a.agent,
                        "session": a.session,
                        "args": a.shown_args,
                        "rule_ids": list(a.rule_ids),
                        "reason": a.reason,
                        "created_at_us": a.created_at_us,
                        "expires_at_us": a.expires_at_us,
                        "decided_by": a.decided_by,
                        "note": a.note,
                        "grant_limits": limits.model_dump(mode="json") if limits is not None else None,
                        "budget": budget,
                        "waiter_seen_at_us": a.waiter_seen_at_us,
                        "waiter_gone": waiters.gone(a, now_us()),
                        "resumable": a.resumable,
                        "claimed_by": a.claimed_by,
                        "claim_seen_at_us": a.claim_seen_at_us,
                        "claim_dead": claims.dead(a, now_us()),
                    },
                    ensure_ascii=True,
                )
            )
        return
    if not rows:
        click.echo("no pending approvals" if not show_all else "no approvals")
        return
    click.echo(
        table(
            ["id", "status", "tool", "agent", "arguments", "reason", "expires in", "decided by", "waiter"],
            [
                [
                    a.id,
                    "outcome unknown" if claims.dead(a, now_us()) else a.status,
                    visible(a.tool),
                    visible(a.agent),
                    shown_json(a.shown_args),
                    visible(a.reason),
                    _expires_in(a),
                    a.decided_by,
                    _waiter(a),
                ]
                for a in rows
            ],
        )
    )
    for a in rows:  # on stderr, so the table stays one row per approval for scripts
        _warn(a.id, a.shown_args)
        _gone(a)


def _waiter(a: Approval) -> str:
    """The WAITER column: `gone` when the process waiting for it stopped, else `-`."""
    return "gone" if waiters.gone(a, now_us()) else "-"


def _gone(a: Approval) -> None:
    """Say, on stderr, that nobody waits for an approval any more (or runs it), and what can still be done."""
    if waiters.gone(a, now_us()):
        click.echo(f"warning: {a.id}: {waiters.why(a)}", err=True)
    if claims.dead(a, now_us()):
        click.echo(f"warning: {a.id}: {safe(claims.why(a))}", err=True)


def _warn(approval_id: str, args: dict[str, Any]) -> None:
    """Say, on stderr, which arguments hold hidden or direction-changing characters."""
    said = warning(hazards(args))
    if said:
        click.echo(f"warning: {approval_id}: {safe(said)}", err=True)


def _edits(pairs: tuple[str, ...]) -> dict[str, Any] | None:
    """`--set name=value` pairs; a value is JSON when it parses (150, true, "x", [1]), else text."""
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.strip():
            raise click.BadParameter(f"{pair!r}: write NAME=VALUE, e.g. amount=150", param_hint="--set")
        try:
            out[name.strip()] = json.loads(raw)
        except ValueError:
            out[name.strip()] = raw
    return out


def _decide(
    approval_id: str,
    approve: bool,
    note: str | None,
    by: str | None,
    database: str,
    edits: tuple[str, ...] = (),
    grant: GrantRequest | None = None,
    extend: BudgetExtension | None = None,
) -> None:
    who = decider(by)
    args = _edits(edits)
    db = open_db(database)
    given = None
    try:
        try:
            # The embedded store's own CLI: whoever can write the file decides (see the README).
            decided = _decisions.decide(
                db,
                approval_id.strip(),
                approve=approve,
                by=_decisions.Decider(who, trusted=True),
                note=note,
                args=args,
                grant=grant,
                extend=extend,
            )
        except ApprovalEditRejected as exc:
            problems = "\n  ".join(safe(p) for p in exc.problems)
            raise click.UsageError(f"the edit was refused:\n  {problems}") from None
        except GrantRejected as exc:
            raise refused(exc) from None
        if grant is not None or extend is not None:
            given = given_with(db, decided.id, decided.agent)
        _deliver_now(db, decided.id)
    finally:
        db.close()
    verb: str = ApprovalStatus.APPROVED if approve else ApprovalStatus.DENIED
    if decided.status is ApprovalStatus.PENDING:
        verb = f"voted to approve ({len(decided.votes)} of {decided.quorum})"
    shown = decided.edited_shown if decided.edited_shown is not None else decided.shown_args
    edited = " (edited)" if decided.edited_shown is not None else ""
    click.echo(
        f"{verb} {decided.id}: {safe(visible(decided.tool))}({safe(shown_json(shown))}){edited} by {safe(who)}"
        f" at {when(decided.decided_at_us or now_us())} UTC"
    )
    _warn(decided.id, shown)
    _gone(decided)
    if given is not None:
        click.echo(summary(given))


_note = click.option("--note", default=None, help="A note returned to the agent and kept in the audit log.")
_by = click.option("--by", default=None, help="Who is deciding (default: CLEARANCE_USER, else the OS user).")


@approvals_group.command("approve")
@click.argument("approval_id")
@_note
@_by
@click.option(
    "--set",
    "edits",
    multiple=True,
    metavar="NAME=VALUE",
    help="Run the call with this argument changed (repeatable; VALUE is JSON, or text).",
)
@grant_options
@database_option
@friendly
def approve(
    approval_id: str,
    note: str | None,
    by: str | None,
    edits: tuple[str, ...],
    grant_scope: str | None,
    grant_for: str | None,
    grant_max_calls: int | None,
    grant_max_total: str | None,
    grant_same: tuple[str, ...],
    grant_constraint: tuple[str, ...],
    extend_usd: str | None,
    extend_tokens: int | None,
    database: str,
) -> None:
    """Approve APPROVAL_ID: the waiting call runs with the arguments shown, or as edited with --set.

    With --grant-scope and --grant-for, similar calls are let through without asking, within
    what the rule permits (its approval.grants); with --extend-usd or --extend-tokens, the
    exhausted budget that asked grows.
    """
    grant = grant_request(grant_scope, grant_for, grant_max_calls, grant_max_total, grant_same, grant_constraint)
    _decide(approval_id, True, note, by, database, edits, grant, extension(extend_usd, extend_tokens))


@approvals_group.command("deny")
@click.argument("approval_id")
@_note
@_by
@database_option
@friendly
def deny(approval_id: str, note: str | None, by: str | None, database: str) -> None:
    """Deny APPROVAL_ID: the call does not run and the agent gets your note."""
    _decide(approval_id, False, note, by, database)


@approvals_group.command("resolve")
@click.argument("approval_id")
@click.option("--ran", "ran", flag_value=True, default=None, help="The tool did run: close it as executed.")
@click.option(
    "--did-not-run", "ran", flag_value=False, help="The tool did not run: resume or a worker may run it again."
)
@click.option("--note", default=None, help="What you found (kept in the audit log).")
@_by
@database_option
@friendly
def resolve(approval_id: str, ran: bool | None, note: str | None, by: str | None, database: str) -> None:
    """Say whether the call of APPROVAL_ID ran, when the process running it died (STATUS `outcome unknown`).

    Nothing runs such a call again by itself (it may have run): --did-not-run makes it runnable
    again by `resume` or `clearance worker`; --ran closes it as executed, its result unknown.
    """
    if ran is None:
        raise click.UsageError("say what happened: --ran or --did-not-run")
    who = decider(by)
    db = open_db(database)
    try:
        done = claims.resolve(db, approval_id, ran=ran, by=who, note=note, now_us=now_us())
    finally:
        db.close()
    if ran:
        click.echo(f"closed {done.id}: {safe(visible(done.tool))} ran, its result unknown (by {safe(who)})")
    else:
        click.echo(f"released {done.id}: {safe(visible(done.tool))} did not run; it may be resumed (by {safe(who)})")


def _deliver_now(db: Database, approval_id: str) -> None:
    """Send a webhook-mode approval's decision at once (retries are the worker's or server's)."""
    pending = tuple(m.id for m, _ in outbox.for_approval(db, approval_id) if m.status == DeliveryStatus.PENDING)
    if not pending:
        return
    secret = os.environ.get("CLEARANCE_WEBHOOK_SECRET")
    sent = deliver_due(db, secret, only=pending)
    if sent:
        click.echo(f"webhook sent ({sent})")
    else:
        click.echo("webhook not delivered yet: `clearance worker` (or the server) retries it", err=True)
