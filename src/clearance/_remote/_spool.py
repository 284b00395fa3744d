"""The remote SDK's durable spool, and the thread that ships it.

Records are committed here before the tool runs, and shipped to the server in batches, with
retry and backoff. A batch is deleted only after the server acknowledged it; ingest is
idempotent by event id, so a batch sent twice (the answer lost, the process killed before
deleting) is recorded once. A record the server refuses (it answers which, and why) is moved
aside into the `rejected` table while the rest of its batch is stored, never dropped silently nor
retried for ever; `clearance spool` lists them. A whole batch answered 422 is moved aside too.

A batch is cut to fit the server's request body limit as well as to `BATCH` records: the shipper
starts from the server's default (`DEFAULT_BODY_LIMIT`), and a 413 teaches it the limit the
server advertises (`Clearance-Max-Body-Bytes`), or halves the batch when none is said (a proxy's
smaller limit). A record too large to go even alone is moved aside into `rejected`, saying so.

The agent's event sinks read the same rows: a row is deleted once it is shipped and every sink
has passed it (`positions` holds each one's last row, and the shipper's). Rows are numbered by
AUTOINCREMENT, so a number is never reused once its row is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import httpx

from .._clock import now_us
from .._retry import retrying
from .._store._events import Event
from ..errors import ServerError, StoreError
from ._client import Client

log = logging.getLogger("clearance.remote")
BATCH = 500
DEFAULT_BODY_LIMIT = 1_048_576  # the server's default `max_body_bytes`
_ENVELOPE = len('{"events":[]}')
_MAX_BACKOFF = 30.0
SHIPPER = "$shipper"  # the shipper's row in `positions` (a sink's name never starts with `$`)
_TABLE = "CREATE TABLE {name} (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, body TEXT NOT NULL)"
_SHIPPED = "(SELECT position FROM positions WHERE name = '$shipper')"
# Rows at or below every position are shipped and passed by every sink: they can go.
FORGET = "DELETE FROM spool WHERE seq <= (SELECT MIN(position) FROM positions)"


class Spool:
    """Records waiting to be shipped, in a local SQLite file (WAL). Thread-safe."""

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute("BEGIN IMMEDIATE")
            _create(self._conn)
            self._conn.execute("COMMIT")
            self._backlog = _Backlog(path, busy_timeout=busy_timeout)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the spool {path}: {exc}") from None
        self.path = path
        self.lock = threading.Lock()
        self.added = threading.Condition(self.lock)
        self.listeners: list[Callable[[], None]] = []  # woken after each commit (the event sinks)

    def put(self, events: list[Event]) -> None:
        """Commit records (before the tool runs). Raises StoreError when they cannot be written."""
        with self.lock:
            try:
                with self._transaction() as conn:
                    conn.executemany(
                        "INSERT OR IGNORE INTO spool (id, body) VALUES (?, ?)", [(e.id, e.body) for e in events]
                    )
            except sqlite3.Error as exc:
                raise StoreError(f"cannot write the spool {self.path}: {exc}") from None
            self.added.notify()
        for listener in self.listeners:
            listener()

    def _transaction(self) -> contextlib.AbstractContextManager[sqlite3.Connection]:
        """A transaction on the spool's connection (the caller holds the lock)."""
        return _transaction(self._conn)

    def peek(self, n: int = BATCH) -> list[tuple[int, str]]:
        """The oldest `n` records not shipped yet."""
        with self.lock:
            return self._conn.execute(
                f"SELECT seq, body FROM spool WHERE seq > {_SHIPPED} ORDER BY seq LIMIT ?", (n,)
            ).fetchall()

    def drop(self, up_to: int) -> None:
        """Forget records up to `up_to` (shipped)."""
        with self.lock, self._transaction():
            self._shipped(up_to)

    def _shipped(self, up_to: int) -> None:
        """Inside a transaction: records up to `up_to` are shipped; delete those every sink passed too."""
        self._conn.execute("UPDATE positions SET position = MAX(position, ?) WHERE name = ?", (up_to, SHIPPER))
        self._conn.execute(FORGET)

    def reject(self, rows: list[tuple[int, str]], error: str) -> None:
        """Move records the server refused aside, with why."""
        with self.lock, self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO rejected (id, body, error) VALUES (?, ?, ?)",
                [(json.loads(body)["id"], body, error) for _, body in rows],
            )
            self._shipped(rows[-1][0])

    def settle(self, rows: list[tuple[int, str]], refused: dict[int, str]) -> None:
        """Forget a shipped batch, keeping aside (with why) the records the server refused.

        `refused` maps positions in `rows` to the server's reasons.
        """
        with self.lock, self._transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO rejected (id, body, error) VALUES (?, ?, ?)",
                [(json.loads(rows[i][1])["id"], rows[i][1], why) for i, why in refused.items()],
            )
            self._shipped(rows[-1][0])

    def rejected(self) -> list[tuple[str, str, str]]:
        """The records set aside: (event id, why the server refused it, the record)."""
        with self.lock:
            found = self._conn.execute("SELECT id, error, body FROM rejected ORDER BY rowid").fetchall()
        return [(str(i), str(e), str(b)) for i, e, b in found]

    def size(self) -> int:
        """Records waiting to be shipped (counted without the lock `put` takes, from what changed since last time)."""
        return self._backlog.count()

    def close(self) -> None:
        """Close the file."""
        with self.lock:
            self._conn.close()
        self._backlog.close()


