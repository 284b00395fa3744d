"""Checking the audit chain against its signed checkpoints: in the store, or in an export, offline.

Recomputing the hash chain finds a record changed in place, but not the last records deleted,
nor a record changed with every later hash recomputed. A signed checkpoint finds both: each
`checkpoint.signed` record must sign exactly the record before it (its position and hash) with
a key that verifies; the store's newest checkpoint must still be in the chain; and a head hash
kept elsewhere (`head`) must be one of the chain's hashes.

Which keys are trusted:
- the keys given (`--public-key`, `trusted`): only checkpoints they sign, and at least one;
- else the configured signing key (`anchor`: the key file beside the store, or the server's own):
  every checkpoint must be signed by it, or be followed in the chain by a checkpoint it signs.
  A `checkpoint.key_introduced` record is not signed by the key before it, so a rotated-out
  key is trusted only where a checkpoint of the current key covers its checkpoints (the hash
  chain carries that signature back over them). Someone who rewrites the store and re-signs
  with a key of their own cannot add a checkpoint of the configured key after theirs;
- else (no key file at all) the keys the chain itself introduces, which shows only that the
  log agrees with itself, not who wrote it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from . import _signing as signing
from ._canonical import canonical_json
from ._store import Database
from ._store import _archives as archives
from ._store import _events as events
from ._store import _seals as seals
from ._store._shown import DEGRADED

REMEMBERED = "the newest checkpoint the signer remembers signing"  # a problem with it starts so
_EXPORT_ONLY = ("seq", "hash", "at")  # what an export line adds to the record (`_export._row`)

_KIND, _BODY, _HASH = (events.ROW_COLUMNS.index(c) for c in ("kind", "body", "hash"))


@dataclass
class SealCheck:
    """Each record's part in the signed checkpoints, record by record in chain order.

    Args:
        trusted: The only keys to trust (key id → public key); None: see `anchor`.
        head: A head hash kept elsewhere, to look for among the chain's hashes.
        anchor: Without `trusted`, the configured signing key(s): a checkpoint by another key
            the chain introduces counts only when one of these signs a later checkpoint.
            None too: the keys the chain introduces (it is only self-consistent).
    """

    trusted: dict[str, Ed25519PublicKey] | None = None
    head: str | None = None
    anchor: dict[str, Ed25519PublicKey] | None = None
    learned: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    unvouched: list[tuple[int, str]] = field(default_factory=list)  # (record, key) no anchor checkpoint follows yet
    signed: dict[int, seals.Checkpoint] = field(default_factory=dict)  # record_seq → checkpoint
    last: seals.Checkpoint | None = None
    head_at: int | None = None

    def record(self, seq: int, kind: object, body: str, prev_seq: int, prev_hash: str, hash_: str) -> str | None:
        """The problem with this record's checkpoint part, if any (it already links and hashes right)."""
        if self.head is not None and hash_ == self.head and self.head_at is None:
            self.head_at = seq
        if kind == "checkpoint.key_introduced":
            return self._introduced(body)
        if kind != "checkpoint.signed":
            return None
        data = _object(body)
        cp = seals.from_body(data, seq) if data is not None else None
        if cp is None:
            return "a checkpoint record without its signed position, hash, key or signature"
        if (cp.seq, cp.hash) != (prev_seq, prev_hash):
            return (
                f"it signs record {cp.seq} with hash {cp.hash[:16]}…, but the chain before it is record"
                f" {prev_seq} with hash {prev_hash[:16]}…: records before it were changed and their hashes recomputed"
            )
        if self.trusted is not None:
            public = self.trusted.get(cp.key_id)
        else:
            public = self.learned.get(cp.key_id) or (self.anchor or {}).get(cp.key_id)
        if public is None:
            where = "no earlier checkpoint.key_introduced record introduces it"
            if self.trusted is not None:
                where = "it is not one of the public keys given"
            return f"its checkpoint is signed by key {cp.key_id[:60]!r}, and {where}"
        if not signing.verify(public, cp.payload(), cp.signature):
            return f"its checkpoint's signature does not verify with key {cp.key_id} (forged, or changed since)"
        if self.anchor is not None and self.trusted is None:
            if cp.key_id in self.anchor:
                self.unvouched.clear()  # its signature covers every record before it
            else:
                self.unvouched.append((seq, cp.key_id))
        self.signed[seq] = cp
        self.last = cp
        return None

    def _introduced(self, body: str) -> str | None:
        data = _object(body)
        if data is None or not isinstance(data.get("key_id"), str) or not isinstance(data.get("public_key"), str):
            return "a key_introduced record without its key id and public key"
        try:
            public = signing.load_public(data["public_key"])
        except ValueError as exc:
            return f"its public key cannot be read: {exc}"
        if signing.key_id(public) != data["key_id"]:
            return "its key id is not the id of the public key it carries"
        self.learned[data["key_id"]] = public
        return None

    def row(self, row: Sequence[Any], prev_seq: int, prev_hash: str) -> str | None:
        """`record` for a stored row (`events.verify`'s `also`)."""
        return self.record(row[0], row[_KIND], row[_BODY], prev_seq, prev_hash, row[_HASH])

    def finish(self, report: events.VerifyReport, newest: seals.Checkpoint | None = None) -> events.VerifyReport:
        """The report with the checkpoints counted, and what the newest stored checkpoint and the head say."""
        report = dataclasses.replace(
            report, checkpoints=len(self.signed), checkpoint_seq=self.last.seq if self.last else None
        )
        if not report.ok:
            return report
        broken = None
        if self.unvouched and self.anchor is not None:
            seq, key_id = self.unvouched[0]
            configured = ", ".join(sorted(self.anchor))
            broken = (
                seq,
                f"its checkpoint is signed by key {key_id}, which is not trusted: it is not the configured signing"
                f" key ({configured}), and no checkpoint signed by that key follows it — the chain was rewritten"
                " and re-signed with a key of the rewriter's, or the key file was replaced and its key has signed"
                " nothing yet (sign one: clearance audit checkpoint)",
            )
        if broken is None and newest is not None:
            broken = self._against(newest, report)
        if broken is None and self.head is not None and self.head_at is None:
            broken = (
                report.head_seq + 1,
                f"the head hash given ({self.head[:64]!r}) is not the hash of any record: records were deleted"
                " from the end (truncated), or changed and their hashes recomputed",
            )
        if broken is None:
            return report
        return dataclasses.replace(report, ok=False, broken_seq=broken[0], problem=broken[1])

    def _against(self, newest: seals.Checkpoint, report: events.VerifyReport) -> tuple[int, str] | None:
        if report.head_seq < newest.record_seq:
            return (
                report.head_seq + 1,
                f"the log ends at record {report.head_seq}, but the newest signed checkpoint (record"
                f" {newest.record_seq}, signing record {newest.seq}) was written after it: records were deleted"
                " from the end (truncated)",
            )
        found = self.signed.get(newest.record_seq)
        if found is None or (found.seq, found.hash, found.signature) != (newest.seq, newest.hash, newest.signature):
            return (
                newest.record_seq,
                f"the newest stored checkpoint signs record {newest.seq} (hash {newest.hash[:16]}…), and the chain"
                f" holds no such checkpoint at record {newest.record_seq}: the chain was rewritten",
            )
        return None


