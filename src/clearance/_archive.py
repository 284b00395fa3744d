"""Archives of the audit log: old records moved to verified, compressed segment files.

A segment is `events-<first>-<last>.jsonl.gz` (gzip, JSON Lines): a header line holding its
chain boundary, then one line per record with every stored column, and beside it a manifest
`events-<first>-<last>.json` (the header plus the SHA-256 and size of the compressed file).
Lines are written with `ensure_ascii`, so any stored text (NUL, lone surrogates, bidirectional
controls) is read back exactly and every hash recomputes.

`archive` never deletes a record it has not read back from a complete segment on disk:
each segment is written to a temporary name, flushed to disk and renamed, then its manifest;
the file is re-read and compared with the rows; only then are exactly those rows deleted, in
the transaction that records the segment in the `archives` table. A crash at any point leaves
the rows, a verified segment, or both; running again finishes the work.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gzip
import hashlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import _integrity as integrity
from . import _signing as signing
from ._clock import now_us
from ._store import Database
from ._store import _archives as archives
from ._store import _events as events
from ._store import _seals as seals
from ._store._archives import Boundary, Row
from .errors import StoreError

FORMAT = "clearance-audit-archive"
VERSION = 1
SEGMENT_RECORDS = 50_000  # records per segment at most (each is held in memory while checked)
SEGMENT_BYTES = 64 * 1024 * 1024  # characters of record bodies per segment at most (before compression)
SET_ASIDE = ".set-aside"  # segments a stopped run left, moved here (never deleted) by the next run
_NAME = re.compile(r"^events-(\d{12})-(\d{12})\.json$")
_SEGMENT = re.compile(r"^events-(\d{12})-(\d{12})\.jsonl\.gz$")
_LOCK = ".clearance-archive.lock"
# Tests only: the name of a point at which `archive` kills its own process with SIGKILL, to show
# that a crash there loses nothing ("segment-partial", "segment-written", "segment-removed").
CRASH_ENV = "CLEARANCE_TEST_ARCHIVE_CRASH"

_HASH = events.ROW_COLUMNS.index("hash")


class ArchiveProblem(Exception):
    """A segment that does not verify: what is wrong, and with which file."""


@dataclass(frozen=True)
class Manifest:
    """What a segment holds and how to check it.

    Attributes:
        segment: The compressed file's name.
        boundary: Its chain boundary (first and last record, the hash before, record count).
        sha256: SHA-256 of the compressed file.
        size: Its size in bytes.
        checkpoint: A signed checkpoint of the chain covering the segment (None: none yet).
    """

    segment: str
    boundary: Boundary
    sha256: str
    size: int
    checkpoint: dict[str, Any] | None = None

    def header(self) -> dict[str, Any]:
        """The segment's first line: its boundary (no hash of the file it is in)."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "segment": self.segment,
            **self.boundary.__dict__,
            "columns": list(events.ROW_COLUMNS),
            "checkpoint": self.checkpoint,
        }

    def document(self) -> dict[str, Any]:
        """The manifest file: the header, and the compressed file's hash and size."""
        return {**self.header(), "sha256": self.sha256, "bytes": self.size}


def segment_name(first_seq: int, last_seq: int) -> str:
    """The file name of the segment holding records `first_seq` to `last_seq`."""
    return f"events-{first_seq:012d}-{last_seq:012d}.jsonl.gz"


def _manifest_path(directory: Path, segment: str) -> Path:
    return directory / segment.replace(".jsonl.gz", ".json")


