"""Background work of the server: expiry and escalation, and webhook delivery.

Expiry and escalation are enforced whether or not an agent is waiting: a task sleeps until the
next pending approval expires (at most a few seconds, so approvals created by other processes
are seen), or until an approval changes here, then expires or escalates what is due. Another
delivers the outbox's webhooks as they come due. Replicas race harmlessly: each move happens
once, and each delivery attempt is leased to one process.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import State

from .. import _decisions as decisions
from .._clock import now_us
from .._webhooks import deliver_due
from ..store import _approvals as approvals
from ..store import _outbox as outbox
from ._longpoll import _event, announce_to

log = logging.getLogger("clearance.server")
MAX_SLEEP = 2.0


async def sweep_forever(state: State) -> None:
    """Expire (or escalate) approvals as they come due, until cancelled."""
    while True:
        changed = _event(state, "approvals")
        delay = MAX_SLEEP
        try:
            moved = await run_in_threadpool(decisions.sweep, state.db)
            if moved:
                announce_to(state, "approvals")
            due = await run_in_threadpool(approvals.next_expiry, state.db)
            if due is not None:
                delay = min(max((due - now_us()) / 1e6, 0.005), MAX_SLEEP)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store is down: try again shortly, never die
            log.warning("approval sweep failed (%s); retrying", exc)
        try:
            await asyncio.wait_for(changed.wait(), delay)
        except TimeoutError:
            pass


async def deliver_forever(state: State) -> None:
    """Deliver webhooks as they come due (retries included), until cancelled."""
    secret = state.settings.webhook_secret
    while True:
        changed = _event(state, "approvals")
        delay = MAX_SLEEP
        try:
            await run_in_threadpool(
                lambda: deliver_due(state.db, secret.get_secret_value() if secret is not None else None)
            )
            due = await run_in_threadpool(outbox.next_due, state.db)
            if due is not None:
                delay = min(max((due - now_us()) / 1e6, 0.005), MAX_SLEEP)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("webhook delivery failed (%s); retrying", exc)
        try:
            await asyncio.wait_for(changed.wait(), delay)
        except TimeoutError:
            pass


async def slack_forever(state: State) -> None:
    """Keep Slack's messages in step with the approvals, until cancelled."""
    while True:
        changed = _event(state, "approvals")
        try:
            await run_in_threadpool(state.slack.sync, state.db)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("Slack sync failed (%s); retrying", exc)
        try:
            await asyncio.wait_for(changed.wait(), MAX_SLEEP)
        except TimeoutError:
            pass
