"""Approval channels on the store: each channel's message of each approval, and people's identities.

A channel keeps its messages in step with the approvals rather than sending one-offs: every
pending approval without a message is due to be announced, and every message whose approval
changed since it was drawn is due to be updated (each change of an approval empties `shown`).
One poster announces each approval and one updates each message, however many replicas share
the store: it claims the message first, and a claim whose poster died lapses.

A message that fails is retried on its own, after a backoff that grows with each failure in a
row (`backoff`), and is parked — tried only about hourly, counted in the tally — after
`PARK_AFTER` failures in a row: one message a channel's service keeps refusing cannot slow the
others. A pass in which every message failed is the service down, not the messages (`outage`):
those failures are counted but not toward parking, and the messages are tried again shortly. A
change of the approval (`_approvals._redraw`) makes its message due at once, parked or not.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .._text import text_problem
from .._wire import ApprovalStatus
from . import _approvals as approvals
from ._approvals import Approval
from ._db import Database

_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,39}$")
PARK_AFTER = 20
"""Failures in a row after which a message is parked: tried only every `PARKED_SECONDS` or so."""
MOST_SECONDS = 600.0
"""The longest wait before a failed message is tried again."""
PARKED_SECONDS = 3600.0
"""The longest wait before a parked message is tried again (each wait drawn from its upper half)."""
OUTAGE_SECONDS = 30.0
"""The longest wait before a message is tried again after a pass in which every message failed."""
_COLUMNS = ", ".join(f"a.{f}" for f in approvals._FIELDS)
CASELESS = frozenset({"email"})
"""Channels whose identities are the same whatever their case (kept as given, compared lowered)."""
_ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)


@dataclass(frozen=True)
class Message:
    """A channel's message of one approval.

    Attributes:
        approval_id: The approval it shows.
        channel: The channel's name.
        ref: The channel's own handle of it (JSON: Slack's channel and ts, a mail's Message-ID);
            None until it was sent.
        shown: The approval state it shows; None when the approval changed since (to redraw).
        drawn: The state it was last drawn with (kept when `shown` is emptied).
    """

    approval_id: str
    channel: str
    ref: dict[str, Any] | None
    shown: str | None
    drawn: str | None


@dataclass(frozen=True)
class Tally:
    """How a channel's deliveries went, over every replica.

    Attributes:
        messages: Approvals it sent a message for.
        sent: Messages sent, updates included.
        failures: Attempts that failed.
        last_error: The latest failure's error, if any.
        parked: Messages tried only about hourly, after `PARK_AFTER` failures in a row.
    """

    messages: int
    sent: int
    failures: int
    last_error: str | None
    parked: int = 0


def checked_name(channel: str) -> str:
    """A channel's name, checked (lower-case letters, digits, `_`, `-`).

    Raises:
        ValueError: When it is not one.
    """
    if not _NAME.fullmatch(channel):
        raise ValueError(f"{ascii(channel)} is not a channel name (like slack or email)")
    return channel


def backoff(failing: int) -> float:
    """Seconds to wait before trying a message again after `failing` failures in a row.

    2^n seconds up to `MOST_SECONDS`, each drawn at random from its upper half (so messages that
    failed together are not all tried together again, and none is retried at once).
    """
    bound = min(MOST_SECONDS, 2.0 ** min(failing, 30))
    return random.uniform(bound / 2, bound)


def due(db: Database, channel: str, *, now_us: int, stale_us: int, limit: int = 50) -> list[tuple[Approval, Message]]:
    """Approvals whose message in `channel` is missing (pending ones, unclaimed) or out of date.

    A message that failed waits for its backoff (a parked one's is long). Those that never
    failed come first, then the failed ones, longest since their last failure first: messages
    that keep failing go to the back, and cannot crowd the others out of `limit`.
    """
    with db.read() as cur:
        cur.execute(
            db.sql(
                f"SELECT {_COLUMNS}, m.ref, m.shown, m.drawn FROM approvals a LEFT JOIN channel_messages m"
                " ON m.approval_id = a.id AND m.channel = :ch"
                " WHERE ((m.ref IS NULL AND a.status = :pending) OR (m.ref IS NOT NULL AND m.shown IS NULL))"
                " AND (m.claimed_at_us IS NULL OR m.claimed_at_us < :stale)"
                " AND (m.retry_at_us IS NULL OR m.retry_at_us <= :now)"
                " ORDER BY COALESCE(m.failed_at_us, 0), a.created_at_us LIMIT :n"
            ),
            {"ch": channel, "stale": now_us - stale_us, "n": limit, "pending": ApprovalStatus.PENDING}
            | {"now": now_us},
        )
        rows = cur.fetchall()
    n = len(approvals._FIELDS)
    return [
        (
            approvals._from_row(row[:n]),
            Message(row[0], channel, json.loads(row[n]) if row[n] is not None else None, row[n + 1], row[n + 2]),
        )
        for row in rows
    ]


def claim(db: Database, approval_id: str, channel: str, *, now_us: int, stale_us: int) -> bool:
    """Claim sending an approval's message in `channel`: one poster wins, however many replicas.

    Its first message or an update of it (while out of date); `drawn` and `failed` let it go.
    """
    with db.write() as cur:
        cur.execute(
            db.sql(
                "INSERT INTO channel_messages (approval_id, channel, sent, failures) VALUES (:id, :ch, 0, 0)"
                " ON CONFLICT (approval_id, channel) DO NOTHING"
            ),
            {"id": approval_id, "ch": channel},
        )
        cur.execute(
            db.sql(
                "UPDATE channel_messages SET claimed_at_us = :now WHERE approval_id = :id AND channel = :ch"
                " AND shown IS NULL AND (claimed_at_us IS NULL OR claimed_at_us < :stale)"
            ),
            {"now": now_us, "id": approval_id, "ch": channel, "stale": now_us - stale_us},
        )
        return bool(cur.rowcount == 1)


def drawn(
    db: Database,
    approval_id: str,
    channel: str,
    *,
    state: str,
    shows: Callable[[Approval], str],
    ref: dict[str, Any] | None = None,
    sent: bool = True,
) -> None:
    """Remember that the message shows `state` (and its `ref`, when first sent), and let its claim go.

    Unless the approval changed meanwhile (`shows` of it now differs): then it stays out of date,
    to be redrawn.
    """
    with db.write() as cur:
        cur.execute(
            db.sql(
                "UPDATE channel_messages SET ref = COALESCE(:ref, ref), drawn = :state, sent = sent + :sent,"
                " claimed_at_us = NULL, failing = 0, retry_at_us = NULL WHERE approval_id = :id AND channel = :ch"
            ),
            {"ref": json.dumps(ref) if ref is not None else None, "state": state, "sent": int(sent)}
            | {"id": approval_id, "ch": channel},
        )
        current = approvals._get(db, cur, approval_id)
        if current is not None and shows(current) == state:
            cur.execute(
                db.sql("UPDATE channel_messages SET shown = :s WHERE approval_id = :id AND channel = :ch"),
                {"s": state, "id": approval_id, "ch": channel},
            )


def failed(db: Database, approval_id: str, channel: str, error: str, *, now_us: int) -> None:
    """Count a failed attempt and let the claim go.

    The message is tried again after its backoff; after `PARK_AFTER` failures in a row it is
    parked, and tried again only after up to `PARKED_SECONDS`.
    """
    with db.write() as cur:
        cur.execute(
            db.sql("SELECT failing FROM channel_messages WHERE approval_id = :id AND channel = :ch"),
            {"id": approval_id, "ch": channel},
        )
        row = cur.fetchone()
        failing = (int(row[0]) if row is not None else 0) + 1
        wait = random.uniform(PARKED_SECONDS / 2, PARKED_SECONDS) if failing >= PARK_AFTER else backoff(failing)
        cur.execute(
            db.sql(
                "UPDATE channel_messages SET failures = failures + 1, failing = :n, last_error = :e,"
                " failed_at_us = :now, retry_at_us = :retry, claimed_at_us = NULL"
                " WHERE approval_id = :id AND channel = :ch"
            ),
            {"n": failing, "e": error[:1000], "now": now_us, "retry": now_us + int(wait * 1e6)}
            | {"id": approval_id, "ch": channel},
        )


def outage(db: Database, channel: str, failures: Mapping[str, int], *, now_us: int) -> None:
    """Forgive failures of a pass in which every message failed: the service was down, not they.

    `failures` are the approval ids and when each failed (`failed`'s `now_us`). Each stays
    counted in the tally, but not toward parking, and its message is tried again within
    `OUTAGE_SECONDS` (not after its own backoff): however long the service is down, nothing is
    parked for it, and its messages go soon after it is back. A message redrawn, failed or
    claimed again since is left as it is.
    """
    with db.write() as cur:
        for approval_id, failed_at_us in failures.items():
            cur.execute(
                db.sql(
                    "UPDATE channel_messages SET failing = CASE WHEN failing > 0 THEN failing - 1 ELSE 0 END,"
                    " retry_at_us = :retry WHERE approval_id = :id AND channel = :ch AND failed_at_us = :at"
                    " AND claimed_at_us IS NULL AND retry_at_us IS NOT NULL"
                ),
                {"retry": now_us + int(random.uniform(OUTAGE_SECONDS / 2, OUTAGE_SECONDS) * 1e6), "at": failed_at_us}
                | {"id": approval_id, "ch": channel},
            )


def message(db: Database, approval_id: str, channel: str) -> Message | None:
    """The channel's message of an approval, if it has one (sent or claimed)."""
    with db.read() as cur:
        cur.execute(
            db.sql("SELECT ref, shown, drawn FROM channel_messages WHERE approval_id = :id AND channel = :ch"),
            {"id": approval_id, "ch": channel},
        )
        row = cur.fetchone()
    if row is None:
        return None
    return Message(approval_id, channel, json.loads(row[0]) if row[0] is not None else None, row[1], row[2])


def tally(db: Database, channel: str) -> Tally:
    """How the channel's deliveries went."""
    with db.read() as cur:
        cur.execute(
            db.sql(
                "SELECT COUNT(ref), COALESCE(SUM(sent), 0), COALESCE(SUM(failures), 0),"
                " COALESCE(SUM(CASE WHEN failing >= :park THEN 1 ELSE 0 END), 0) FROM channel_messages"
                " WHERE channel = :ch"
            ),
            {"ch": channel, "park": PARK_AFTER},
        )
        messages, sent, failures, parked = cur.fetchone()
        cur.execute(
            db.sql(
                "SELECT last_error FROM channel_messages WHERE channel = :ch AND last_error IS NOT NULL"
                " ORDER BY failed_at_us DESC LIMIT 1"
            ),
            {"ch": channel},
        )
        row = cur.fetchone()
    return Tally(int(messages), int(sent), int(failures), row[0] if row else None, int(parked))


# -- identities ---------------------------------------------------------------------------------


def identities_of(db: Database, cur: Any, user_ids: list[str]) -> dict[str, dict[str, str]]:
    """Each person's identities by channel, inside a transaction."""
    if not user_ids:
        return {}
    marks = ", ".join(f":u{i}" for i in range(len(user_ids)))
    cur.execute(
        db.sql(f"SELECT user_id, channel, external_id FROM channel_identities WHERE user_id IN ({marks})"),
        {f"u{i}": u for i, u in enumerate(user_ids)},
    )
    found: dict[str, dict[str, str]] = {u: {} for u in user_ids}
    for user_id, channel, external_id in cur.fetchall():
        found[user_id][channel] = external_id
    return found


def set_identities(db: Database, cur: Any, user_id: str, changes: Mapping[str, str | None]) -> None:
    """Set (or, with None, remove) a person's identity in each channel, inside a write transaction.

    An e-mail address is taken whatever its case (`Lena@x.com` is `lena@x.com`), and kept as
    given. The check and the insert are one step: `db.write()` holds the store's write lock
    (BEGIN IMMEDIATE; PostgreSQL's advisory lock), and an insert that meets the unique
    constraint all the same (another writer's row) is refused like a taken identity, never a
    driver's integrity error.

    Raises:
        ValueError: When another person has that identity in that channel, or it is not text
            every store keeps.
    """
    for channel, external_id in changes.items():
        checked_name(channel)
        cur.execute(
            db.sql("DELETE FROM channel_identities WHERE user_id = :u AND channel = :ch"), {"u": user_id, "ch": channel}
        )
        if external_id is None:
            continue
        if (problem := text_problem(external_id)) is not None or not 0 < len(external_id) <= 320:
            raise ValueError(f"a {channel} identity {problem or 'is 1-320 characters'}")
        taken = _holder(db, cur, channel, external_id)
        if taken is None:
            cur.execute(
                db.sql(
                    "INSERT INTO channel_identities (user_id, channel, external_id) VALUES (:u, :ch, :x)"
                    " ON CONFLICT DO NOTHING"
                ),
                {"u": user_id, "ch": channel, "x": external_id},
            )
            if cur.rowcount == 1:
                continue
            taken = _holder(db, cur, channel, external_id) or "someone else's"
        raise ValueError(f"the {channel} identity {external_id} is already {taken}")


def person(db: Database, channel: str, external_id: str) -> str | None:
    """The username of whoever has this identity in `channel`, if anyone."""
    if text_problem(external_id) is not None:
        return None
    with db.read() as cur:
        return _holder(db, cur, channel, external_id)


def _holder(db: Database, cur: Any, channel: str, external_id: str) -> str | None:
    """Who has this identity; in a caseless channel (e-mail) whatever its case, the same case first."""
    if channel in CASELESS:
        # Addresses are ASCII (the channel checks them), so LOWER agrees on every store; the
        # key is lowered in ASCII only, so no other character's lower case can match one.
        match, key = "LOWER(i.external_id) = :k", external_id.translate(_ASCII_LOWER)
    else:
        match, key = "i.external_id = :x", external_id
    cur.execute(
        db.sql(
            "SELECT u.username FROM channel_identities i JOIN users u ON u.id = i.user_id"
            f" WHERE i.channel = :ch AND {match} ORDER BY CASE WHEN i.external_id = :x THEN 0 ELSE 1 END"
        ),
        {"ch": channel, "x": external_id, "k": key},
    )
    row = cur.fetchone()
    return str(row[0]) if row else None


def reachable(db: Database, channel: str) -> list[tuple[str, tuple[str, ...], str]]:
    """Every enabled person with an identity in `channel`: (username, roles, identity)."""
    with db.read() as cur:
        cur.execute(
            db.sql(
                "SELECT u.username, u.roles, i.external_id FROM channel_identities i JOIN users u ON u.id = i.user_id"
                " WHERE i.channel = :ch AND u.disabled_at_us IS NULL ORDER BY u.username"
            ),
            {"ch": channel},
        )
        return [(r[0], tuple(r[1].split(",")), r[2]) for r in cur.fetchall()]
