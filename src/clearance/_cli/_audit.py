"""`clearance audit tail|show|export|verify`."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import click

from .._export import lines
from .._store import EventFilter, StoredEvent
from .._store import _events as events
from .._store._kinds import KINDS
from .._visible import hazards, shown_json, visible, warning
from ._common import database_option, friendly, open_db, safe, when


def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO date or time (e.g. 2026-11-24 or 2026-11-24T09:30)", param_hint=name
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000)


def _filters(fn: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(
        [
            click.option("--agent", help="Only this agent."),
            click.option("--session", help="Only this session."),
            click.option("--tool", help="Only this tool."),
            click.option("--kind", type=click.Choice(KINDS), help="Only this kind of event."),
            click.option("--decision", help="Only this decision (allow, block, require_approval, approved, ok, …)."),
            click.option("--since", help="From this time (ISO, UTC unless an offset is given)."),
            click.option("--until", help="Before this time (ISO)."),
        ]
    ):
        fn = option(fn)
    return fn


def _make_filter(kw: dict[str, Any]) -> EventFilter:
    return EventFilter(
        agent=kw.get("agent"),
        session=kw.get("session"),
        tool=kw.get("tool"),
        kind=kw.get("kind"),
        decision=kw.get("decision"),
        since_us=_time(kw.get("since"), "--since"),
        until_us=_time(kw.get("until"), "--until"),
    )


def _text(value: Any) -> str:
    """Free text from a record, safe to print: hidden characters as tokens, controls escaped."""
    return safe(visible(str(value)))


def _line(e: StoredEvent) -> str:
    b = e.body
    kind = b.get("kind", "?")
    what = b.get("tool") or b.get("model") or b.get("policy_revision") or ""
    detail = ""
    if kind == "tool_call.decided":
        detail = f"{safe(shown_json(b.get('args')))}  {_text(b.get('reason', ''))}"
    elif kind == "tool_call.finished":
        detail = f"{b.get('duration_ms')} ms" + (f"  {_text(b['error'])}" if b.get("error") else "")
    elif kind in ("approval.decided", "approval.expired"):
        detail = f"{b.get('approval_id')} by {_text(b.get('by'))}" + (
            f"  note: {_text(b['note'])}" if b.get("note") else ""
        )
    elif kind == "approval.requested":
        detail = f"{b.get('approval_id')} expires {b.get('expires_at')}"
    elif kind == "llm.call":
        cost = f"${b['cost_usd']}" if b.get("cost_usd") is not None else "unpriced"
        detail = (
            f"in {b.get('input_tokens')} out {b.get('output_tokens')} cached {b.get('cached_input_tokens')}  {cost}"
        )
    decision = b.get("decision") or ""
    found = hazards(b)
    if found:
        places = list(dict.fromkeys(visible(h.path) for h in found))
        more = f" and {len(places) - 3} more" if len(places) > 3 else ""
        detail += f"  ⚠ hidden characters at {', '.join(safe(p) for p in places[:3])}{more}"
    return (
        f"{e.seq:>6}  {when(b.get('at_us'))}  {kind:<18}  {_text(b.get('agent')):<12}  "
        f"{_text(what):<16}  {_text(decision):<16}  {detail}"
    ).rstrip()


@click.group("audit")
def audit_group() -> None:
    """Read, export and verify the audit log."""


@audit_group.command("tail")
@click.option(
    "-n", "--lines", "count", default=20, show_default=True, type=click.IntRange(1, 100_000), help="How many events."
)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events as they are recorded.")
@_filters
@database_option
@friendly
def tail(count: int, follow: bool, database: str, **kw: Any) -> None:
    """The latest events, oldest first."""
    db = open_db(database)
    f = _make_filter(kw)
    try:
        last = 0
        for e in events.query(db, f, limit=count, newest_first=True):
            click.echo(_line(e))
            last = e.seq
        while follow:
            time.sleep(0.5)
            for e in events.iterate(db, f, after=last):
                click.echo(_line(e))
                last = e.seq
    except KeyboardInterrupt:
        pass
    finally:
        db.close()


@audit_group.command("show")
@click.argument("ident", metavar="ID")
@database_option
@friendly
def show(ident: str, database: str) -> None:
    """Every record of an event, call or approval ID, in full, with its chain position and hash."""
    db = open_db(database)
    try:
        found = events.find(db, ident.strip())
    finally:
        db.close()
    if not found:
        raise click.ClickException(f"no event, call or approval has the id {safe(ident)!r}")
    for e in found:
        click.echo(f"# record {e.seq}  hash {e.hash}")
        said = warning(hazards(e.body))
        if said:  # the JSON below shows each hidden character as a token, so it is not the stored text
            click.echo(f"# warning: {safe(said.replace('this call', 'this record'))}; shown as ⟨U+…⟩ tokens")
        click.echo(safe(shown_json(e.body, indent=2), newlines=True))


def _write(out: TextIO, fmt: str, stream: Any) -> int:
    n = -1 if fmt == "csv" else 0  # the CSV header is not an event
    for line in lines(stream, "csv" if fmt == "csv" else "jsonl"):
        out.write(line)
        n += 1
    return max(n, 0)


@audit_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write here instead of standard output."
)
@_filters
@database_option
@friendly
def export(fmt: str, output: str | None, database: str, **kw: Any) -> None:
    """Every matching event, oldest first, as JSON lines or CSV (spreadsheet-safe)."""
    db = open_db(database)
    try:
        stream = events.iterate(db, _make_filter(kw))
        if output is None:
            _write(sys.stdout, fmt, stream)
            return
        with open(output, "w", encoding="utf-8", newline="") as out:
            n = _write(out, fmt, stream)
        click.echo(f"wrote {n} events to {safe(output)}", err=True)
    finally:
        db.close()


def _verify_remote(server: str, api_key: str | None) -> events.VerifyReport:
    import httpx

    if not api_key:
        raise click.UsageError("--server needs an admin key: --api-key or CLEARANCE_API_KEY")
    try:
        r = httpx.get(f"{server.rstrip('/')}/v1/audit/verify", headers={"X-API-Key": api_key}, timeout=600)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach {server}: {exc}") from None
    if r.status_code != 200:
        try:
            message = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = r.text[:200]
        raise click.ClickException(f"{server} answered {r.status_code}: {message}")
    return events.VerifyReport(**r.json())


@audit_group.command("verify")
@click.option(
    "--server",
    envvar="CLEARANCE_SERVER_URL",
    default=None,
    help="Verify the chain of this Clearance server instead (env CLEARANCE_SERVER_URL).",
)
@click.option("--api-key", envvar="CLEARANCE_API_KEY", default=None, help="An admin key for --server.")
@database_option
@friendly
def verify(server: str | None, api_key: str | None, database: str) -> None:
    """Recompute the hash chain; report the first record that was changed or removed (exit 1)."""
    if server:
        report = _verify_remote(server, api_key)
    else:
        db = open_db(database)
        try:
            report = events.verify(db)
        finally:
            db.close()
    if report.ok:
        click.echo(f"ok: {report.checked} records verified; head is record {report.head_seq}, hash {report.head_hash}")
        click.echo("keep the head hash elsewhere to detect later truncation of the log")
        return
    click.echo(f"BROKEN: record {report.broken_seq}: {report.problem}", err=True)
    click.echo(f"the {report.checked} records before it verify (up to record {report.head_seq})", err=True)
    raise SystemExit(1)
