"""The SDK's leases on the approved calls it claimed: renewed while they run.

One thread per process renews every claim it holds each `HEARTBEAT_SECONDS` (in the store,
`_claims.beat`; in remote mode, through the server's claim endpoint) until the call's outcome is
committed (the renewal then finds nothing to renew) or the process stops. A process killed
inside the tool stops renewing: once the lease is older than the grace, the claim is shown as
claimed by a dead process and waits for a person (`_store._claims`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from .._store import _claims as claims
from ..errors import ServerError, StoreError

log = logging.getLogger("clearance")


class Leases:
    """The claims this process holds, and the thread that renews them (started with the first).

    Args:
        renew: Renews the lease of an approval's claim; False when there is none left to renew
            (its call finished, or a person released it).
    """

    def __init__(self, renew: Callable[[str], bool]) -> None:
        self._renew = renew
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, approval_id: str) -> None:
        """Renew the lease of `approval_id`'s claim (just made) until its call has finished."""
        with self._lock:
            self._held.add(approval_id)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._run, name="clearance-claim-leases", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(claims.HEARTBEAT_SECONDS):
            with self._lock:
                held = sorted(self._held)
            for approval_id in held:
                try:
                    still = self._renew(approval_id)
                except (StoreError, ServerError) as exc:  # the next renewal tries again, well within the grace
                    log.warning("the lease of the claim of approval %s could not be renewed: %s", approval_id, exc)
                    continue
                if not still:  # finished (or released by a person): nothing to renew any more
                    with self._lock:
                        self._held.discard(approval_id)

    def close(self) -> None:
        """Stop renewing (the claims' leases then run out, as a process's that died)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
