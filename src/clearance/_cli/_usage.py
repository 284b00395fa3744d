"""`clearance usage`: LLM tokens and cost by model, session, agent or day."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import click

from ..store import EventFilter
from ..store import _events as events
from ._audit import _time
from ._common import database_option, friendly, open_db, table, when

_KEYS: dict[str, Callable[[dict[str, Any]], object]] = {
    "model": lambda b: b.get("model"),
    "session": lambda b: b.get("session"),
    "agent": lambda b: b.get("agent"),
    "day": lambda b: when(b.get("at_us"))[:10],
}


@click.command("usage")
@click.option("--by", "group_by", type=click.Choice(list(_KEYS)), default="model", show_default=True)
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
    f = EventFilter(
        agent=agent,
        session=session,
        kind="llm.call",
        since_us=_time(since, "--since"),
        until_us=_time(until, "--until"),
    )
    totals: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"calls": 0, "input": 0, "cached": 0, "output": 0, "reasoning": 0, "cost": Decimal(0), "unpriced": 0}
    )
    try:
        for e in events.iterate(db, f):
            b = e.body
            t = totals[str(_KEYS[group_by](b))]
            t["calls"] += 1
            t["input"] += b.get("input_tokens", 0)
            t["cached"] += b.get("cached_input_tokens", 0)
            t["output"] += b.get("output_tokens", 0)
            t["reasoning"] += b.get("reasoning_tokens", 0)
            if b.get("cost_usd") is None:
                t["unpriced"] += 1
            else:
                t["cost"] += Decimal(b["cost_usd"])
    finally:
        db.close()
    if not totals:
        click.echo("no LLM usage recorded")
        return
    rows = []
    for key, t in sorted(totals.items()):
        cost = f"${t['cost']:.6f}" if t["unpriced"] < t["calls"] else "unpriced"
        if 0 < t["unpriced"] < t["calls"]:
            cost += f" + {t['unpriced']} unpriced"
        rows.append([key, t["calls"], t["input"], t["cached"], t["output"], t["reasoning"], cost])
    click.echo(table([group_by, "calls", "input", "cached", "output", "reasoning", "cost (USD)"], rows))
    priced = sum((t["cost"] for t in totals.values()), Decimal(0))
    unpriced = sum(t["unpriced"] for t in totals.values())
    click.echo(f"\ntotal ${priced:.6f}" + (f" (+ {unpriced} unpriced calls, cost unknown)" if unpriced else ""))
