"""Opening the store: SQLite (the embedded default) or PostgreSQL, migrated to the head revision.

The hot path (one record per tool call) uses the driver's connection directly with prepared,
parameterised SQL: SQLAlchemy Core costs tens of microseconds a statement, more than the whole
budget of a governed call. Schema and migrations are SQLAlchemy and Alembic.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from ..errors import StoreError

HEAD = "0022"
# Writers take turns at the chain's head: one lock per schema, so stores sharing a database
# (one schema each) do not wait for each other.
_CHAIN_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended('clearance chain ' || current_schema(), 0))"
_MIGRATING = threading.Lock()  # the newest migration; a test checks it against the chain
_NAMED = re.compile(r"(?<![:\w]):(\w+)")
_BUSY = ("database is locked", "database is busy", "database table is locked")
# WAL checkpoints (copying committed pages back into the database file, with an fsync) run on a
# background thread of their own connection, every CHECKPOINT_EVERY commits of this connection
# (about ten WAL pages each), not on the thread that commits a call before its tool runs. Should
# that thread be gone or fall behind, the committing connection still checkpoints by itself once
# the WAL reaches BACKSTOP_PAGES (SQLite's default is 1,000), so the WAL stays bounded.
CHECKPOINT_EVERY = 64
BACKSTOP_PAGES = 8000


# The post-commit hook: who to wake when a transaction that appended events commits, by store
# URL, so every connection of the process to a store (the guard's, the server's two) fires it.
_listeners: dict[str, list[Callable[[], None]]] = {}
_listeners_lock = threading.Lock()


def on_commit(url: str, listener: Callable[[], None]) -> Callable[[], None]:
    """Call `listener` after every commit in this process that appended events to the store at `url`.

    It runs on the committing thread, right after the commit and never for a transaction that
    rolled back: it must only wake something (set an event), never do I/O. Returns a function
    that removes it.
    """
    key = normalise_url(url)
    with _listeners_lock:
        _listeners[key] = [*_listeners.get(key, ()), listener]

    def remove() -> None:
        with _listeners_lock:
            left = [fn for fn in _listeners.get(key, ()) if fn is not listener]
            if left:
                _listeners[key] = left
            else:
                _listeners.pop(key, None)

    return remove


def _is_busy(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and any(b in str(exc) for b in _BUSY)


def normalise_url(url_or_path: str) -> str:
    """A SQLAlchemy URL from a URL or a plain file path (which means SQLite)."""
    if "://" in url_or_path:
        return url_or_path
    return f"sqlite:///{Path(url_or_path).expanduser().absolute()}"


class Database:
    """One connection to the store, shared by the threads of a process under a lock.

    Args:
        url: A SQLAlchemy URL (`sqlite:///path`, `postgresql+psycopg://…`) or a file path.
        busy_timeout: Seconds to wait for another process's write lock before failing.
        create: Create a missing SQLite file and its directory (else fail with StoreError).
    """

    def __init__(self, url: str, *, busy_timeout: float = 30.0, create: bool = True) -> None:
        self.url = normalise_url(url)
        self.busy_timeout = busy_timeout
        self.lock = threading.RLock()
        try:
            parsed = make_url(self.url)
        except ArgumentError as exc:
            raise StoreError(f"invalid database URL {url!r}: {exc}") from None
        self.dialect = parsed.get_backend_name()
        if self.dialect not in ("sqlite", "postgresql"):
            raise StoreError(f"unsupported database {self.dialect!r}: use SQLite or PostgreSQL")
        self.path = parsed.database if self.dialect == "sqlite" else None
        self._sql: dict[str, str] = {}
        self._create = create
        self._conn: Any = None
        self._engine: Engine | None = None
        # The hash of the newest record, known only inside a write transaction that appended
        # (it holds the chain's lock), so later appends in it skip reading the head again.
        self.chain_tip: str | None = None
        self._writing = 0  # write transactions open on this connection (a read inside one joins it)
        self.appended = False  # whether the open write transaction appended events (set by events.append)
        self.last_appended: str | None = None  # the id of the last event it appended (set by events.append)
        self._commits = 0  # SQLite commits since the checkpointer was last woken
        self._checkpointer: _Checkpointer | None = None
        try:
            self._open()
        except StoreError:
            self.close()
            raise
        except (sqlite3.Error, SQLAlchemyError, OSError) as exc:
            self.close()
            raise StoreError(f"cannot open the audit database {self.display}: {_why(exc)}") from None

    @property
    def lost(self) -> bool:
        """Whether the PostgreSQL connection was lost (the next use opens a new one)."""
        return self.dialect != "sqlite" and self._conn is None

    @property
    def display(self) -> str:
        """Where the store is, for messages (no password)."""
        return self.path or make_url(self.url).render_as_string(hide_password=True)

    def _open(self) -> None:
        if self.dialect == "sqlite":
            self._open_sqlite()
        else:
            self._engine = create_engine(self.url, pool_pre_ping=True)
            self._migrate()
            self._conn = self._engine.raw_connection()

    def _open_sqlite(self) -> None:
        assert self.path
        path = Path(self.path)
        if not self._create and not path.exists():
            raise StoreError(f"no audit database at {path} (set CLEARANCE_DATABASE_URL or pass --database)")
        if not path.parent.exists():
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot create the directory for the audit database {path}: {_why(exc)}") from None
        if path.exists() and not os.access(path, os.W_OK):
            raise StoreError(f"the audit database {path} is read-only; the guard must be able to record calls")
        conn = sqlite3.connect(path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False)
        self._conn = conn
        self._retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
        if self._version() != HEAD:
            self._engine = create_engine(self.url, connect_args={"timeout": self.busy_timeout})
            _begin_immediate(self._engine)
            self._migrate()
            self._engine.dispose()
            self._engine = None

    def _version(self) -> str | None:
        try:
            row = self._conn.execute("SELECT version_num FROM alembic_version").fetchone()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return None
            raise
        return row[0] if row else None

    def _migrate(self) -> None:
        assert self._engine is not None
        with _MIGRATING:  # alembic's context is process-wide: two threads migrating at once hang
            self._upgrade()

    def _upgrade(self) -> None:
        assert self._engine is not None
        config = Config()
        config.set_main_option("script_location", str(resources.files("clearance._store") / "migrations"))
        with self._engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def _retry_busy(self, fn: Any) -> Any:
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.001
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.05)

    def notify(self, cur: Any, topic: str) -> None:
        """Tell every server replica on this PostgreSQL that `topic` changed (delivered at commit)."""
        if self.dialect == "postgresql":
            cur.execute("SELECT pg_notify('clearance', %(topic)s)", {"topic": topic})

    def total(self, expr: str) -> str:
        """SQL that adds `expr` up over a group without ever failing: numbers an agent reported can be huge.

        SQLite's `SUM` of integers raises "integer overflow" past 2^63 (two records of a cost near
        the 64-bit limit were enough to make every listing that sums them fail); its `TOTAL` adds
        as floating point and never overflows (exact to 2^53). PostgreSQL's `SUM` of a bigint is a
        `numeric` and never overflows.
        """
        return f"TOTAL({expr})" if self.dialect == "sqlite" else f"SUM({expr})"

    def sql(self, text: str) -> str:
        """`text` written with `:name` parameters, in this driver's parameter style."""
        out = self._sql.get(text)
        if out is None:
            out = text if self.dialect == "sqlite" else _NAMED.sub(r"%(\1)s", text.replace("%", "%%"))
            self._sql[text] = out
        return out

    def _cursor(self) -> Any:
        """A cursor on a live connection: a PostgreSQL connection lost earlier is replaced."""
        if self._conn is None:
            if self._engine is None:
                raise StoreError(f"the audit database {self.display} is closed")
            self._conn = self._engine.raw_connection()  # pool_pre_ping: a working one
        try:
            return self._conn.cursor()
        except Exception as exc:  # a connection lost while idle fails here first
            error = self._failed(exc, "use")
            if error is None:
                raise
            raise error from None

    def _failed(self, exc: BaseException, doing: str) -> StoreError | None:
        """The StoreError for a driver error (None for anything else); drops a lost connection."""
        if not (isinstance(exc, sqlite3.Error | SQLAlchemyError) or type(exc).__module__.startswith("psycopg")):
            return None
        if self.dialect != "sqlite" and _connection_lost(exc):
            # The server went away (restart, network): forget this connection; the next use
            # gets a new one, so the service recovers by itself when the database is back.
            with contextlib.suppress(Exception):
                self._conn.invalidate()
            self._conn = None
        return StoreError(f"cannot {doing} the audit database {self.display}: {_why(exc)}")

    @contextmanager
    def write(self, *, pipelined: bool = False) -> Iterator[Any]:
        """A write transaction holding the store's write lock; commits on success.

        `pipelined` (PostgreSQL): statements are sent without waiting for each one's answer
        until a result is read or the transaction commits, so a transaction of many inserts
        costs a few round trips instead of one per statement. An error may then surface at the
        next read or at commit rather than at its statement; the transaction fails all the same.

        Raises:
            StoreError: When another process holds the lock past the busy timeout, the store is
                unreachable, or the write fails.
        """
        with self.lock:
            cur = self._cursor()
            self.chain_tip = None
            self.appended = False
            self.last_appended = None
            self._writing += 1
            try:
                if self.dialect == "sqlite":
                    try:
                        cur.execute("BEGIN IMMEDIATE")
                    except sqlite3.OperationalError as exc:
                        if not _is_busy(exc):
                            raise
                        self._retry_busy(lambda: cur.execute("BEGIN IMMEDIATE"))
                    yield cur
                    cur.execute("COMMIT")
                    self._commits += 1
                    if self._commits >= CHECKPOINT_EVERY:
                        self._commits = 0
                        self._checkpoint_soon()
                else:
                    with self._conn.driver_connection.pipeline() if pipelined else nullcontext():
                        cur.execute(_CHAIN_LOCK)
                        yield cur
                        self._conn.commit()
            except BaseException as exc:
                self._rollback()
                if _is_busy(exc):
                    raise StoreError(
                        f"the audit database {self.display} stayed locked by another process for {self.busy_timeout:g}s"
                    ) from None
                error = self._failed(exc, "write")
                if error is not None:
                    raise error from exc
                raise
            else:
                if self.appended:
                    for listener in _listeners.get(self.url, ()):
                        listener()
            finally:
                self._writing -= 1
                self.chain_tip = None
                self.appended = False
                self.last_appended = None
                with contextlib.suppress(Exception):
                    cur.close()

    @contextmanager
    def read(self) -> Iterator[Any]:
        """A cursor for reading (a consistent snapshot on PostgreSQL until it closes).

        Inside a write transaction of this thread it reads within that transaction (and leaves
        it open), so it sees what the transaction wrote.

        Raises:
            StoreError: When the store is unreachable or the read fails.
        """
        with self.lock:
            cur = self._cursor()
            try:
                yield cur
            except BaseException as exc:
                error = self._failed(exc, "read")
                if error is not None:
                    raise error from None
                raise
            finally:
                with contextlib.suppress(Exception):
                    cur.close()
                    if self.dialect != "sqlite" and self._conn is not None and not self._writing:
                        self._conn.rollback()

    def _rollback(self) -> None:
        if self._conn is None:
            return
        try:
            if self.dialect == "sqlite":
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
            else:
                self._conn.rollback()
        except Exception:  # the original error matters more than a failed rollback
            pass

    def _checkpoint_soon(self) -> None:
        """Wake the background checkpointer (started on first use, again if its thread is gone)."""
        assert self.path is not None
        try:
            checkpointer = self._checkpointer
            if checkpointer is None or not checkpointer.alive():
                checkpointer = self._checkpointer = _Checkpointer(self.path)
            checkpointer.wake()
        except RuntimeError:  # no thread to be had: this connection checkpoints by itself (backstop)
            pass

    def close(self) -> None:
        """Close the connection (idempotent).

        The checkpointer's connection closes first, so this one, the last, checkpoints the WAL
        into the database file as SQLite does when its last connection closes.
        """
        with self.lock:
            if self._checkpointer is not None:
                self._checkpointer.stop()
                self._checkpointer = None
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None
            if self._engine is not None:
                self._engine.dispose()
                self._engine = None


class _Checkpointer:
    """A thread with its own connection running PASSIVE WAL checkpoints when woken.

    A PASSIVE checkpoint takes no lock writers wait for: it copies what no reader still needs
    and stops there. It never loses a commit: a committed transaction is in the WAL, and a crash
    (of either thread, or kill -9) leaves the WAL for the next opening to recover, as before.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._wanted = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="clearance-checkpoint", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread.is_alive()

    def wake(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self._path, timeout=0, isolation_level=None)
        except sqlite3.Error:
            return  # the committing connection's own checkpoints (BACKSTOP_PAGES) remain
        try:
            while True:
                self._wanted.wait()
                self._wanted.clear()
                if self._stopping:
                    return
                with contextlib.suppress(sqlite3.Error):  # busy or failed: the next wake tries again
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            conn.close()


def _begin_immediate(engine: Engine) -> None:
    # SQLAlchemy's recipe for SQLite: let it emit BEGIN, and make that BEGIN take the write
    # lock, so two processes migrating a new file at once run one after the other.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _connection_lost(exc: BaseException) -> bool:
    """Whether a PostgreSQL error means the connection is gone (restart, shutdown, network)."""
    import psycopg  # only reached on PostgreSQL

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)


def _why(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
