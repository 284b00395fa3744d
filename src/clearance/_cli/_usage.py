"""`clearance usage`: LLM tokens and cost by model, session, agent or day."""

from __future__ import annotations

from decimal import Decimal

import click

from .._store import EventFilter
from .._store import _queries as queries
from ._audit import _time
from ._common import database_option, friendly, open_db, table


@click.command("usage")
@click.option(
    "--by",
    "group_by",
    type=click.Choice(["model", "session", "agent", "day"]),
    default="model",
    show_default=True,
    help="One row per model, session, agent or day.",
)
@click.option("--agent", help="Only this agent.")
@click.option("--session", help="Only this session.")
@click.option("--since", help="From this time (ISO).")
@click.option("--until", help="Before this time (ISO).")
@database_option
@friendly
def usage(
    group_by: str, agent: str | None, session: str | None, since: str | None, until: str | None, database: str
) -> None:
    """Recorded LLM calls, tokens and cost, grouped. Unpriced calls are counted, never shown as $0."""
    db = open_db(database)
    f = EventFilter(agent=agent, session=session, since_us=_time(since, "--since"), until_us=_time(until, "--until"))
    try:
        found = queries.usage(db, f, group_by)  # type: ignore[arg-type]
    finally:
        db.close()
    if not found:
        click.echo("no LLM usage recorded")
        return
    rows = []
    for r in found:
        cost = f"${r.cost_usd:.6f}" if r.unpriced_calls < r.calls else "unpriced"
        if 0 < r.unpriced_calls < r.calls:
            cost += f" + {r.unpriced_calls} unpriced"
        rows.append([r.key, r.calls, r.input_tokens, r.cached_input_tokens, r.output_tokens, r.reasoning_tokens, cost])
    click.echo(table([group_by, "calls", "input", "cached", "output", "reasoning", "cost (USD)"], rows))
    priced = sum((r.cost_usd for r in found), Decimal(0))
    unpriced = sum(r.unpriced_calls for r in found)
    click.echo(f"\ntotal ${priced:.6f}" + (f" (+ {unpriced} unpriced calls, cost unknown)" if unpriced else ""))
