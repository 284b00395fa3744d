"""Expiry and escalation enforced by the server, whether or not an agent is waiting.

One task per server process sleeps until the next pending approval expires (at most a few
seconds, so approvals created by other processes are seen), or until an approval changes here,
then expires or escalates what is due. Replicas race harmlessly: each move happens once.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import State

from .. import _decisions as decisions
from .._clock import now_us
from ..store import _approvals as approvals
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