def _object(body: str) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def trusted_keys(pems: Iterable[bytes]) -> dict[str, Ed25519PublicKey]:
    """Public keys by id, from PEM texts.

    Raises:
        ValueError: One is not an Ed25519 key in PEM.
    """
    keys = [signing.load_public(pem) for pem in pems]
    return {signing.key_id(k): k for k in keys}


def verify_store(
    db: Database,
    *,
    head: str | None = None,
    trusted: dict[str, Ed25519PublicKey] | None = None,
    anchor: dict[str, Ed25519PublicKey] | None = None,
    seal: SealCheck | None = None,
    known: seals.Checkpoint | None = None,
) -> events.VerifyReport:
    """Recompute the chain and check it against its signed checkpoints (and a head hash kept elsewhere).

    `trusted`: the only keys whose checkpoints count. Else `anchor`: the configured signing
    key, which must sign a checkpoint after any other key's (see the module docstring). Neither:
    the keys the chain introduces, so the chain is only shown to be self-consistent. `seal`:
    a check that already read the archived records before the store's (instead of the three).
    `known`: the newest checkpoint the signer remembers signing (`_seal_memory`): the chain must
    still hold it, as the signer requires before it signs again.
    """
    check = seal or SealCheck(trusted=trusted, head=head.strip().lower() if head else None, anchor=anchor)
    report = events.verify(db, also=check.row)
    archived_to = archives.start(db)[0]
    if check.head is not None and check.head_at is None:
        for segment in archives.recorded(db):  # a head kept before records were archived
            if segment.boundary.last_hash == check.head:
                check.head_at = segment.boundary.last_seq
                break
        else:
            if report.ok and archived_to:
                return dataclasses.replace(
                    report,
                    ok=False,
                    broken_seq=report.head_seq + 1,
                    problem=f"the head hash given is not the hash of any record here, nor the end of an archived"
                    f" segment: records were deleted from the end or rewritten, or it is inside the archived"
                    f" records (up to {archived_to}) — check those with --archive DIR",
                )
    newest = seals.latest(db)
    if newest is not None and newest.record_seq <= archived_to:  # archived with its segment: checked there
        newest = None
    report = check.finish(report, newest)
    if report.ok and known is not None and (gone := seals.missing(db, known, check.anchor or {})) is not None:
        return dataclasses.replace(report, ok=False, broken_seq=known.seq, problem=f"{REMEMBERED}: {gone}")
    if report.ok and check.trusted is not None and not report.checkpoints:
        # Whoever can rewrite the store can drop every checkpoint and rehash: with keys to
        # trust, a chain none of them signs proves nothing.
        return dataclasses.replace(
            report,
            ok=False,
            broken_seq=report.head_seq,
            problem="no checkpoint signed by the keys given is in the chain: nothing here is signed"
            " (were the checkpoints removed and the chain rehashed?)",
        )
    return report