class _Backlog:
    """Counts the spool's records not shipped yet, on a connection of its own (a WAL reader never blocks a write).

    Records after the shipper's position are never deleted, and a new one is numbered above every
    number used before (AUTOINCREMENT), whichever process writes it: so a count moves by the records
    numbered since the last one and by the numbers the shipper has passed, and only those are read
    (the first count reads the whole backlog once). Numbers with no record (an ignored duplicate
    uses one up) are kept as runs, so passing them is counted right.
    """

    def __init__(self, path: Path, *, busy_timeout: float) -> None:
        self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._top = 0  # the highest number counted so far
        self._holes: list[tuple[int, int]] = []  # runs (first, last) of numbers in (shipped, top] with no record

    def count(self) -> int:
        """Records after the shipper's position."""
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN")  # one snapshot: what was shipped, numbered and deleted stay consistent
            try:
                shipped = int(conn.execute(f"SELECT {_SHIPPED}").fetchone()[0])
                top = int(conn.execute(_TOP).fetchone()[0])
                start = max(shipped, self._top)
                holes = [(max(first, shipped + 1), last) for first, last in self._holes if last > shipped]
                if top - start > conn.execute(_BETWEEN, (start, top)).fetchone()[0]:
                    holes += _gaps(conn.execute(_NUMBERS, (start, top)), start, top)
            finally:
                conn.execute("COMMIT")
            self._top, self._holes = top, holes
            return top - shipped - sum(last - first + 1 for first, last in holes)

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._conn.close()


_TOP = "SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'spool'"  # never goes back, unlike MAX(seq)
_BETWEEN = "SELECT COUNT(*) FROM spool WHERE seq > ? AND seq <= ?"
_NUMBERS = "SELECT seq FROM spool WHERE seq > ? AND seq <= ? ORDER BY seq"