def _line(value: Any) -> bytes:
    return (json.dumps(value, ensure_ascii=True, separators=(",", ":")) + "\n").encode("ascii")


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def _durable_write(path: Path, chunks: Iterator[bytes], *, compress: bool) -> tuple[str, int]:
    """Write `chunks` to `path` via a temporary file, on disk before the rename; its SHA-256 and size."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as raw:
        if compress:
            # mtime=0 and no file name: the same records always make the same bytes.
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as out:
                for n, chunk in enumerate(chunks):
                    out.write(chunk)
                    if n == 2:
                        _crash_point("segment-partial")
        else:
            for chunk in chunks:
                raw.write(chunk)
        raw.flush()
        os.fsync(raw.fileno())
    digest, size = _digest(tmp)
    os.replace(tmp, path)
    return digest, size


def _digest(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return h.hexdigest(), size


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_segment(directory: Path, rows: Sequence[Row], checkpoint: dict[str, Any] | None = None) -> Manifest:
    """Write `rows` as a segment and its manifest, each durable before the next step.

    `checkpoint` is the newest signed checkpoint of a record among them (`seals.Checkpoint`'s
    fields), kept in the header and the manifest.
    """
    boundary = Boundary.of(rows)
    name = segment_name(boundary.first_seq, boundary.last_seq)
    draft = Manifest(name, boundary, "", 0, checkpoint)
    lines = (_line(x) for x in [draft.header(), *(dict(zip(events.ROW_COLUMNS, r, strict=True)) for r in rows)])
    sha256, size = _durable_write(directory / name, lines, compress=True)
    manifest = Manifest(name, boundary, sha256, size, checkpoint)
    text = json.dumps(manifest.document(), ensure_ascii=True, indent=2) + "\n"
    _durable_write(_manifest_path(directory, name), iter([text.encode("ascii")]), compress=False)
    _sync_dir(directory)
    return manifest


def _record(line: Any) -> Row:
    return tuple(line[c] for c in events.ROW_COLUMNS)


def read_segment(manifest_path: Path) -> tuple[Manifest, list[Row]]:
    """A segment's manifest and records, after checking the file's hash, header and record count.

    Raises:
        ArchiveProblem: The manifest or the segment is missing, unreadable or disagrees.
    """
    where = manifest_path.name
    try:
        doc = json.loads(manifest_path.read_text("ascii"))
        boundary = Boundary(**{k: doc[k] for k in Boundary.__dataclass_fields__})
        manifest = Manifest(doc["segment"], boundary, doc["sha256"], doc["bytes"], doc.get("checkpoint"))
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ArchiveProblem(f"{where}: not a readable manifest ({exc})") from None
    if doc.get("format") != FORMAT or doc.get("version") != VERSION:
        raise ArchiveProblem(f"{where}: not a version-{VERSION} {FORMAT} manifest")
    if _manifest_path(manifest_path.parent, manifest.segment) != manifest_path:
        raise ArchiveProblem(f"{where}: names segment {manifest.segment!r}, not its own")
    path = manifest_path.parent / manifest.segment
    try:
        digest, size = _digest(path)
    except OSError as exc:
        raise ArchiveProblem(f"{manifest.segment}: cannot be read ({exc.strerror})") from None
    if (digest, size) != (manifest.sha256, manifest.size):
        raise ArchiveProblem(f"{manifest.segment}: its SHA-256 or size differs from its manifest (changed or cut)")
    try:
        with gzip.open(path, "rb") as f:
            header = json.loads(f.readline())
            rows = [_record(json.loads(line)) for line in f]
    except (OSError, EOFError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise ArchiveProblem(f"{manifest.segment}: not a readable segment ({exc})") from None
    if header != manifest.header():
        raise ArchiveProblem(f"{manifest.segment}: its header differs from its manifest")
    if not rows or Boundary.of(rows) != boundary:
        raise ArchiveProblem(f"{manifest.segment}: its records do not match the boundary its header states")
    return manifest, rows


def _recomputed(
    manifest: Manifest, rows: Sequence[Row], prev_seq: int, prev_hash: str, seal: integrity.SealCheck | None = None
) -> None:
    """Check every record of a segment against the one before it (`prev_seq`, `prev_hash` first).

    With `seal`, each record's part in the signed checkpoints too, as `verify` checks a store's;
    and the segment's checkpoint must sign the hash its record has with a key `seal` knows
    (the keys given, else the configured key and those the chain introduced so far).
    """
    hashes = {}
    for row in rows:
        problem = events.check_row(row, prev_seq, prev_hash)
        if problem is None and seal is not None:
            problem = seal.row(row, prev_seq, prev_hash)
        if problem:
            raise ArchiveProblem(f"{manifest.segment}: record {row[0]}: {problem}")
        prev_seq, prev_hash = row[0], row[_HASH]
        hashes[prev_seq] = prev_hash
    c = manifest.checkpoint
    if c is None:
        return
    try:
        seq, hash_, at_us, key_id, signature = c["seq"], c["hash"], c["at_us"], c["key_id"], c["signature"]
    except (KeyError, TypeError):
        raise ArchiveProblem(f"{manifest.segment}: its checkpoint is not a checkpoint") from None
    if hashes.get(seq) != hash_:
        raise ArchiveProblem(
            f"{manifest.segment}: its checkpoint signs record {seq!r} with a hash that record does not have"
        )
    if seal is not None:
        keys = seal.trusted if seal.trusted is not None else {**(seal.anchor or {}), **seal.learned}
        public = keys.get(key_id) if isinstance(key_id, str) else None
        if public is None or not signing.verify(public, seals.payload(seq, hash_, at_us, key_id), signature):
            whose = "the keys given" if seal.trusted is not None else "the configured key nor one the chain introduced"
            raise ArchiveProblem(f"{manifest.segment}: its checkpoint of record {seq} does not verify with {whose}")


@dataclass(frozen=True)
class Archived:
    """What one `archive` run did.

    Attributes:
        segments: The segments written whose records were removed from the database.
        records: How many records left the database.
        start_seq: The chain in the database now starts after this record.
        start_hash: That record's hash.
        held_by: The event sink (name, position) whose undelivered records older than the cut
            stayed in the database (None: none stayed for a sink).
        listed: Ids of records archived before migration 0021 added to `archived_ids` from
            their segments in the directory (ingest counts a re-sent copy a duplicate).
        unlisted: Segments archived before 0021 that are not in the directory: ingest does not
            know their records' ids.
    """

    segments: list[Manifest]
    records: int
    start_seq: int
    start_hash: str
    held_by: tuple[str, int] | None = None
    listed: int = 0
    unlisted: list[str] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with open(directory / _LOCK, "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"another `clearance audit archive` is writing to {directory}") from None
        yield


def _leftovers(db: Database, directory: Path) -> None:
    """Clear what a run that stopped early left: temporary files, and segments the database does not record.

    Such a segment's records are all still in the database (they leave only in the transaction
    that records it) when the database holds its last record, with the same hash. Even then a
    segment is only moved into `.set-aside/`, never deleted: a copy of this database (a staging
    clone archiving to the same directory) holds the same records, and the segment may be the
    only place its original's archived records are. A segment whose records this database does
    not hold stops the archive instead.

    Raises:
        StoreError: `directory` holds a segment this database neither recorded nor holds.
    """
    for path in directory.glob(".events-*.tmp"):
        path.unlink()
    start_seq = archives.start(db)[0]
    for path in sorted(directory.glob("events-*")):
        found = _NAME.match(path.name) or _SEGMENT.match(path.name)
        if not found or int(found.group(1)) <= start_seq or not path.exists():
            continue
        segment = directory / (path.name if _SEGMENT.match(path.name) else path.name.replace(".json", ".jsonl.gz"))
        if not archives.holds(db, int(found.group(2)), _last_hash(segment)):
            raise StoreError(
                f"{directory} holds {segment.name}, which this database neither recorded nor holds:"
                " archive each database to a directory of its own"
            )
        aside = directory / SET_ASIDE
        aside.mkdir(exist_ok=True)
        for leftover in (segment, _manifest_path(directory, segment.name)):
            if leftover.exists():
                leftover.replace(aside / f"{leftover.name}.{time.time_ns()}")


def _last_hash(segment: Path) -> str | None:
    """The hash a segment's header says its last record has (None: no readable header)."""
    try:
        with gzip.open(segment, "rb") as f:
            header = json.loads(f.readline())
        return str(header["last_hash"])
    except (OSError, EOFError, ValueError, KeyError, TypeError, RecursionError):
        return None


