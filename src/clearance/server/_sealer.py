"""The server's signed checkpoints: the chain head signed every N records or T seconds.

A pass reads how many records came since the newest checkpoint (a read: a quiet server writes
nothing) and signs when `checkpoint_every` records have, or `checkpoint_interval` seconds have
passed since the newest checkpoint and anything was recorded. Replicas race harmlessly: the
signing transaction checks again under the chain's write lock, so one of them signs.

The signer remembers the newest checkpoint of its key it has signed or seen (its own, or a
replica's) and signs only while the chain still holds it. Someone who can write the database
could otherwise delete the newest checkpoints, rewrite the records after an older one and
rehash, and have this server sign the rewrite: it refuses instead, logs an error and counts it,
until a person looks (`clearance audit verify`, the sinks' copies of the checkpoints). The
memory outlives the process: it is kept beside the key file (`_seal_memory`), read again
before each signature (workers and replicas sharing the file sign only what none of them would
refuse), and a memory file that cannot be read or does not verify is refused the same way,
never silently replaced by what the store holds. A replica's newer checkpoint is taken from the
store only while the chain still holds the one known (`_seal_memory.newest`). A receipt that
needs a checkpoint signs it the same way (`sign_now`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import State

from .. import _seal_memory as memory
from .._clock import now_us, wait_async
from .._store import _seals as seals
from ..errors import ChainBroken, ConfigurationError

log = logging.getLogger("clearance.server")
MAX_SLEEP = 2.0  # seconds between counts of the records since the last checkpoint


class Refused(Exception):
    """The signer will not sign: the chain lost the newest checkpoint it knows, or its memory will not do."""


def seal_due(state: State) -> int:
    """Sign a checkpoint when one is due; when to look again (µs)."""
    settings, key = state.settings, state.signing_key
    interval = int(settings.checkpoint_interval * 1e6)
    now = now_us()
    since, last = seals.pending(state.db)
    with contextlib.suppress(Refused):  # signing refuses too, and says why
        seen = memory.newest(state.db, key, known(state), last)  # the first look, or a replica signed since
        if seen is not None and seen is not state.sealed:
            _remember(state, seen)
    started = last.at_us if last is not None else state.sealer_started_us
    if since > 0 and (since >= settings.checkpoint_every or now - started >= interval):
        try:
            made = sign_now(state, now)
        except Refused:
            return now + int(MAX_SLEEP * 1e6)
        if made is not None:
            started = made.at_us
    return min(started + interval, now + int(MAX_SLEEP * 1e6))


def sign_now(state: State, now: int) -> seals.Checkpoint | None:
    """Sign the chain head with the server's key, unless the chain lost the newest checkpoint it knows.

    Every checkpoint the server signs comes here: the signer's, and a receipt's (`_receipts.build`).

    Raises:
        Refused: Not signed; logged (once for the same reason) and counted.
    """
    try:
        made = seals.sign(state.db, state.signing_key, now_us=now, known=known(state))
        refused = None
    except Refused as exc:
        refused = str(exc)
    except ChainBroken as exc:
        refused = f"{exc}; {memory.after_restore(state.signing_key_path)}"
    if refused is not None:
        if state.sealing_refused != refused:
            log.error("not signing a checkpoint: %s", refused)
        state.sealing_refused = refused
        state.metrics.sealing_refused()
        raise Refused(refused)
    state.sealing_refused = None
    if made is not None:
        _remember(state, made)
    return made


def known(state: State) -> seals.Checkpoint | None:
    """The newest checkpoint the chain must hold: this process's, or one another kept since (KEY.last).

    Workers and replicas sharing the key file each sign and keep their newest in the file: a
    chain that lost one's must not be signed by another, which would sign what the first
    refuses. So the file is read each time (a small file, replaced whole when written).

    Raises:
        Refused: The memory will not do (it was unreadable at the start, or is now).
    """
    if state.memory_unusable is not None:
        raise Refused(state.memory_unusable)
    try:
        kept = memory.load(state.signing_key_path, memory.public(state.signing_key), _store(state))
    except ConfigurationError as exc:
        raise Refused(f"{exc}; {_forget(state)}") from None
    if kept is not None and (state.sealed is None or kept.seq > state.sealed.seq):
        state.sealed = kept
    sealed: seals.Checkpoint | None = state.sealed
    return sealed


def _store(state: State) -> str:
    return memory.store_name(state.settings.database_url)


def _forget(state: State) -> str:
    return (
        f"once you know why, clearance audit checkpoint --forget --key {state.signing_key_path} removes it;"
        " then restart the server"
    )


def _remember(state: State, cp: seals.Checkpoint) -> None:
    if state.sealed is None or cp.seq > state.sealed.seq:  # the signer and a receipt may sign at once
        state.sealed = cp
    try:
        memory.remember(state.signing_key_path, cp, _store(state))
    except (OSError, ConfigurationError) as exc:  # still kept in memory: only a restart would forget it
        if not state.memory_unwritable:
            log.error("cannot keep the newest checkpoint (%s): a restarted server would trust the store's", exc)
        state.memory_unwritable = True


def recall(state: State) -> None:
    """Read the newest checkpoint of the key remembered beside its file, before anything signs.

    A file that will not do is not replaced by the store's newest: nothing is signed until a
    person has looked and removed it.
    """
    state.sealed, state.sealing_refused, state.memory_unusable, state.memory_unwritable = None, None, None, False
    try:
        state.sealed = memory.load(state.signing_key_path, memory.public(state.signing_key), _store(state))
    except ConfigurationError as exc:
        state.memory_unusable = f"{exc}; {_forget(state)}"
        log.error("not signing checkpoints: %s", state.memory_unusable)


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