def _gaps(numbers: Iterable[tuple[int]], after: int, top: int) -> list[tuple[int, int]]:
    """The runs of numbers in (after, top] missing from `numbers` (ascending)."""
    runs, last = [], after
    for (seq,) in numbers:
        if seq > last + 1:
            runs.append((last + 1, seq - 1))
        last = seq
    if top > last:
        runs.append((last + 1, top))
    return runs


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT; an error rolls back, so the connection's next write works."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SinkCursor:
    """The event sinks' side of a spool, on a connection of its own (never the spool's lock).

    A row stays in the spool until it is shipped and every sink has passed it.

    Args:
        path: The spool file.
        busy_timeout: Seconds to wait for the spool's write lock.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self._conn = sqlite3.connect(path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)

    def start(self, names: Sequence[str]) -> dict[str, int]:
        """Each sink's position (a new one starts after the newest row).

        Other sinks' positions are kept: a previous configuration's sinks still deliver until
        they close, then `forget()` lets their rows go.
        """
        marks = ", ".join("?" for _ in names)
        with _transaction(self._conn) as conn:
            head = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'spool'").fetchone()[0]
            conn.executemany(
                "INSERT OR IGNORE INTO positions (name, position) VALUES (?, ?)", [(n, head) for n in names]
            )
            found = dict(
                conn.execute(f"SELECT name, position FROM positions WHERE name IN ({marks})", names).fetchall()
            )
        return {n: int(found[n]) for n in names}

    def forget(self, keep: Sequence[str]) -> None:
        """Sinks not in `keep` stop holding rows (once they have closed): their positions go."""
        marks = ", ".join("?" for _ in keep)
        with _transaction(self._conn) as conn:
            conn.execute(f"DELETE FROM positions WHERE name <> ? AND name NOT IN ({marks})", (SHIPPER, *keep))
            conn.execute(FORGET)

    def after(self, position: int, n: int) -> list[tuple[int, str]]:
        """Up to `n` rows after `position`: (seq, body), shipped or not."""
        rows = self._conn.execute("SELECT seq, body FROM spool WHERE seq > ? ORDER BY seq LIMIT ?", (position, n))
        return [(int(seq), str(body)) for seq, body in rows.fetchall()]

    def save(self, name: str, position: int) -> None:
        """Sink `name` passed every row up to `position`; rows every sink and the shipper passed go."""
        with _transaction(self._conn) as conn:
            conn.execute("UPDATE positions SET position = MAX(position, ?) WHERE name = ?", (position, name))
            conn.execute(FORGET)

    def backlog(self, position: int) -> int:
        """How many rows come after `position`."""
        return int(self._conn.execute("SELECT COUNT(*) FROM spool WHERE seq > ?", (position,)).fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


class _SetAside(Exception):
    """A whole batch was moved aside into `rejected` (it counts as handled)."""

    def __init__(self, count: int) -> None:
        self.count = count


def _fitting(rows: list[tuple[int, str]], limit: int) -> tuple[list[tuple[int, str]], bytes]:
    """The oldest of `rows` whose batch fits in `limit` bytes (always at least one), and that batch.

    The records go as they were spooled, byte for byte: nothing re-encodes (or refuses) them here.
    """
    bodies: list[bytes] = []
    size = _ENVELOPE
    for _, body in rows:
        raw = body.encode("utf-8", "surrogatepass")
        if bodies and size + len(raw) + 1 > limit:
            break
        bodies.append(raw)
        size += len(raw) + (1 if len(bodies) > 1 else 0)
    return rows[: len(bodies)], b'{"events":[' + b",".join(bodies) + b"]}"


def _advertised(answer: httpx.Response) -> int | None:
    """The body limit a 413 says (`Clearance-Max-Body-Bytes`), if any."""
    value = answer.headers.get("clearance-max-body-bytes", "")
    return int(value) if value.isdigit() and 0 < int(value) < 1 << 40 else None


def _create(conn: sqlite3.Connection) -> None:
    """Create the spool's tables, or bring a spool written by an older version up to date."""
    conn.execute("CREATE TABLE IF NOT EXISTS rejected (id TEXT PRIMARY KEY, body TEXT NOT NULL, error TEXT NOT NULL)")
    conn.execute("CREATE TABLE IF NOT EXISTS positions (name TEXT PRIMARY KEY, position INTEGER NOT NULL)")
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'spool'").fetchone()
    if row is None:
        conn.execute(_TABLE.format(name="spool"))
    elif "AUTOINCREMENT" not in row[0]:  # its numbers were reused once it emptied: keep them, never reuse again
        conn.execute(_TABLE.format(name="spool_new"))
        conn.execute("INSERT INTO spool_new (seq, id, body) SELECT seq, id, body FROM spool")
        conn.execute("DROP TABLE spool")
        conn.execute("ALTER TABLE spool_new RENAME TO spool")
    # Whatever is gone was shipped: the shipper starts just before the oldest row left.
    conn.execute(
        "INSERT OR IGNORE INTO positions (name, position) VALUES (?, (SELECT COALESCE(MIN(seq) - 1, 0) FROM spool))",
        (SHIPPER,),
    )


