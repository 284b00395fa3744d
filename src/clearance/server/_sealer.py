"""The server's signed checkpoints: the chain head signed every N records or T seconds.

A pass reads how many records came since the newest checkpoint (a read: a quiet server writes
nothing) and signs when `checkpoint_every` records have, or `checkpoint_interval` seconds have
passed since the newest checkpoint and anything was recorded. Replicas race harmlessly: the
signing transaction checks again under the chain's write lock, so one of them signs.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import State

from .._clock import now_us, wait_async
from .._store import _seals as seals

log = logging.getLogger("clearance.server")
MAX_SLEEP = 2.0  # seconds between counts of the records since the last checkpoint


def seal_due(state: State) -> int:
    """Sign a checkpoint when one is due; when to look again (µs)."""
    settings, key = state.settings, state.signing_key
    interval = int(settings.checkpoint_interval * 1e6)
    now = now_us()
    since, last = seals.pending(state.db)
    started = last.at_us if last is not None else state.sealer_started_us
    if since > 0 and (since >= settings.checkpoint_every or now - started >= interval):
        made = seals.sign(state.db, key, now_us=now)
        if made is not None:
            started = made.at_us
    return min(started + interval, now + int(MAX_SLEEP * 1e6))


async def seal_forever(state: State) -> None:
    """Sign checkpoints as they come due, until cancelled."""
    state.sealer_started_us = now_us()
    never = asyncio.Event()
    while True:
        started = now_us()
        until = started + int(MAX_SLEEP * 1e6)
        try:
            until = max(await run_in_threadpool(seal_due, state), started + 5_000)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store is down: try again shortly, never die
            log.warning("signing a checkpoint failed (%s); retrying", exc)
        await wait_async(never, until, "checkpoint signer")
