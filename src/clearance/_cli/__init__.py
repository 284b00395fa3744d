"""The `clearance` command."""

from __future__ import annotations

from pathlib import Path

import click

from ._approvals import approvals_group, approve, deny
from ._audit import audit_group
from ._common import friendly
from ._mcp import mcp_proxy
from ._policy import policy_group
from ._server import db_group, keys_group, serve, users_group
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
    help=f"Record here instead (appended to, never reset); default: a fresh {DEMO_DATABASE} each run.",
)
@friendly
def demo(database: str | None) -> None:
    """Run a scripted support agent under an example policy; one refund waits for you to approve it."""
    from .._demo import run

    if database is None:
        database = DEMO_DATABASE
        # The demo's daily refund cap would block its big refund on a second run: start afresh.
        for suffix in ("", "-wal", "-shm"):
            Path(database + suffix).unlink(missing_ok=True)
    raise SystemExit(run(database))


main.add_command(policy_group)
main.add_command(approvals_group)
main.add_command(approve)
main.add_command(deny)
main.add_command(audit_group)
main.add_command(usage)
main.add_command(serve)
main.add_command(db_group)
main.add_command(keys_group)
main.add_command(users_group)
main.add_command(worker)
main.add_command(mcp_proxy)

__all__ = ["main"]
