"""Background work of the server: expiry and escalation, webhook delivery, approval channels.

Expiry and escalation are enforced whether or not an agent is waiting, and a grant's expiry is
recorded (`grant.expired`) whether or not a call or a person reads it. Each job runs on a
worker thread whenever approvals change in this process, when its next item comes due, and at
least every `MAX_SLEEP` seconds (so changes made by other processes are seen).

Across workers and replicas on one PostgreSQL: the sweep runs in one process at a time, the
leader elected by an advisory lock (`_leader`; another takes over within `MAX_SLEEP` seconds
of its death), and even two sweeps at once would move each approval once. Webhook delivery
and the channels run in every process: each delivery attempt is leased to one process
(`SELECT … FOR UPDATE SKIP LOCKED`), each channel's message is claimed by one poster.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Callable

from anyio import to_thread
from fastapi.concurrency import run_in_threadpool
from starlette.datastructures import State

from .. import _decisions as decisions
from .._clock import now_us, wait_async
from .._store import Database
from .._store import _approvals as approvals
from .._store import _grants as grants
from .._store import _outbox as outbox
from .._webhooks import deliver_due
from . import channels
from ._leader import Leadership
from ._longpoll import announce_threadsafe, topic_event
from .channels import Channel

log = logging.getLogger("clearance.server")
MAX_SLEEP = 2.0
CHANNEL_MOST = 30.0


async def _forever(state: State, what: str, work: Callable[[], int | None]) -> None:
    """Run `work` again and again, until cancelled; it returns when its next item is due (µs)."""
    while True:
        changed = topic_event(state, "approvals")
        started = now_us()
        until = started + int(MAX_SLEEP * 1e6)
        try:
            due = await run_in_threadpool(work)
            if due is not None:  # an absolute time: a (test's) clock moved meanwhile is not missed
                until = min(max(due, started + 5_000), until)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store or a peer is down: try again shortly, never die
            log.warning("%s failed (%s); retrying", what, exc)
        await wait_async(changed, until, what)


def next_grant_expiry(db: Database) -> int | None:
    """When the next live grant of calls expires (µs), or None; a read, so a quiet sweep writes nothing."""
    with db.read() as cur:
        cur.execute(
            db.sql(
                "SELECT MIN(expires_at_us) FROM grants WHERE kind = 'calls' AND ended_at_us IS NULL"
                " AND revoked_at_us IS NULL"
            )
        )
        row = cur.fetchone()
    return int(row[0]) if row and row[0] is not None else None


async def sweep_forever(state: State, leadership: Leadership | None = None) -> None:
    """Expire (or escalate) approvals, and record grants' expiry, as they come due.

    With `leadership` (PostgreSQL), only while this process leads the sweep; it is given up
    when the task is cancelled.
    """

    def sweep() -> int | None:
        if leadership is not None and not leadership.lead():
            return None  # another process sweeps; try to take over after MAX_SLEEP
        if decisions.sweep(state.db):
            announce_threadsafe(state, "approvals")
        granted = next_grant_expiry(state.db)
        if granted is not None and granted <= now_us() and grants.sweep(state.db):
            announce_threadsafe(state, "grants")
            granted = next_grant_expiry(state.db)
        due = [t for t in (approvals.next_expiry(state.db), granted) if t is not None]
        return min(due) if due else None

    state.loop = asyncio.get_running_loop()
    try:
        await _forever(state, "approval sweep", sweep)
    finally:
        if leadership is not None:
            leadership.close()


async def deliver_forever(state: State) -> None:
    """Deliver webhooks as they come due, retries included."""
    secret = state.settings.webhook_secret

    def deliver() -> int | None:
        deliver_due(
            state.db,
            secret.get_secret_value() if secret is not None else None,
            attempted=state.metrics.webhook_attempted,
            arden_urls=frozenset(url for _, url in state.settings.arden_webhooks),
        )
        return outbox.next_due(state.db)

    await _forever(state, "webhook delivery", deliver)


async def channel_forever(state: State, channel: Channel) -> None:
    """Keep one approval channel's messages in step with the approvals, until cancelled.

    A message that fails is retried on its own backoff (see `channels.deliver`); only a pass that
    fails as a whole (the store unreachable, or every message refused) backs the channel off, with
    full jitter up to `CHANNEL_MOST` seconds — and even then a change of the approvals is tried at
    once, so a new approval is never held up by old failures. The other channels, the sweep and
    the webhooks go on. Its worker thread is abandoned at shutdown, so a channel that hangs cannot
    hold the server up.
    """
    what = f"{channel.name} delivery"
    counted = functools.partial(state.metrics.channel_attempted, channel.name)
    failures = 0
    while True:
        changed = topic_event(state, "approvals")
        started = now_us()  # waits count from here: a (test's) clock moved during the pass is not missed
        try:
            await to_thread.run_sync(
                functools.partial(channels.deliver, state.db, channel, attempted=counted), abandon_on_cancel=True
            )
            failures, wait = 0, MAX_SLEEP
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store or the channel's service is down: back off, never die
            failures += 1
            wait = random.uniform(0, min(CHANNEL_MOST, 0.5 * 2**failures))
            log.warning("%s failed (attempt %d, retrying in %.1fs): %s", what, failures, wait, exc)
        await wait_async(changed, started + int(wait * 1e6), what)
