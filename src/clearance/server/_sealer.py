"""The server's signed checkpoints: the chain head signed every N records or T seconds.

A pass reads how many records came since the newest checkpoint (a read: a quiet server writes
nothing) and signs when `checkpoint_every` records have, or `checkpoint_interval` seconds have
passed since the newest checkpoint and anything was recorded. Replicas race harmlessly: the
signing transaction checks again under the chain's write lock, so one of them signs.

The signer remembers the newest checkpoint of its key it has seen (its own, or a replica's) and
signs only while the chain still holds it. Someone who can write the database could otherwise
delete the newest checkpoints, rewrite the records after an older one and rehash, and have this
server sign the rewrite: it refuses instead, logs an error and counts it, until a person looks
(`clearance audit verify`, the sinks' copies of the checkpoints). Memory only: a restarted
server trusts the newest checkpoint it finds.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import State

from .. import _signing as signing
from .._clock import now_us, wait_async
from .._signing import SigningKey
from .._store import _seals as seals
from ..errors import ChainBroken

log = logging.getLogger("clearance.server")
MAX_SLEEP = 2.0  # seconds between counts of the records since the last checkpoint


def seal_due(state: State) -> int:
    """Sign a checkpoint when one is due; when to look again (µs)."""
    settings, key = state.settings, state.signing_key
    interval = int(settings.checkpoint_interval * 1e6)
    now = now_us()
    since, last = seals.pending(state.db)
    known = state.sealed
    if last is not None and (known is None or last.seq > known.seq) and _ours(key, last):
        known = state.sealed = last  # the first look, or a replica signed since
    started = last.at_us if last is not None else state.sealer_started_us
    if since > 0 and (since >= settings.checkpoint_every or now - started >= interval):
        try:
            made = seals.sign(state.db, key, now_us=now, known=known)
        except ChainBroken as exc:
            if state.sealing_refused != str(exc):
                log.error("not signing a checkpoint: %s", exc)
            state.sealing_refused = str(exc)
            state.metrics.sealing_refused()
            return now + int(MAX_SLEEP * 1e6)
        state.sealing_refused = None
        if made is not None:
            started = made.at_us
            state.sealed = made
    return min(started + interval, now + int(MAX_SLEEP * 1e6))


def _ours(key: SigningKey, cp: seals.Checkpoint) -> bool:
    """Whether `cp` is signed by `key` (a row in the table is not proof of that)."""
    return cp.key_id == key.id and signing.verify(key.private.public_key(), cp.payload(), cp.signature)


async def seal_forever(state: State) -> None:
    """Sign checkpoints as they come due, until cancelled."""
    state.sealer_started_us = now_us()
    state.sealed, state.sealing_refused = None, None
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
