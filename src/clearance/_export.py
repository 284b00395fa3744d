"""Audit records as JSON Lines or CSV: one format for `clearance audit export` and the server's.

Tool arguments come from a model: a CSV cell that a spreadsheet would run as a formula (it
starts with = + - @, a tab or a carriage return) is prefixed with `'`.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from .store import StoredEvent
from .store import _events as events

Format = Literal["jsonl", "csv"]
CSV_COLUMNS = (
    "seq",
    "id",
    "at",
    "kind",
    "agent",
    "environment",
    "session",
    "tool",
    "call_id",
    "decision",
    "reason",
    "rule_ids",
    "policy_revision",
    "args",
    "args_redacted",
    "args_hash",
    "by",
    "note",
    "error",
    "model",
    "tokens",
    "cost_usd",
    "hash",
)


def csv_cell(value: Any) -> str:
    """One CSV cell: text as is, anything else as JSON, a would-be formula defused."""
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, sort_keys=True)
        if value is not None
        else ""
    )
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _row(e: StoredEvent) -> dict[str, Any]:
    return {"seq": e.seq, "hash": e.hash, "at": events.iso(e.body["at_us"]), **e.body}


def lines(found: Iterable[StoredEvent], fmt: Format) -> Iterator[str]:
    """The export, a line per event (after the CSV header)."""
    if fmt == "jsonl":
        for e in found:
            yield json.dumps(_row(e), ensure_ascii=False, sort_keys=True) + "\n"
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()
    for e in found:
        out.seek(0)
        out.truncate()
        row = _row(e)
        writer.writerow([csv_cell(row.get(c)) for c in CSV_COLUMNS])
        yield out.getvalue()
