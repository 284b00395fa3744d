"""JSON lines: one committed event per line, to a file or standard output (a SIEM feed)."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import IO, ClassVar

import orjson

from ._record import Record


class JsonLinesSink:
    """Appends each event as one line of JSON, flushed per batch.

    A line holds the stored record's columns and, under `event`, its body exactly as stored,
    so `hash == sha256(prev_hash + <the text of event>)` can be checked from the line alone:
    `{"seq":…,"id":…,"kind":…,"at_us":…,"prev_hash":…,"hash":…,"event":{…}}`. A body that is
    not strict JSON (only a record written by hand into the database can be) is written in the
    form every reader shows it, with `$degraded` saying how it differs.

    A batch that fails part-way (a full disk) is cut off again, so the retry starts on a whole
    line; standard output cannot be cut.

    Rotation: the file is reopened when it was moved or deleted (logrotate's default `create`
    mode works; `copytruncate` needs nothing either, since the file is opened for appending).

    Args:
        path: The file (created when missing), or `-` for standard output.
        fsync: Also fsync the file after each batch (survives a power loss, costs a disk flush).
        name: The sink's name (its position is kept under it); default `jsonl:<path>`.
    """

    SCHEMES: ClassVar[tuple[str, ...]] = ("jsonl", "jsonl+fsync")

    @classmethod
    def from_spec(cls, scheme: str, target: str) -> JsonLinesSink:
        """The sink `jsonl:<path>` (`-`: standard output) or `jsonl+fsync:<path>` names."""
        return cls(target, fsync=scheme == "jsonl+fsync")

    def __init__(self, path: str | os.PathLike[str] = "-", *, fsync: bool = False, name: str | None = None) -> None:
        self.path = os.fspath(path)
        self.fsync = fsync
        self.name = name or f"jsonl:{self.path}"
        self._file: IO[bytes] | None = None

    def deliver(self, batch: Sequence[Record]) -> None:
        """Write the batch's lines and flush them.

        Raises:
            OSError: The file cannot be opened or written (the batch is retried).
        """
        data = b"".join(line(r) for r in batch)
        if self.path == "-":
            sys.stdout.write(data.decode("utf-8"))
            sys.stdout.flush()
            return
        out = self._open()
        start = out.tell()
        try:
            out.write(data)
            out.flush()
            if self.fsync:
                os.fsync(out.fileno())
        except BaseException:
            self._cut(out, start)
            raise

    def _cut(self, out: IO[bytes], start: int) -> None:
        """After a failed write (a full disk): cut the file back to `start`; the retry follows no partial line."""
        with contextlib.suppress(OSError, ValueError):
            fd = os.dup(out.fileno())  # the same file even if it was rotated meanwhile
            try:
                with contextlib.suppress(OSError, ValueError):
                    out.close()  # what is still buffered is written or dropped now, not after the cut
                os.ftruncate(fd, start)
            finally:
                os.close(fd)
        self._file = None  # the next batch reopens it

    def _open(self) -> IO[bytes]:
        """The file to append to: the same one unless it was moved or deleted since it was opened."""
        if self._file is not None:
            try:
                now = os.stat(self.path)
                then = os.fstat(self._file.fileno())
                if (now.st_dev, now.st_ino) == (then.st_dev, then.st_ino):
                    return self._file
            except FileNotFoundError:
                pass
            self.close()
        self._file = open(self.path, "ab")  # noqa: SIM115 (kept open across batches)
        return self._file

    def close(self) -> None:
        """Close the file (the next batch reopens it)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def line(record: Record) -> bytes:
    """One event's line, ending in a newline."""
    dumps = orjson.dumps
    head = b'{"seq":%d,"id":%b,"kind":%b,"at_us":%d,"prev_hash":%b,"hash":%b,"event":' % (
        record.seq,
        dumps(record.id),
        dumps(record.kind),
        record.at_us,
        dumps(record.prev_hash),
        dumps(record.hash),
    )
    body = record.body
    try:  # the one check that the body is a strict JSON object: orjson is the strictest reader
        strict = body[:1] == "{" and isinstance(orjson.loads(body), dict)
    except orjson.JSONDecodeError:
        strict = False
    text = (
        body.encode("utf-8")
        if strict
        else json.dumps(record.event(), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    )
    return head + text + b"}\n"
