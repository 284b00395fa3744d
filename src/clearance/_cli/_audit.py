"""`clearance audit tail|show|export|verify|checkpoint|verify-receipt`."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import click

from .. import _archive
from .._clock import now_us
from .._export import lines
from .._store import EventFilter, StoredEvent
from .._store import _archives as archives
from .._store import _events as events
from .._store import _rollup as rollup
from .._store._kinds import KINDS
from .._visible import hazards, shown_json, visible, warning
from ._checkpoint import UNUSABLE, checkpoint, remembered
from ._common import database_option, friendly, key_file, key_file_trust, open_db, safe, signing_key_option, when


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


_AGO = re.compile(r"^(\d{1,6})([hdw])$")
_UNIT_US = {"h": 3600 * 10**6, "d": 86400 * 10**6, "w": 7 * 86400 * 10**6}


def _cut(value: str) -> int:
    """`--before`: an age (`90d`, `12w`, `36h`) or an ISO date or time; in the past."""
    ago = _AGO.match(value.strip())
    now = now_us()
    at = now - int(ago.group(1)) * _UNIT_US[ago.group(2)] if ago else _time(value, "--before")
    assert at is not None
    if at > now:
        raise click.BadParameter(f"{value!r} is in the future", param_hint="--before")
    return at


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
        archived = archives.start(db)[0] if not found else 0
    finally:
        db.close()
    if not found:
        where = f" (records up to {archived} are archived: see `clearance audit archive`)" if archived else ""
        raise click.ClickException(f"no event, call or approval has the id {safe(ident)!r}{where}")
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
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    show_default=True,
    help="One JSON record a line, or CSV with a header row.",
)
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


def _keys(paths: tuple[str, ...]) -> dict[str, Any] | None:
    if not paths:
        return None
    from .. import _integrity as integrity

    texts = []
    for path in paths:
        try:
            with open(path, "rb") as f:
                texts.append(f.read(1_000_000))
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {safe(path)}: {exc.strerror or exc}", param_hint="--public-key"
            ) from None
    try:
        return integrity.trusted_keys(texts)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--public-key") from None


def _head(value: str | None, option: str = "--head") -> str | None:
    if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value.strip()):
        raise click.BadParameter("a chain hash is 64 hexadecimal digits", param_hint=option)
    return value


@audit_group.command("archive")
@click.option(
    "--before",
    required=True,
    help="Archive records older than this: an age (90d, 12w, 36h) or an ISO date or time (UTC unless an offset).",
)
@click.option(
    "--segment-records",
    type=click.IntRange(1, 10_000_000),
    default=_archive.SEGMENT_RECORDS,
    show_default=True,
    help="Records per segment file at most.",
)
@click.option(
    "--past-sinks",
    is_flag=True,
    help="Also archive records an event sink has not delivered yet (its feed then skips them).",
)
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@database_option
@friendly
def archive(before: str, segment_records: int, past_sinks: bool, directory: Path, database: str) -> None:
    """Move records older than --before to verified, compressed segment files in DIRECTORY.

    Each segment is written, read back and compared with the database before exactly its
    records are deleted, in one transaction that also records where the chain now starts.
    Run it again after a crash: it finishes the work. The newest record always stays.
    """
    cut = _cut(before)
    db = open_db(database)
    try:
        done = _archive.archive(db, directory, before_us=cut, per_segment=segment_records, past_sinks=past_sinks)
    except _archive.ArchiveProblem as exc:
        raise click.ClickException(f"{safe(exc)}") from None
    finally:
        db.close()
    where = safe(str(directory))
    if not done.segments:
        click.echo(f"nothing to archive before {when(cut)} UTC (the newest record always stays)")
    for m in done.segments:
        b = m.boundary
        click.echo(f"{m.segment}: records {b.first_seq} to {b.last_seq} ({b.records}), sha256 {m.sha256}")
    if done.segments:
        click.echo(f"archived {done.records} records in {len(done.segments)} segments to {where}")
    if done.start_seq:
        click.echo(f"the chain in the database starts after record {done.start_seq}, hash {done.start_hash}")
    if done.listed:
        click.echo(
            f"listed the ids of {done.listed} records archived before this version: ingest counts a re-sent"
            " copy of one as a duplicate"
        )
    for segment in done.unlisted:
        click.echo(
            f"{safe(segment)} is not in {where} (or does not verify: verify --archive says why): ingest does not"
            " know its records' ids, and would append a re-sent copy of one again"
        )
    if done.held_by is not None:
        sink, position = done.held_by
        click.echo(
            f"event sink {safe(sink)!r} has delivered records up to {position} only: older records after it"
            " stay until it has (--past-sinks archives them anyway)"
        )


def _verify_archive(
    directory: Path,
    database: str | None,
    trusted: dict[str, Any] | None,
    anchor: dict[str, Any] | None,
    trust: str,
    key_path: str | None,
) -> None:
    db = open_db(database) if database is not None else None
    said = ""
    try:
        known, said = remembered(key_path, database, anchor, db) if db is not None and database else (None, "")
        report = _archive.check(directory, db, trusted, anchor, known=known)
    finally:
        if db is not None:
            db.close()
    if not report.ok:
        click.echo(f"BROKEN: {safe(report.problem)}", err=True)
        click.echo(f"the {report.segments} segments before it verify ({report.records} records)", err=True)
        if trust:
            click.echo(trust, err=True)
        raise SystemExit(1)
    signed = f"; {report.checkpoints} signed checkpoints verify" if report.checkpoints else "; no signed checkpoint"
    _unusable(said, f"{report.segments} segments, {report.records} records{signed}")
    click.echo(f"ok: {report.segments} segments, {report.records} records verified from GENESIS{signed}")
    if db is None:
        click.echo(f"the last archived record is {report.last_seq}, hash {report.last_hash}")
    else:
        click.echo(f"they chain to the database: head is record {report.last_seq}, hash {report.last_hash}")
    if trust:
        click.echo(trust)
    if said:
        click.echo(said, err=said.startswith("WARNING"))
    if anchor is not None and not report.checkpoints and report.records:
        click.echo(
            "WARNING: no checkpoint is in the archive: nothing here is signed, so this shows only that the"
            " records agree with each other. --public-key requires one.",
            err=True,
        )


@audit_group.command("verify")
@click.option(
    "--server",
    envvar="CLEARANCE_SERVER_URL",
    default=None,
    help="Verify the chain of this Clearance server instead (env CLEARANCE_SERVER_URL).",
)
@click.option("--api-key", envvar="CLEARANCE_API_KEY", default=None, help="An admin key for --server.")
@click.option(
    "--head",
    "head",
    default=None,
    help="A head hash kept elsewhere (an earlier verify's, a checkpoint's): it must be in the chain.",
)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="Trust only checkpoints signed by this Ed25519 public key (PEM); repeat for rotated keys.",
)
@click.option(
    "--export",
    "export_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Verify this JSON-lines export (or a JSON-lines sink's file) offline, instead of a store"
    " (trusting --public-key, else the signing key file's key; --start when it does not begin at the chain's"
    " first record).",
)
@signing_key_option(
    "Without --public-key, trust the key of this signing key file, for a store, an --export or an --archive"
    " (env CLEARANCE_SIGNING_KEY; default signing-key.pem beside the SQLite store); with no key file, only the"
    " keys the chain introduces. Not with --server (it trusts its own key)."
)
@click.option(
    "--start",
    "start_hash",
    default=None,
    metavar="HASH",
    help="With --export: the hash of the record before the file's first (a sink's file, or an export after"
    " `audit archive`, starts later in the chain); without it the first record must link to GENESIS.",
)
@click.option(
    "--archive",
    "archive_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Check the archive segments in this directory offline instead (and the database's chain"
    " from them when --database or CLEARANCE_DATABASE_URL is given).",
)
@database_option
@click.pass_context
@friendly
def verify(
    ctx: click.Context,
    server: str | None,
    api_key: str | None,
    head: str | None,
    public_keys: tuple[str, ...],
    export_file: str | None,
    key_path: str | None,
    start_hash: str | None,
    archive_dir: Path | None,
    database: str,
) -> None:
    """Recompute the hash chain and check it against its signed checkpoints; report the first problem (exit 1).

    Finds records changed, deleted from the end, or changed with every later hash recomputed.
    After `clearance audit archive`, the chain in the database starts at the last archived
    record's hash: the first record left must link to it.
    """
    from .. import _integrity as integrity

    head, trusted, start_hash = _head(head), _keys(public_keys), _head(start_hash, "--start")
    if start_hash is not None and export_file is None:
        raise click.UsageError("--start is for --export: a store knows where its chain starts")
    if archive_dir is not None and head is not None:
        raise click.UsageError("--head checks a store or an export, not --archive (verify the store after it)")
    if server and (head is not None or trusted is not None):
        raise click.UsageError(
            "--head and --public-key check a store or an export here, not --server: export the server's log"
            " (clearance audit export) and verify the file with --export"
        )
    key_given = ctx.get_parameter_source("key_path") == click.core.ParameterSource.COMMANDLINE
    if not server and ctx.get_parameter_source("api_key") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("--api-key is for --server: a store or a file here is read directly")
    if server and key_given:
        raise click.UsageError(
            "--key is not for --server: the server checks its chain against its own signing key; to check it"
            " against a key file, export the server's log (clearance audit export) and verify it with --export"
        )
    if trusted is not None and key_given:
        raise click.UsageError("--public-key trusts only the keys given, --key the key file's key: give one of them")
    anchor, trust = (None, "") if trusted is not None or server else key_file_trust(key_path, database)
    if archive_dir is not None:
        given = ctx.get_parameter_source("database") != click.core.ParameterSource.DEFAULT
        _verify_archive(archive_dir, database if given else None, trusted, anchor, trust, key_path)
        return
    start, anchored, said = (0, events.GENESIS), anchor is not None, ""
    usage: tuple[int, list[str]] = (0, [])
    if export_file is not None:
        if trusted is None and anchor is None:
            raise click.UsageError(
                "--export needs keys whose checkpoints to trust: --public-key FILE, or --key with the signing key"
                f" file (there is none at {safe(str(key_file(key_path, database)))})"
            )
        try:
            with open(export_file, encoding="utf-8") as f:
                report = integrity.verify_export(f, trusted, anchor=anchor, head=head, start=start_hash)
        except (OSError, UnicodeDecodeError) as exc:
            raise click.ClickException(f"cannot read {safe(export_file)}: {exc}") from None
    elif server:
        report = _verify_remote(server, api_key)
    else:
        db = open_db(database)
        try:
            known, said = remembered(key_path, database, anchor, db)
            start = archives.start(db)
            report = integrity.verify_store(db, head=head, trusted=trusted, anchor=anchor, known=known)
            usage = rollup.differences(db) if report.ok else (0, [])
        finally:
            db.close()
    if start_hash is not None:
        click.echo(f"the file's chain starts after the record with hash {start_hash.strip().lower()}")
    if start[0]:
        click.echo(f"records up to {start[0]} are archived: the chain here starts at their last hash {start[1]}")
    signed = (
        f"; {report.checkpoints} signed checkpoints verify, the newest signing record {report.checkpoint_seq}"
        if report.checkpoints
        else "; no signed checkpoint"
    )
    if report.ok:
        _unusable(said, f"{report.checked} records{signed}")
        click.echo(f"ok: {report.checked} records verified{signed}")
        click.echo(f"head is record {report.head_seq}, hash {report.head_hash}")
        click.echo("keep the head hash elsewhere (--head) to detect later truncation of the log")
        if trust:
            click.echo(trust)
        if said:
            click.echo(said, err=said.startswith("WARNING"))
        if anchored and not report.checkpoints and report.checked:
            # Not a failure: a new store's key may not have signed yet. But whoever can rewrite
            # the store can also drop every checkpoint and rehash, and this is what that looks like.
            click.echo(
                "WARNING: no checkpoint is in the chain: nothing here is signed, so this shows only that the"
                " records agree with each other — the checkpoints were removed and the chain rehashed, or the key"
                " has signed nothing yet (sign one: clearance audit checkpoint). --public-key requires one.",
                err=True,
            )
        if usage[0]:
            # Not chained, derived: the records are intact, the summaries read from them are not.
            click.echo(
                f"USAGE SUMS DIFFER: {usage[0]} hourly usage sums (what the costs pages, usage summaries and"
                " budgets read) are not the sums of the records:",
                err=True,
            )
            for line in usage[1]:
                click.echo(f"  {safe(line)}", err=True)
            click.echo("the records are intact: `clearance db rebuild-usage` sums them again", err=True)
            raise SystemExit(1)
        return
    where = f"record {report.broken_seq}: " if report.broken_seq is not None else ""
    click.echo(f"BROKEN: {where}{safe(report.problem)}", err=True)
    click.echo(f"the {report.checked} records before it verify (up to record {report.head_seq}){signed}", err=True)
    if trust:
        click.echo(trust, err=True)
    if (report.problem or "").startswith(integrity.REMEMBERED):
        from .. import _seal_memory as memory

        click.echo(safe(memory.after_restore(key_file(key_path, database))), err=True)
    raise SystemExit(1)


def _unusable(said: str, checked: str) -> None:
    """Fail when the signer's memory will not do (the signer refuses then too), though the chain agrees with itself."""
    if said.startswith(UNUSABLE):
        click.echo(f"NOT VERIFIED: {said}", err=True)
        click.echo(f"the chain agrees with itself ({checked})", err=True)
        raise SystemExit(1)


audit_group.add_command(checkpoint)


@audit_group.command("verify-receipt")
@click.argument("receipt_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    required=True,
    type=click.Path(dir_okay=False),
    help="The server's Ed25519 public key (PEM); repeat for rotated keys.",
)
@friendly
def verify_receipt(receipt_file: str, public_keys: tuple[str, ...]) -> None:
    """Check an approval receipt's signature with the server's public key (exit 1 when it does not verify)."""
    import json

    from .. import _receipts as receipts

    trusted = _keys(public_keys) or {}
    try:
        with open(receipt_file, encoding="utf-8") as f:
            receipt = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise click.ClickException(f"cannot read the receipt {safe(receipt_file)}: {exc}") from None
    why = receipts.problem(receipt, trusted)
    if why is not None:
        click.echo(f"NOT VERIFIED: {safe(why)}", err=True)
        raise SystemExit(1)
    p = receipt["payload"]
    click.echo(
        f"ok: approval {safe(p.get('approval_id'))} of {safe(p.get('tool'))}: {safe(p.get('decision'))}"
        f" by {safe(p.get('approver'))}, signed by {safe(p.get('key_id'))}"
    )
