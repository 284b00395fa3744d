"""`clearance policy shadow|shadow-report|promote`: shadow policies on the store.

They work on any store the `--database` option names: the embedded SQLite file, or a server's
PostgreSQL (whose replicas see the change at once).
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, NoReturn

import click

from .._clock import now_us
from .._store import Database
from .._store import _policies as policies
from .._store import _shadow as shadows
from .._visible import shown_json, visible
from ..policy import load_policy
from ..policy._model import parse_duration
from ._common import database_option, decider, friendly, open_db, safe, table, when

_REVISION = re.compile(r"^rev_[0-9a-f]{12}$")
MAX_WINDOW_S = 366 * 86_400

_environment = click.option("--environment", default=None, help="For this environment.")
_agent = click.option("--agent", default=None, help="For this agent (wins over its environment's).")
_by = click.option("--by", default=None, help="Who is changing it (default: CLEARANCE_USER, else the OS user).")


def _scope(environment: str | None, agent: str | None) -> str:
    try:
        return shadows.check_scope(policies.scope_of(agent, environment))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def _fail(exc: Exception) -> NoReturn:
    """One readable `error:` line per problem, and exit status 1."""
    lines = [str(exc)]
    if isinstance(exc, shadows.NotCompiled):
        lines = [f"revision {exc.revision} does not compile; nothing was activated:", *map(str, exc.problems)]
    for line in lines:
        click.echo(f"error: {safe(line)}", err=True)
    raise SystemExit(1)


def _revision(db: Database, rev: str, by: str) -> str:
    """A revision id as given, or the id of the policy file `rev` (stored first when it validates)."""
    if _REVISION.match(rev):
        return rev
    path = Path(rev)
    if not path.is_file():
        raise click.BadParameter(f"{rev!r} is neither a revision id (rev_…) nor a policy file", param_hint="REV")
    policy = load_policy(path)  # a file that does not validate fails here, located, and stores nothing
    return policies.create(db, policy.source_text, source=path.name, author=by).id


@click.command("shadow")
@click.argument("rev", required=False)
@_environment
@_agent
@click.option("--clear", is_flag=True, help="Stop deciding in shadow for the scope.")
@_by
@database_option
@friendly
def shadow(
    rev: str | None, environment: str | None, agent: str | None, clear: bool, by: str | None, database: str
) -> None:
    """Decide REV beside the enforced policy, in shadow: recorded with each call, never enforced.

    REV is a stored revision id or a policy file (stored first). The scope is an agent, an
    environment, or (neither) the default; only a revision that compiles is activated.
    `--clear` stops the scope's shadow.
    """
    scope = _scope(environment, agent)
    if clear == (rev is not None):
        raise click.UsageError("give a revision (or policy file) to shadow, or --clear, not both")
    who = decider(by)
    db = open_db(database)
    try:
        if clear:
            try:
                cleared = shadows.clear_shadow(db, scope=scope, by=who)
            except LookupError as exc:
                _fail(exc)
            click.echo(f"cleared the shadow of {safe(scope)} (it was {cleared})")
            return
        assert rev is not None
        try:
            revision = shadows.activate_shadow(db, _revision(db, rev, who), scope=scope, by=who)
        except (LookupError, ValueError) as exc:
            _fail(exc)
    finally:
        db.close()
    click.echo(
        f"shadowing {revision.id} ({safe(revision.source)}) for {safe(scope)}: decided and recorded, not enforced"
    )


@click.command("promote")
@_environment
@_agent
@_by
@database_option
@friendly
def promote(environment: str | None, agent: str | None, by: str | None, database: str) -> None:
    """Make the scope's shadow its enforced policy, in one step; the shadow slot empties."""
    scope = _scope(environment, agent)
    who = decider(by)
    db = open_db(database)
    try:
        try:
            revision = shadows.promote(db, scope=scope, by=who)
        except (LookupError, ValueError) as exc:
            _fail(exc)
    finally:
        db.close()
    click.echo(
        f"promoted {revision.id} ({safe(revision.source)}): now enforced for {safe(scope)}; no shadow left there"
    )


def _window(since: str) -> int:
    try:
        seconds = parse_duration(since)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    if seconds > MAX_WINDOW_S:
        raise click.BadParameter(f"a report looks back at most {MAX_WINDOW_S // 86_400}d", param_hint="--since")
    return seconds


def _ids(examples: list[shadows.Example]) -> str:
    return " ".join(e.call_id or "?" for e in examples) or "-"


@click.command("shadow-report")
@click.option("--since", default="24h", show_default=True, help="How far back: 30m, 24h, 7d.")
@_environment
@_agent
@click.option("--examples", default=3, show_default=True, type=click.IntRange(0, 20), help="Example calls per row.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
@database_option
@friendly
def shadow_report(
    since: str, environment: str | None, agent: str | None, examples: int, as_json: bool, database: str
) -> None:
    """Where the shadow and the enforced policy differed: by rule, enforced -> shadow, with example calls.

    And the `mode: monitor` rules' hits ("would block", "would require approval").
    """
    until = now_us()
    start = until - _window(since) * 1_000_000
    db = open_db(database)
    try:
        found = shadows.report(
            db, since_us=start, until_us=until, environment=environment, agent=agent, examples=examples
        )
        active = shadows.shadows(db)
    finally:
        db.close()
    if as_json:
        out: dict[str, Any] = dataclasses.asdict(found)
        out["active"] = [dataclasses.asdict(a) for a in active]
        click.echo(json.dumps(out, ensure_ascii=True, sort_keys=True))
        return
    for a in active:
        click.echo(f"shadow {_text(a.revision_id)} active for {_text(a.scope)} since {when(a.activated_at_us)} UTC")
    click.echo(
        f"{found.calls} calls decided in shadow from {when(start)} to {when(until)} UTC;"
        f" {found.differing} decided otherwise than enforced"
        + (f"; {found.unreadable} records could not be read" if found.unreadable else "")
    )
    if found.differences:
        click.echo()
        rows = [
            [visible(d.rule_id or "(default)"), f"{d.enforced} -> {d.shadow}", d.count, _ids(d.examples)]
            for d in found.differences
        ]
        click.echo(table(["shadow rule", "enforced -> shadow", "calls", "example calls"], rows, max_width=80))
    if found.monitored:
        click.echo()
        rows = [[m.policy, visible(m.rule_id), f"would {m.would}", m.count, _ids(m.examples)] for m in found.monitored]
        click.echo(table(["policy", "monitor rule", "decided", "calls", "example calls"], rows, max_width=80))
    said = [
        (e, f"{d.enforced} -> {d.shadow}: enforced: {_text(e.enforced_reason)} | shadow: {_text(e.shadow_reason)}")
        for d in found.differences
        for e in d.examples
    ]
    said += [
        (e, f"{m.policy} monitor would {m.would}: {_text(e.shadow_reason)}")
        for m in found.monitored
        for e in m.examples
    ]
    if said:
        click.echo("\nexamples:")
    for e, what in said:
        who = " ".join(_text(v) for v in (e.call_id, when(e.at_us), e.agent, e.session))
        click.echo(f"  {who} {_text(e.tool)}({safe(shown_json(e.args))}) {what}")


def _text(value: str | None) -> str:
    """Text from a record, safe to print: hidden characters as tokens, controls escaped."""
    return safe(visible(value)) if value is not None else "-"
