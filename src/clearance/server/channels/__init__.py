"""Approval channels: where people hear of pending approvals, behind one interface.

A channel announces a pending approval (a Slack post, a mail to its approvers), updates what it
sent when the approval is decided anywhere (dashboard, CLI, API, another channel), verifies a
decision that comes in through it (Slack's signed interactions; e-mail takes none) and maps an
outside identity (a Slack user id, an e-mail address) to a person. The server keeps every
configured channel in step with the store through one loop (`deliver`): each pending approval
without a message is announced once, however many replicas share the store, and each message
whose approval changed since it was drawn is updated once. A message that fails is retried on
its own backoff (and parked, tried only about hourly, after many failures in a row), so it never
holds up the others; a pass in which every message failed is the service down, which parks none.
What a channel sent is kept in `channel_messages`, who a person is in it in `channel_identities`.

The built-in channels use this interface as any other would, and are found the same way (`kinds`):
a new one is a subclass in its own module, its settings, and its tests (see docs/extending.md).
"""

from __future__ import annotations

import functools
import importlib
import logging
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, ClassVar

from ... import _decisions as decisions
from ..._clock import now_us
from ..._store import Approval, Database
from ..._store import _approvals as approvals
from ..._store import _channels as messages
from ..._store._channels import Message
from .._settings import ServerSettings

log = logging.getLogger("clearance.channels")


@dataclass(frozen=True)
class Delivery:
    """What a channel did with an approval.

    Attributes:
        ref: Its handle of the message, kept as JSON (Slack's channel and ts; a mail's
            Message-ID and recipients) and given back with every update.
        sent: Whether anything was sent or edited (False: nothing to say about this change).
    """

    ref: dict[str, Any]
    sent: bool = True


class ChannelError(Exception):
    """A channel's service refused something; the message says why, for an admin to read."""


class Undelivered(Exception):
    """A channel failed every message of a pass, more than one: it looks unreachable.

    Each failure is counted on its message, but not toward parking it, and it is retried shortly.
    """