class Shipper:
    """Ships the spool to `POST /v1/events`, oldest first, in batches.

    Each batch carries the spool's backlog behind it (`Clearance-Spool-Backlog`), which the
    server's metrics show per agent.

    Attributes:
        shipped: Records the server took, since this process started.
        set_aside: Records moved aside into `rejected` (refused, or too large), since this process started.
        body_limit: The largest batch in bytes the server is known to take (learned from its 413s).
        failures: Attempts that failed (each is retried).
        last_shipped_us: When the server last took a batch (None: not yet in this process).
        last_error: Why the last attempt failed; None once one succeeds.
    """

    def __init__(self, spool: Spool, client: Client) -> None:
        self.spool = spool
        self.client = client
        self._stop = threading.Event()
        self.shipped = 0
        self.set_aside = 0
        self._aside_reported = 0  # set_aside as the last flush saw it
        self.body_limit = DEFAULT_BODY_LIMIT
        self.failures = 0
        self.last_shipped_us: int | None = None
        self.last_error: str | None = None
        self._shipping = threading.Lock()  # one batch in flight at a time (flush vs the thread)
        self._thread = threading.Thread(target=self._run, name="clearance-shipper", daemon=True)
        self._thread.start()

    def ship_once(self) -> int:
        """Send one batch; returns how many records it held (0 when the spool is empty).

        Raises:
            ServerError: The server could not take it (try again later).
        """
        with self._shipping:
            try:
                return self._ship_batch()
            except _SetAside as aside:
                return aside.count

    def _ship_batch(self) -> int:
        rows = self.spool.peek()
        if not rows:
            return 0
        while True:
            rows, batch = _fitting(rows, self.body_limit)
            answer = self._post(rows, batch)
            if answer.status_code != 413:
                break
            if len(rows) == 1:  # too large to go even alone: retrying cannot help; keep it aside
                limit = _advertised(answer)
                why = f"the record is {len(batch)} bytes, larger than the server takes in one request" + (
                    f" ({limit} bytes, its max_body_bytes)" if limit else ""
                )
                log.error("%s (kept in %s; `clearance spool` lists it)", why, self.spool.path)
                self.spool.reject(rows, why)
                self.set_aside += 1
                return 1
            self._learn(answer, len(batch))
        refused = {
            int(r["index"]): "; ".join(r["problems"])
            for r in answer.json().get("refused", [])
            if 0 <= int(r["index"]) < len(rows)
        }
        if refused:  # the rest is stored; these are kept aside, never retried for ever
            log.error(
                "the server refused %d of %d records (kept in %s; `clearance spool` lists them): %s",
                len(refused),
                len(rows),
                self.spool.path,
                "; ".join(refused.values())[:500],
            )
        self.spool.settle(rows, refused)
        self.shipped += len(rows) - len(refused)
        self.set_aside += len(refused)
        self.last_shipped_us, self.last_error = now_us(), None
        return len(rows)

    def _post(self, rows: list[tuple[int, str]], batch: bytes) -> httpx.Response:
        """Send a batch; the answer, 413 included (the caller cuts the batch smaller)."""
        try:
            # What still waits once this batch is taken: an idle agent reports 0.
            behind = str(self.spool.size() - len(rows))
            return self.client.call(
                "POST",
                "/v1/events",
                content=batch,
                headers={"Clearance-Spool-Backlog": behind},
                ok=(200, 201, 413),
            )
        except ServerError as exc:
            self.last_error = str(exc)[:500]
            if exc.status in (400, 422):  # an invalid batch: retrying cannot help; keep it aside
                log.error("the server rejected %d records (kept in %s): %s", len(rows), self.spool.path, exc)
                self.spool.reject(rows, str(exc))
                self.set_aside += len(rows)
                raise _SetAside(len(rows)) from None
            raise

    def _learn(self, answer: httpx.Response, sent: int) -> None:
        """After a 413 for `sent` bytes: the limit the server advertises, else half of what was sent."""
        limit = _advertised(answer)
        self.body_limit = limit if limit is not None and limit < sent else max(sent // 2, 1)
        log.warning(
            "the server refused a batch of %d bytes as too large; batches are now at most %d bytes",
            sent,
            self.body_limit,
        )

    def _run(self) -> None:
        ship = retrying(self._failed, most=_MAX_BACKOFF, stop=self._stop, log=log, what="shipping records")
        while not self._stop.is_set():
            try:
                sent = ship(self.ship_once)
            except Exception:  # stopped while waiting to retry, or the spool is closing: records stay on disk
                return
            if sent == 0:
                with self.spool.added:
                    self.spool.added.wait(0.5)

    def _failed(self, exc: BaseException) -> bool:
        """Whether to retry after `exc`: a server error is counted and retried; anything else is not."""
        if not isinstance(exc, ServerError):
            return False
        self.failures += 1
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Ship everything now; True when every record was delivered.

        False (and a warning logged) when records are left in the spool (the server did not take
        them in time) or were set aside into `rejected` since the previous flush (refused, or too
        large) — by this flush or by the background thread before it: a record set aside just
        before the call is reported, not lost between the two.
        """
        deadline = time.monotonic() + timeout
        with contextlib.suppress(ServerError):
            for attempt in retrying(ServerError, first=0.2, most=1.0, give_up=lambda: time.monotonic() >= deadline):
                with attempt:
                    while self.ship_once() and time.monotonic() < deadline:
                        pass
        aside = self.set_aside
        left, refused = self.spool.size(), aside - self._aside_reported
        self._aside_reported = aside
        if left or refused:
            log.warning(
                "not every record was delivered: %d left in the spool %s%s; %d set aside (`clearance spool`)",
                left,
                self.spool.path,
                f" ({self.last_error})" if left and self.last_error else "",
                refused,
            )
        return left == 0 and refused == 0

    def close(self) -> None:
        """Stop shipping (what is left stays in the spool for the next run)."""
        self._stop.set()
        with self.spool.added:
            self.spool.added.notify_all()
        self._thread.join(timeout=15)