def verify_export(
    lines: Iterable[str],
    trusted: dict[str, Ed25519PublicKey] | None,
    *,
    anchor: dict[str, Ed25519PublicKey] | None = None,
    head: str | None = None,
    start: str | None = None,
) -> events.VerifyReport:
    """Check exported records with only public keys, offline.

    Takes `clearance audit export` of the whole log, or a JSON-lines sink's file. The first
    record must link to GENESIS, or to `start` when given: the hash of the record before it
    (a sink's file that starts later, an export of a store whose older records are archived).
    A sink's line carries its `prev_hash`, but a file is never checked from wherever it
    starts, or cutting its first records off would go unnoticed. Each record is rebuilt as
    stored (its canonical JSON), so every hash is recomputed; every `checkpoint.signed` record
    must verify with one of `trusted`, and at least one must. Without `trusted`, with the
    configured key `anchor` as `verify_store` does (a checkpoint of another key counts only when
    one of the anchor's follows it), and at least one checkpoint must be there.
    """
    if trusted is None and anchor is None:
        raise ValueError("an export is verified with keys to trust: `trusted` or `anchor`")
    first_line: dict[int, int] = {}  # seq → the line it was first read from
    rows: dict[int, tuple[str, str | None, dict[str, Any]]] = {}  # seq → (hash, prev_hash, the record)
    for n, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            data = json.loads(text)
            seq, hash_ = data["seq"], data["hash"]
            if type(seq) is not int or not isinstance(hash_, str):
                raise TypeError
            prev = data.get("prev_hash")
            if isinstance(data.get("event"), dict):  # a sink's line: the record under `event`
                fields = data["event"]
            else:  # an export's: the record with its place in the chain added
                fields = {k: v for k, v in data.items() if k not in _EXPORT_ONLY}
        except (ValueError, KeyError, TypeError, RecursionError):
            return events.VerifyReport(False, 0, 0, events.GENESIS, None, f"line {n} is not an exported record")
        seen = rows.get(seq)
        if seen is not None and seen[0] != hash_:
            return events.VerifyReport(False, 0, 0, events.GENESIS, seq, f"line {n}: two different records {seq}")
        rows[seq] = (hash_, prev if isinstance(prev, str) else None, fields)  # a sink may deliver one twice
        first_line.setdefault(seq, n)
    ordered = sorted(rows.items())  # the server's export is newest first
    check = SealCheck(trusted=trusted, head=head.strip().lower() if head else None, anchor=anchor)
    prev_seq, prev_hash, checked = 0, events.GENESIS, 0
    if ordered:
        seq, (hash_, stated, data) = ordered[0]
        prev_seq, prev_hash = seq - 1, start.strip().lower() if start is not None else events.GENESIS
        # A sink's line says what it follows; an export's does not, so its hash must follow
        if stated is not None:
            unlinked = stated != prev_hash
        else:
            unlinked = events.chain_hash(prev_hash, canonical_json(data)) != hash_
        if unlinked and DEGRADED not in data:
            return events.VerifyReport(False, 0, 0, events.GENESIS, seq, _unlinked(first_line[seq], stated, start))
    for seq, (hash_, _, data) in ordered:
        problem = None
        if DEGRADED in data:
            problem = f"it was exported in a marked form ({'; '.join(map(str, data[DEGRADED]))[:200]}), not as stored"
        body = canonical_json(data)
        if problem is None and events.chain_hash(prev_hash, body) != hash_:
            problem = (
                "its hash does not follow from the record before it in the export (a record was changed, removed"
                " or added, or the export is not of the whole log)"
            )
        problem = problem or check.record(seq, data.get("kind"), body, prev_seq, prev_hash, hash_)
        if problem:
            return check.finish(events.VerifyReport(False, checked, prev_seq, prev_hash, seq, problem))
        prev_seq, prev_hash, checked = seq, hash_, checked + 1
    report = check.finish(events.VerifyReport(True, checked, prev_seq, prev_hash))
    if report.ok and not report.checkpoints:
        return dataclasses.replace(
            report, ok=False, problem="the export holds no signed checkpoint: nothing in it is signed"
        )
    return report


def _unlinked(line: int, stated: str | None, start: str | None) -> str:
    """Why the first record of an export does not link to where its chain must start."""
    where = f"the first record (line {line}) does not link to"
    says = f": it follows hash {stated[:64]!r}" if stated is not None else " (or it was changed)"
    if start is not None:
        wrong = "records before it were cut off, or --start is wrong"
        return f"{where} the --start hash {start.strip()[:64]!r}{says}: {wrong}"
    return (
        f"{where} GENESIS{says}: records before it were cut off, or the file starts later in the chain (a"
        " sink's file, an export after `clearance audit archive`): give the hash of the record before it"
        " with --start HASH"
    )