def archive(
    db: Database,
    directory: Path,
    *,
    before_us: int,
    per_segment: int = SEGMENT_RECORDS,
    segment_bytes: int = SEGMENT_BYTES,
    past_sinks: bool = False,
) -> Archived:
    """Move every record older than `before_us` (a prefix of the chain, never the newest) to segments.

    The records from the newest checkpoint's on stay: a signer holds the chain to the newest
    checkpoint it knows, and takes it as archived only when a newer one is there (`_seals._missing`).
    Records an event sink has not delivered yet stay (its feed would skip them), unless `past_sinks`.

    Raises:
        ChainBroken: A record to archive does not verify (nothing from it on is archived).
        StoreError: Another archive runs, or the database changed under this one.
        ArchiveProblem: A segment just written did not read back as written (nothing of it is deleted).
    """
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Manifest] = []
    held = None if past_sinks else archives.slowest_sink(db)
    upto = held[1] if held is not None else None
    if (last := seals.latest(db)) is not None:  # the records it signs stay: the signer looks for them
        upto = last.seq - 1 if upto is None else min(upto, last.seq - 1)
    with _locked(directory):
        _leftovers(db, directory)
        listed, unlisted = _list_ids(db, directory)
        while True:
            rows = archives.due(db, before_us=before_us, limit=per_segment, max_bytes=segment_bytes, upto=upto)
            if not rows:
                break
            newest = seals.newest_within(db, rows[0][0], rows[-1][0])
            manifest = write_segment(directory, rows, dataclasses.asdict(newest) if newest else None)
            _crash_point("segment-written")
            back, stored = read_segment(_manifest_path(directory, manifest.segment))
            if back != manifest or stored != rows:
                raise ArchiveProblem(f"{manifest.segment}: did not read back as written; nothing of it was deleted")
            archives.remove(db, manifest.segment, rows, sha256=manifest.sha256, now_us=now_us())
            written.append(manifest)
            _crash_point("segment-removed")
    start_seq, start_hash = archives.start(db)
    if held is not None and not archives.due(db, before_us=before_us, limit=1, max_bytes=segment_bytes):
        held = None  # nothing older than the cut waits for the sink
    records = sum(m.boundary.records for m in written)
    return Archived(written, records, start_seq, start_hash, held, listed, unlisted)


