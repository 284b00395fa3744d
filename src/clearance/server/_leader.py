"""One process leads a background job across every worker and replica on one PostgreSQL.

The leader holds a session-level advisory lock on a connection of its own: the lock is the
connection's, so it is released when the process dies, is killed or loses the database (the
server ends the session; TCP keepalives find a vanished host within about half a minute), and
another process takes it on its next try. The lock's key is the job's name within the current
schema, so installations sharing a database in different schemas each elect their own.

Leadership saves work; it is not what keeps a job correct: every move the job makes happens
once however many processes make it (see `_sweeper`), so the moment two processes both believe
they lead (a connection lost but not yet noticed) is harmless.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger("clearance.server")


class Leadership:
    """Whether this process leads `job`; ask `lead()` before each pass of the job (not thread-safe).

    Args:
        conninfo: A libpq connection string or URL to the store's PostgreSQL.
        job: The job's name, e.g. `sweeper`.
    """

    def __init__(self, conninfo: str, job: str) -> None:
        self.conninfo, self.job = conninfo, job
        self._conn: psycopg.Connection[Any] | None = None
        self.leading = False

    def lead(self) -> bool:
        """True if this process leads the job now: it holds the lock, or has just taken it.

        Raises:
            psycopg.Error: The database cannot be reached (this process does not lead meanwhile).
        """
        import psycopg

        try:
            if self._conn is None or self._conn.closed:
                self.leading = False
                named = f"clearance {self.job} {os.getpid()}"  # which process leads, in pg_stat_activity
                self._conn = psycopg.connect(
                    self.conninfo,
                    autocommit=True,
                    application_name=named,
                    # Probe a silent connection after 10 s, every 5 s, give up after 3: a vanished
                    # peer frees the lock in about 25 s.
                    keepalives=1,
                    keepalives_idle=10,
                    keepalives_interval=5,
                    keepalives_count=3,
                )
            if self.leading:  # the lock lives as long as the session: a query that answers proves it
                self._conn.execute("SELECT 1")
            else:
                row = self._conn.execute(
                    "SELECT pg_try_advisory_lock(hashtextextended('clearance ' || %s || ' ' || current_schema(), 0))",
                    (self.job,),
                ).fetchone()
                self.leading = bool(row and row[0])
                if self.leading:
                    log.info("this process (%d) now leads the %s", os.getpid(), self.job)
        except psycopg.Error:
            self.close()
            raise
        return self.leading

    def close(self) -> None:
        """Give the lead up (closing the session releases the lock)."""
        self.leading = False
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except Exception as exc:  # closing a broken connection: nothing more to release
                log.debug("closing the %s's lock connection: %s", self.job, exc)
