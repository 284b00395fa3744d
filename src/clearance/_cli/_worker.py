"""`clearance worker`: finish async-mode calls and resume approved ones, in a process of its own."""

from __future__ import annotations

import importlib
import sys
import time

import click

from ._common import friendly, safe


@click.command("worker")
@click.option(
    "--import",
    "modules",
    multiple=True,
    required=True,
    metavar="MODULE",
    help="A module that guards the tools (and registers their callbacks); repeatable.",
)
@click.option("--once", is_flag=True, help="Finish what is due now and exit.")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(0.05, 60),
    help="Seconds between looks for decided calls.",
)
@friendly
def worker(modules: tuple[str, ...], once: bool, interval: float) -> None:
    """Finish decided async-mode calls of the tools the modules guard, once each.

    Approved calls run and their results go to the tools' on_approval; denials go to on_denial —
    also after the process that asked has died.

    Configured like the agent (CLEARANCE_POLICY and CLEARANCE_DATABASE_URL, or CLEARANCE_SERVER_URL
    and CLEARANCE_API_KEY); the current directory is importable.
    """
    import clearance
    from clearance._guard import _runtime

    sys.path.insert(0, ".")
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise click.UsageError(f"cannot import {name!r}: {exc}") from None
    _runtime.current()  # configure now: a bad configuration fails here, not in the loop
    tools = ", ".join(sorted(_runtime._tools)) or "none"
    click.echo(f"clearance worker: tools {safe(tools)}", err=True)
    try:
        while True:
            done = clearance.run_due()
            if done:
                click.echo(f"finished {done} call(s)", err=True)
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        clearance.shutdown()
