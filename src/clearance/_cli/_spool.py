"""`clearance spool`: what a remote-mode agent has not shipped yet, and what the server refused."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ._common import friendly, safe, table


@click.command("spool")
@click.option(
    "--spool",
    "path",
    default=lambda: os.environ.get("CLEARANCE_SPOOL_PATH", ".clearance/spool.db"),
    show_default="CLEARANCE_SPOOL_PATH or .clearance/spool.db",
    help="The agent's spool file.",
)
@friendly
def spool(path: str) -> None:
    """Records waiting to ship, and those the server refused (kept aside, with why)."""
    from .._remote._spool import Spool

    if not Path(path).exists():
        raise click.ClickException(f"no spool at {path}")
    opened = Spool(Path(path))
    try:
        waiting, refused = opened.size(), opened.rejected()
    finally:
        opened.close()
    click.echo(f"{waiting} record{'s' if waiting != 1 else ''} waiting to ship")
    if not refused:
        click.echo("no record was refused by the server")
        return
    click.echo(f"{len(refused)} record{'s' if len(refused) != 1 else ''} refused by the server, kept aside:")
    click.echo(table(["event", "why"], [(safe(i), safe(why)) for i, why, _ in refused], max_width=100))
    raise SystemExit(1)
