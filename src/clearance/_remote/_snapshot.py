"""Keeping the agent's policy in step with the server.

At start the snapshot is fetched (or, when the server cannot be reached, the last good one is
read from disk). A background thread then long-polls the server, which answers the moment
another revision is activated; the new policy is compiled and swapped in atomically, and saved
as the last good snapshot. A snapshot that does not compile is never swapped in.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

from .._retry import retrying
from ..errors import ConfigurationError, PolicyError, ServerError
from ..policy import Policy, parse_policy
from ._client import Client

log = logging.getLogger("clearance.remote")
_LONG_POLL = 30.0
_MAX_BACKOFF = 30.0


class PolicySync:
    """The current policy of a remote agent; `policy` is swapped atomically."""

    def __init__(self, client: Client, cache: Path) -> None:
        self.client = client
        self.cache = cache
        self.policy: Policy
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Load the policy (server first, else the last good snapshot) and keep it in step.

        Raises:
            ConfigurationError: The server cannot be reached and no snapshot was saved before.
        """
        try:
            fetched = self._fetch(None, wait=0)
            assert fetched is not None
            self.policy = fetched
        except (ServerError, PolicyError) as exc:
            cached = self._load()
            if cached is None:
                raise ConfigurationError(
                    f"no policy: {exc}; and no last good snapshot at {self.cache} (calls would fail closed)"
                ) from None
            log.warning("deciding from the last good snapshot %s (%s): %s", cached.revision, self.cache, exc)
            self.policy = cached
        self._thread = threading.Thread(target=self._run, name="clearance-policy-sync", daemon=True)
        self._thread.start()

    def _fetch(self, etag: str | None, *, wait: float) -> Policy | None:
        headers = {"If-None-Match": f'"{etag}"'} if etag else None
        r = self.client.call(
            "GET",
            "/v1/policy/snapshot",
            params={"wait": wait} if wait else None,
            headers=headers,
            timeout=wait + 10,
            ok=(200, 304),
        )
        if r.status_code == 304:
            return None
        data = r.json()
        policy = parse_policy(data["text"], data["source"])  # raises PolicyError: keep the old one
        if policy.revision != data["revision"]:
            raise PolicyError([])  # the text does not hash to the revision it claims
        self._save(data)
        return policy

    def _save(self, data: dict[str, str]) -> None:
        tmp = self.cache.with_suffix(".tmp")
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({k: data[k] for k in ("revision", "content_hash", "source", "text")}))
            os.replace(tmp, self.cache)  # atomic: a crash leaves the old snapshot or the new one
        except OSError as exc:
            log.warning("cannot save the policy snapshot to %s: %s", self.cache, exc)

    def _load(self) -> Policy | None:
        try:
            data = json.loads(self.cache.read_text())
            policy = parse_policy(data["text"], data["source"])
        except (OSError, ValueError, KeyError, PolicyError):
            return None
        return policy if policy.revision == data.get("revision") else None

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.client.close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            fetch = retrying(
                (ServerError, PolicyError),
                most=_MAX_BACKOFF,
                stop=self._stop,
                log=log,
                what=f"policy sync (still deciding from {self.policy.revision})",
            )
            try:
                fresh = fetch(self._fetch, self.policy.revision, wait=_LONG_POLL)
            except (ServerError, PolicyError):
                return  # closing: the client was closed under the long poll, or a retry's wait
            if fresh is not None and not self._stop.is_set():
                self.policy = fresh  # one reference assignment: calls see the old or the new, whole
                self.swaps += 1
                log.info("policy %s is now active", fresh.revision)

    def close(self) -> None:
        """Stop syncing.

        The thread closes its own client when its long poll in flight returns (at once if the
        server is stopping; it is a daemon either way), so no connection is left open.
        """
        self._stop.set()
        if self._thread is None:
            self.client.close()
        else:
            self._thread.join(timeout=0.2)
