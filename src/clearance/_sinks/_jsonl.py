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

    A batch that fails part-way (a full disk) leaves what was written: nothing is cut off, since
    the file may have been truncated by logrotate or be appended to by another process meanwhile.
    The file is reopened for the retry, and whenever the sink opens it and it does not end in a
    newline, a newline is written first: the torn line stays one line that no JSON reader
    accepts (skip it), and every other line is whole. Standard output is written as it comes.

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
        out, torn = self._open()
        try:
            out.write(b"\n" + data if torn else data)
            out.flush()
            if self.fsync:
                os.fsync(out.fileno())
        except BaseException:
            self._file = None  # the retry reopens it, and starts a new line if this left half of one
            with contextlib.suppress(OSError, ValueError):
                out.close()
            raise

    def _open(self) -> tuple[IO[bytes], bool]:
        """The file to append to, and whether a newly opened one ends part-way through a line.

        The same file unless it was moved or deleted since it was opened.
        """
        if self._file is not None:
            try:
                now = os.stat(self.path)
                then = os.fstat(self._file.fileno())
                if (now.st_dev, now.st_ino) == (then.st_dev, then.st_ino):
                    return self._file, False
            except FileNotFoundError:
                pass
            self.close()
        # readable too, for the last byte: os.pread leaves the appending offset alone
        out = open(self.path, "a+b")  # noqa: SIM115 (kept open across batches)
        try:
            size = os.fstat(out.fileno()).st_size
            torn = size > 0 and os.pread(out.fileno(), 1, size - 1) != b"\n"
        except BaseException:
            out.close()
            raise
        self._file = out
        return out, torn

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
