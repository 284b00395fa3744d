"""Spend over time: the cost of LLM calls per hour or day, by model or by agent.

Buckets start at the viewer's midnight (or hour): `offset_us` is their UTC offset. The range
holds at most `MAX_BUCKETS` buckets; the keys that spent most get a series each and the rest are
summed into one. Unpriced calls are counted apart, never as $0.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from . import _rollup
from ._db import Database
from ._events import EventFilter, _where

Bucket = Literal["hour", "day"]
By = Literal["model", "agent"]
BUCKET_US: dict[Bucket, int] = {"hour": 3_600_000_000, "day": 86_400_000_000}
MAX_BUCKETS = 1000
HOURLY_UP_TO_US = 2 * BUCKET_US["day"]  # a range this long or shorter is shown by the hour


@dataclass
class Series:
    """One model's or agent's spend in each bucket (`key` None: the `others` keys together)."""

    key: str | None
    calls: list[int]
    cost_usd: list[Decimal]
    unpriced_calls: list[int]
    others: int = 0
    total_usd: Decimal = field(default_factory=Decimal)
    total_calls: int = 0
    total_unpriced: int = 0


@dataclass
class Spend:
    """Spend per bucket from `since_us` (a bucket's start) to `until_us` (a bucket's end)."""

    by: By
    bucket: Bucket
    since_us: int
    until_us: int
    buckets: list[int]
    series: list[Series]


LAST_US = 2**63 - 1 - BUCKET_US["day"]  # ranges end by then: a bucket's end stays a 64-bit integer


class RangeRefused(ValueError):
    """A range that cannot be drawn: `parameter` says which query parameter to change."""

    def __init__(self, message: str, parameter: str) -> None:
        """Say why, and which parameter."""
        super().__init__(message)
        self.parameter = parameter


def _floor(at_us: int, size: int, offset_us: int) -> int:
    return (at_us + offset_us) // size * size - offset_us


def plan(
    *,
    since_us: int | None,
    until_us: int | None,
    bucket: Bucket | None,
    offset_us: int,
    now_us: int,
    first_us: int | None,
) -> tuple[Bucket, int, int]:
    """The bucket size and the whole buckets (since, until) a range asks for.

    No bucket given: by the hour for a range of two days or less, else by the day. No end: up
    to the end of the bucket now is in. No start: from the first record's bucket (`first_us`),
    but at most `MAX_BUCKETS` buckets back.

    Raises:
        RangeRefused: The start is not before the end, or a start and bucket given span more than
            `MAX_BUCKETS` buckets.
    """
    end = min(until_us if until_us is not None else now_us, LAST_US)
    if since_us is not None and since_us >= end:
        raise RangeRefused("since_us must be before until_us (now, when it is not given)", "since_us")
    if bucket is None:
        bucket = "hour" if since_us is not None and end - since_us <= HOURLY_UP_TO_US else "day"
    size = BUCKET_US[bucket]
    until = _floor(end - 1, size, offset_us) + size
    start = since_us if since_us is not None else (first_us if first_us is not None else until - size)
    since = min(_floor(start, size, offset_us), until - size)
    if (until - since) // size > MAX_BUCKETS:
        if since_us is not None:
            raise RangeRefused(
                f"from since_us to until_us are {(until - since) // size:,} {bucket}s; at most {MAX_BUCKETS:,} are"
                f" drawn: ask for a shorter range{' or for days' if bucket == 'hour' else ''}",
                "bucket",
            )
        since = until - MAX_BUCKETS * size
    return bucket, since, until


def first_llm_call(db: Database, agent: str | None) -> int | None:
    """When the first LLM call (of `agent`) was recorded, or None."""
    where, params = _where(EventFilter(agent=agent, kind="llm.call"))
    with db.read() as cur:
        cur.execute(db.sql(f"SELECT MIN(at_us) FROM events{where}"), params)
        found = cur.fetchone()[0]
    return int(found) if found is not None else None


def spend(
    db: Database, *, by: By, bucket: Bucket, since_us: int, until_us: int, agent: str | None = None, top: int = 8
) -> Spend:
    """The spend of each of the `top` keys that spent most, and of the rest together, per bucket.

    `since_us` and `until_us` are bucket boundaries (see `plan`). Summed exactly from the
    hourly sums where they answer (0020), else from the usage columns (0019).
    """
    size = BUCKET_US[bucket]
    f = EventFilter(agent=agent, kind="llm.call", since_us=since_us, until_us=until_us)
    cells = _summed_by_the_database(db, f, by, size)
    count = (until_us - since_us) // size
    rows: dict[str, Series] = {}
    for (key, at), (calls, nusd, unpriced) in cells.items():
        s = rows.setdefault(key, Series(key, [0] * count, [Decimal()] * count, [0] * count))
        s.calls[at] += calls
        s.cost_usd[at] += Decimal(nusd) / 10**9
        s.unpriced_calls[at] += unpriced
    for s in rows.values():
        s.total_usd, s.total_calls, s.total_unpriced = sum(s.cost_usd, Decimal()), sum(s.calls), sum(s.unpriced_calls)
    ranked = sorted(rows.values(), key=lambda s: (-s.total_usd, -s.total_calls, s.key or ""))
    named, rest = ranked[:top], ranked[top:]
    if rest:
        other = Series(None, [0] * count, [Decimal()] * count, [0] * count, others=len(rest))
        for s in rest:
            for i in range(count):
                other.calls[i] += s.calls[i]
                other.cost_usd[i] += s.cost_usd[i]
                other.unpriced_calls[i] += s.unpriced_calls[i]
            other.total_usd += s.total_usd
            other.total_calls += s.total_calls
            other.total_unpriced += s.total_unpriced
        named.append(other)
    return Spend(by, bucket, since_us, until_us, [since_us + i * size for i in range(count)], named)


Cells = dict[tuple[str, int], tuple[int, int, int]]  # (key, bucket index) -> (calls, nano-dollars, unpriced)


def _summed_by_the_database(db: Database, f: EventFilter, by: By, size: int) -> Cells:
    """Each key's calls, cost and unpriced calls per bucket, exactly (`_rollup.summed`)."""
    found = _rollup.summed(db, _rollup.Asked((by, "bucket"), f.agent, None, f.since_us, f.until_us, size))
    return {(str(k), int(at)): (sums[0], sums[1], sums[-1]) for (k, at), sums in found.items()}
