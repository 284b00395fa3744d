"""The `clearance` command."""

from __future__ import annotations

from pathlib import Path

import click

from ._approvals import approvals_group, approve, deny
from ._audit import audit_group
from ._common import friendly
from ._grants import grants_group
from ._mcp import mcp_proxy
from ._policy import policy_group
from ._server import db_group, keys_group, serve, users_group
from ._spool import spool
from ._usage import usage
from ._worker import worker

DEMO_DATABASE = ".clearance/demo.db"


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="clearance")
def main() -> None:
    """Clearance: policy, approvals and a tamper-evident audit log for AI agents' tool calls."""


@main.command("demo")
@click.option(
    "--database",
    default=None,
    help=f"Seed this store instead (appended to, never reset); default: a fresh {DEMO_DATABASE} each run.",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to serve the dashboard on.")
@click.option(
    "--port", default=8321, show_default=True, type=click.IntRange(1, 65535), help="Port to serve the dashboard on."
)
@click.option("--password", default=None, help="The `demo` user's password (default: a new random one, printed).")
@click.option("--agents/--no-agents", default=True, show_default=True, help="Start the live agents.")
@friendly
def demo(database: str | None, host: str, port: int, password: str | None, agents: bool) -> None:
    """Serve the dashboard on a seeded store, with live agents whose approvals wait for you."""
    from .._demo import run

    if database is None:
        database = DEMO_DATABASE
        Path(database).parent.mkdir(parents=True, exist_ok=True)
        # A fresh store each run: the history is the demo's, and the daily refund cap starts at 0.
        for suffix in ("", "-wal", "-shm"):
            Path(database + suffix).unlink(missing_ok=True)
    raise SystemExit(run(database, host=host, port=port, password=password, agents=agents))


main.add_command(policy_group)
main.add_command(approvals_group)
main.add_command(approve)
main.add_command(deny)
main.add_command(grants_group)
main.add_command(audit_group)
main.add_command(usage)
main.add_command(serve)
main.add_command(db_group)
main.add_command(keys_group)
main.add_command(users_group)
main.add_command(worker)
main.add_command(mcp_proxy)
main.add_command(spool)

__all__ = ["main"]