class Channel(ABC):
    """One approval channel. Subclasses set `name` and implement the abstract methods.

    `announce` and `update` run on a worker thread and may block (with a timeout of their own);
    any exception they raise counts as a failed attempt, which is retried.
    """

    name: ClassVar[str]
    """Its key in `channel_messages` and `channel_identities`, and in the admin's view."""
    claim_seconds: ClassVar[int] = 60
    """How long a replica's claim to send a message (or update it) holds before another may try."""

    @classmethod
    @abstractmethod
    def from_settings(cls, settings: ServerSettings) -> Channel | None:
        """The channel as the server's settings configure it, or None when they do not."""

    @classmethod
    def identity(cls, external_id: str) -> str:
        """A person's identity in this channel, checked and in its one written form.

        Raises:
            ValueError: When it is not one (the API answers 422 with this message).
        """
        raise ValueError(f"{cls.name} has no identities of people")

    @classmethod
    def describe(cls, settings: ServerSettings) -> dict[str, str | bool | None]:
        """Its settings as an admin may see them: never a secret's value, only whether it is set."""
        return {}

    def shows(self, a: Approval) -> str:
        """The state of `a` its message shows; when this changes, `update` is called."""
        return f"{a.status}/{len(a.votes)}/{int(a.escalated_at_us is not None)}"

    @abstractmethod
    def announce(self, a: Approval, to: Sequence[str]) -> Delivery:
        """Tell of a pending approval; `to` are the identities here of the people who may decide it."""

    @abstractmethod
    def update(self, a: Approval, message: Message, to: Sequence[str]) -> Delivery:
        """Bring its message up to date with `a`, which changed since `message.drawn`."""

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Whether an inbound request carrying a decision really comes from this channel.

        By default none does: decisions are made in the dashboard, after signing in.
        """
        return False

    @abstractmethod
    def test(self, by: str) -> str:
        """Send a test message for an admin; what happened.

        Raises:
            Exception: Whatever the channel's client raises when it fails (shown to the admin).
        """


@functools.cache
def kinds() -> dict[str, type[Channel]]:
    """Every kind of channel by name: this package's modules' own, then other packages'.

    A channel is found, not listed: a `Channel` subclass with a `name` in a module of this
    package, or one another package names in the `clearance.channels` entry point group. A
    plugin that fails to load is skipped with a warning (the server and the other channels go
    on), and one named like a built-in channel does not replace it.
    """
    built_in: list[object] = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        built_in.extend(v for v in vars(module).values() if getattr(v, "__module__", None) == module.__name__)
    found = {kind.name: kind for kind in _channels(built_in)}
    for ep in entry_points(group="clearance.channels"):
        try:
            loaded = ep.load()
        except Exception as exc:  # a broken plugin: leave it out, never stop the server for it
            log.warning("channel plugin %s = %s not loaded: %s: %s", ep.name, ep.value, type(exc).__name__, exc)
            continue
        for kind in _channels([loaded]):
            if kind.name in found and found[kind.name].__module__.startswith(f"{__name__}."):
                log.warning("channel plugin %s = %s not used: %s is a built-in channel", ep.name, ep.value, kind.name)
                continue
            found[kind.name] = kind
    return dict(sorted(found.items()))


def _channels(classes: list[object]) -> list[type[Channel]]:
    """The `Channel` subclasses among `classes` that have a `name` of their own."""
    return [
        c for c in classes if isinstance(c, type) and issubclass(c, Channel) and isinstance(c.__dict__.get("name"), str)
    ]


def configured(settings: ServerSettings) -> list[Channel]:
    """The channels these settings configure."""
    return [channel for kind in kinds().values() if (channel := kind.from_settings(settings)) is not None]


def recipients(db: Database, channel: Channel, a: Approval) -> list[str]:
    """The identities in `channel` of the enabled people who may decide `a` now."""
    return [
        external_id
        for username, roles, external_id in messages.reachable(db, channel.name)
        if decisions.refusal(a, decisions.Decider(f"user:{username}", frozenset(roles))) is None
    ]


def deliver(db: Database, channel: Channel, *, attempted: Callable[[bool], None] | None = None) -> int:
    """Announce what has no message in `channel` yet and update what changed; how many were sent.

    Every approval due is tried, whatever happens to the others; one that fails is counted on its
    message and retried after its own backoff, so it is no reason to slow the channel. When every
    one failed, none is counted toward parking, and each is retried shortly (`messages.outage`).
    Each message sent (or updated) and each failure is told to `attempted` (True: sent).

    Raises:
        Undelivered: When every one tried failed, and there were several: the channel's service
            looks unreachable, and the caller backs off.
    """
    stale_us = channel.claim_seconds * 1_000_000
    sent, tried, failed = 0, 0, dict[str, int]()
    for a, message in messages.due(db, channel.name, now_us=now_us(), stale_us=stale_us):
        tried += 1
        try:
            done = _deliver_one(db, channel, a, message, stale_us)
        except Exception as exc:  # the channel's own failure: count it, and carry on with the rest
            if attempted is not None:
                attempted(False)
            why = f"{type(exc).__name__}: {exc}"
            log.warning("%s could not deliver %s: %s", channel.name, a.id, why)
            failed[a.id] = now_us()
            messages.failed(db, a.id, channel.name, why, now_us=failed[a.id])
            continue
        sent += done
        if done and attempted is not None:
            attempted(True)
    if len(failed) > 1 and len(failed) == tried:  # the service looks down: no message's own fault
        messages.outage(db, channel.name, failed, now_us=now_us())
        raise Undelivered(f"{channel.name}: {len(failed)} undelivered ({', '.join(list(failed)[:5])})")
    return sent


def _deliver_one(db: Database, channel: Channel, a: Approval, message: Message, stale_us: int) -> int:
    if not messages.claim(db, a.id, channel.name, now_us=now_us(), stale_us=stale_us):
        return 0  # another replica is sending it, or has just sent it
    # As they are now, whatever `due` saw: another replica may have announced it (then this is an
    # update of its message, never a second first message) or updated it since.
    a, message = approvals.get(db, a.id), messages.message(db, a.id, channel.name) or message
    state = channel.shows(a)
    if message.ref is None:
        done = channel.announce(a, recipients(db, channel, a))
    elif state == message.drawn:
        done = Delivery(message.ref, sent=False)  # a change this channel does not show
    else:
        done = channel.update(a, message, recipients(db, channel, a))
    messages.drawn(db, a.id, channel.name, state=state, shows=channel.shows, ref=done.ref, sent=done.sent)
    return int(done.sent)
