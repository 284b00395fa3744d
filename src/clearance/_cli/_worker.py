"""`clearance worker`: finish async-mode calls and resume approved ones, in a process of its own."""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Callable

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
    also after the process that asked has died. On the embedded store it also delivers
    webhook-mode decisions (signed with CLEARANCE_WEBHOOK_SECRET) and their retries.

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
    backend = _runtime.current()  # configure now: a bad configuration fails here, not in the loop
    deliver = _webhook_deliverer(backend)
    tools = ", ".join(sorted(_runtime._tools)) or "none"
    click.echo(f"clearance worker: tools {safe(tools)}", err=True)
    try:
        while True:
            done = clearance.run_due()
            deliver()
            if done:
                click.echo(f"finished {done} call(s)", err=True)
            if once:
                return
            time.sleep(interval)
    except KeyboardInterrupt:
        return
    finally:
        clearance.shutdown()


def _webhook_deliverer(backend: object) -> Callable[[], int]:
    """Deliver the embedded store's due webhooks (a server delivers its own)."""
    from .._guard._governor import Governor
    from .._webhooks import deliver_due

    if not isinstance(backend, Governor):
        return lambda: 0
    secret = backend.settings.webhook_secret
    return lambda: deliver_due(backend.db, secret.get_secret_value() if secret is not None else None)
