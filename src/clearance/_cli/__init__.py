"""The `clearance` command."""

from __future__ import annotations

import click

from .._settings import DEFAULT_DATABASE
from ._approvals import approvals_group, approve, deny
from ._audit import audit_group
from ._common import friendly
from ._policy import policy_group
from ._usage import usage


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="clearance")
def main() -> None:
    """Clearance: policy, approvals and a tamper-evident audit log for AI agents' tool calls."""


@main.command("demo")
@click.option("--database", default=DEFAULT_DATABASE, show_default=True, help="Where the demo records (SQLite file).")
@friendly
def demo(database: str) -> None:
    """Run a scripted support agent under an example policy; one refund waits for you to approve it."""
    from .._demo import run

    raise SystemExit(run(database))


main.add_command(policy_group)
main.add_command(approvals_group)
main.add_command(approve)
main.add_command(deny)
main.add_command(audit_group)
main.add_command(usage)

__all__ = ["main"]