def _list_ids(db: Database, directory: Path) -> tuple[int, list[str]]:
    """Add the ids of records archived before 0021 to `archived_ids`, from their verified segments.

    Returns how many were added, and the segments whose ids stay unknown: not in `directory`, or
    not verifying as the segment the database recorded (`verify --archive` says what is wrong).
    """
    listed, missing = 0, []
    for seg in archives.unlisted(db):
        try:
            manifest, rows = read_segment(_manifest_path(directory, seg.segment))
        except ArchiveProblem:
            missing.append(seg.segment)
            continue
        if (manifest.sha256, manifest.boundary) != (seg.sha256, seg.boundary):
            missing.append(seg.segment)
            continue
        listed += archives.list_ids(db, seg.segment, rows)
    return listed, missing


@dataclass(frozen=True)
class ArchiveReport:
    """The outcome of checking archives offline.

    Attributes:
        ok: True when every segment verifies and they chain from GENESIS (and to the database).
        segments: Segments checked.
        records: Records checked.
        last_seq: The last archived record's position (0: none).
        last_hash: Its hash: the first record left in the database must link to it.
        problem: What is wrong, and where, when something is.
        checkpoints: Signed checkpoints that verify, in the segments (and the database).
    """

    ok: bool
    segments: int
    records: int
    last_seq: int
    last_hash: str
    problem: str | None = None
    checkpoints: int = 0


def check(
    directory: Path,
    db: Database | None = None,
    trusted: Mapping[str, Ed25519PublicKey] | None = None,
    anchor: Mapping[str, Ed25519PublicKey] | None = None,
    *,
    known: seals.Checkpoint | None = None,
) -> ArchiveReport:
    """Recompute every segment in `directory` and check that they chain from GENESIS.

    Every checkpoint in the segments is checked as `verify` checks a store's (`_integrity`):
    with `trusted` keys, only those count, and at least one must sign; else with `anchor` (the
    configured signing key), a checkpoint of another key only when one of its own follows; with
    neither, the keys the chain introduces (the archive is then only self-consistent).

    With `db`, also that the database records the same segments, that its chain starts where
    the last one ends, and that its remaining records and checkpoints verify from there: the
    report's `records`, `last_seq` and `last_hash` then run to the database's newest record, and
    the database's chain must hold `known`, the newest checkpoint the signer remembers (`verify_store`).
    """
    seal = integrity.SealCheck(
        trusted=dict(trusted) if trusted is not None else None, anchor=dict(anchor) if anchor is not None else None
    )
    last_seq, last_hash, records, n = 0, events.GENESIS, 0, 0

    def broken(problem: str) -> ArchiveReport:
        return ArchiveReport(False, n, records, last_seq, last_hash, problem, len(seal.signed))

    if not directory.is_dir():
        return broken(f"{directory} is not a directory")
    manifests: list[Manifest] = []
    for path in sorted(p for p in directory.iterdir() if _NAME.match(p.name)):
        try:
            manifest, rows = read_segment(path)
            _recomputed(manifest, rows, last_seq, last_hash, seal)
        except ArchiveProblem as exc:
            return broken(str(exc))
        manifests.append(manifest)
        n, records = n + 1, records + len(rows)
        last_seq, last_hash = manifest.boundary.last_seq, manifest.boundary.last_hash
    if db is None:
        report = seal.finish(events.VerifyReport(True, records, last_seq, last_hash))
        if not report.ok:
            return broken(f"record {report.broken_seq}: {report.problem}")
        if trusted is not None and not seal.signed:
            return broken("no checkpoint signed by the keys given is in the segments: nothing here is signed")
        return ArchiveReport(True, n, records, last_seq, last_hash, checkpoints=len(seal.signed))
    on_disk = {m.segment: m for m in manifests}
    for seg in archives.recorded(db):
        found = on_disk.get(seg.segment)
        if found is None:
            return broken(f"the database records segment {seg.segment} as archived, but it is not in {directory}")
        if (found.sha256, found.boundary) != (seg.sha256, seg.boundary):
            return broken(f"{seg.segment} is not the segment the database recorded (its hash or boundary differs)")
    start = archives.start(db)
    if start != (last_seq, last_hash):
        return broken(
            f"the database's chain starts after record {start[0]} (hash {start[1]}), not after the last segment's"
        )
    report = integrity.verify_store(db, seal=seal, known=known)
    if not report.ok:
        return broken(f"database record {report.broken_seq}: {report.problem}")
    return ArchiveReport(True, n, records + report.checked, report.head_seq, report.head_hash, None, len(seal.signed))
