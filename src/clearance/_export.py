"""Audit records as JSON Lines or CSV: one format for `clearance audit export` and the server's.

Tool arguments come from a model: a CSV cell that a spreadsheet would run as a formula (it
starts with = + - @, a tab or a carriage return) is prefixed with `'`. Every record is written,
whatever it holds: values no encoder writes are marked as readers show them (`_shown.show`),
and in JSON Lines invisible and bidirectional characters are written as JSON escapes
(the same text to a JSON reader, visible to a person).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any, Literal

from ._store import StoredEvent
from ._store import _events as events
from ._store._shown import DEGRADED, show

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
    "degraded",  # how the record written differs from the one stored (see `_shown.shown`)
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


# Invisible or bidirectional: controls, zero-width and joiners, direction marks and overrides,
# line and paragraph separators, the byte order mark, and the soft hyphen.
_INVISIBLE = re.compile("[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff]")


def _iso(at_us: Any) -> str | None:
    try:
        return events.iso(at_us)
    except (TypeError, ValueError, OverflowError, OSError):  # not a time any calendar holds
        return None


def _row(e: StoredEvent) -> dict[str, Any]:
    found = show(e.body, record=True)
    body = found.value if isinstance(found.value, dict) else {"$value": found.value}
    if found.notes:
        body = {**body, DEGRADED: list(dict.fromkeys([*body.get(DEGRADED, []), *found.notes]))}
    return {**body, "seq": e.seq, "hash": e.hash, "at": _iso(body.get("at_us"))}


def _escaped(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def json_line(value: Any) -> str:
    """One JSON Lines line: invisible and bidirectional characters written as JSON escapes."""
    return _INVISIBLE.sub(_escaped, json.dumps(value, ensure_ascii=False, sort_keys=True)) + "\n"


def lines(found: Iterable[StoredEvent], fmt: Format) -> Iterator[str]:
    """The export, a line per event (after the CSV header)."""
    if fmt == "jsonl":
        for e in found:
            yield json_line(_row(e))
        return
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    yield out.getvalue()
    for e in found:
        out.seek(0)
        out.truncate()
        row = _row(e)
        row["degraded"] = "; ".join(row.pop(DEGRADED, []))
        writer.writerow([csv_cell(row.get(c)) for c in CSV_COLUMNS])
        yield out.getvalue()
