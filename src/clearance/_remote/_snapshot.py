"""Keeping the agent's policy, grants and shadow policy in step with the server.

At start the snapshot (`v=2`) is fetched (or, when the server cannot be reached, the last good
one is read from disk). A background thread then long-polls the server, which answers the
moment the snapshot changes: another revision activated, a grant given, revoked, used up or
expired, a shadow activated or cleared. The new snapshot is compiled and swapped in atomically,
as one `Synced`, and its policies saved as the last good snapshot. A policy that does not compile
is never swapped in; a shadow that does not compile is left out (it is never enforced anyway).

Grants are never saved: an agent that starts without the server has none (calls they would
cover go to the server, and fail closed as before). A server without `v=2` answers v1, with no
grants or shadow; an old cached file without a shadow loads as before.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._retry import retrying
from ..errors import ConfigurationError, PolicyError, ServerError
from ..policy import Policy, parse_policy
from ._client import Client
from ._grants import HeldGrants

log = logging.getLogger("clearance.remote")
_LONG_POLL = 30.0
_MAX_BACKOFF = 30.0
_POLICY_KEYS = ("revision", "content_hash", "source", "text")


@dataclass(frozen=True)
class Synced:
    """One snapshot, whole: what calls are decided from. Swapped as one reference.

    Attributes:
        policy: The enforced policy.
        grants: This agent's grants it may use on its own.
        shadow: The policy decided in shadow, recorded beside each call, never enforced.
        etag: The server's ETag of it (None: read from disk, not fetched yet).
    """

    policy: Policy
    grants: HeldGrants
    shadow: Policy | None
    etag: str | None


class PolicySync:
    """The current snapshot of a remote agent; `state` is swapped atomically."""

    def __init__(self, client: Client, cache: Path) -> None:
        self.client = client
        self.cache = cache
        self.state: Synced
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def policy(self) -> Policy:
        """The enforced policy now."""
        return self.state.policy

    def start(self) -> None:
        """Load the snapshot (server first, else the last good one on disk) and keep it in step.

        Raises:
            ConfigurationError: The server cannot be reached and no snapshot was saved before.
        """
        try:
            fetched = self._fetch(None, wait=0)
            assert fetched is not None
            self.state = fetched
        except (ServerError, PolicyError) as exc:
            cached = self._load()
            if cached is None:
                raise ConfigurationError(
                    f"no policy: {exc}; and no last good snapshot at {self.cache} (calls would fail closed)"
                ) from None
            log.warning("deciding from the last good snapshot %s (%s): %s", cached.policy.revision, self.cache, exc)
            self.state = cached
        self._thread = threading.Thread(target=self._run, name="clearance-policy-sync", daemon=True)
        self._thread.start()

    def _fetch(self, etag: str | None, *, wait: float) -> Synced | None:
        """The server's snapshot when it differs from `etag` (None: not modified).

        Raises:
            ServerError: Not reached, or it answered what is not a snapshot.
            PolicyError: Its policy does not compile, or does not hash to the revision it claims.
        """
        headers = {"If-None-Match": f'"{etag}"'} if etag else None
        r = self.client.call(
            "GET",
            "/v1/policy/snapshot",
            params={"v": 2, **({"wait": wait} if wait else {})},
            headers=headers,
            timeout=wait + 10,
            ok=(200, 304),
        )
        if r.status_code == 304:
            return None
        try:
            data = r.json()
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in _POLICY_KEYS):
            raise ServerError("the server answered a policy snapshot this agent cannot read", status=r.status_code)
        before = getattr(self, "state", None)
        policy = _same(before.policy if before else None, data) or _compiled(data)  # PolicyError: keep the old
        shadow = _shadow(before.shadow if before else None, data.get("shadow"))
        grants = HeldGrants.read(data.get("grants"))
        if before is None or (policy, shadow) != (before.policy, before.shadow):
            self._save(data, shadow)
        returned = r.headers.get("etag", "").strip('"')
        return Synced(policy, grants, shadow, returned or str(data["revision"]))

    def _save(self, data: dict[str, Any], shadow: Policy | None) -> None:
        tmp = self.cache.with_suffix(".tmp")
        saved: dict[str, Any] = {k: data[k] for k in _POLICY_KEYS}
        if shadow is not None:
            saved["shadow"] = {k: data["shadow"][k] for k in _POLICY_KEYS}
        try:
            self.cache.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(saved))
            os.replace(tmp, self.cache)  # atomic: a crash leaves the old snapshot or the new one
        except OSError as exc:
            log.warning("cannot save the policy snapshot to %s: %s", self.cache, exc)

    def _load(self) -> Synced | None:
        try:
            data = json.loads(self.cache.read_text())
            if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in _POLICY_KEYS):
                return None
            policy = _compiled(data)
        except (OSError, ValueError, PolicyError, RecursionError):
            return None
        return Synced(policy, HeldGrants(), _shadow(None, data.get("shadow")), None)

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
                what=f"policy sync (still deciding from {self.state.policy.revision})",
            )
            try:
                fresh = fetch(self._fetch, self.state.etag, wait=_LONG_POLL)
            except (ServerError, PolicyError):
                return  # closing: the client was closed under the long poll, or a retry's wait
            if fresh is not None and not self._stop.is_set():
                before, self.state = self.state, fresh  # one reference: calls see the old or the new, whole
                self.swaps += 1
                if fresh.policy is not before.policy:
                    log.info("policy %s is now active", fresh.policy.revision)

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


def _compiled(data: dict[str, Any]) -> Policy:
    """The policy of a snapshot (or cached file) `data`.

    Raises:
        PolicyError: It does not compile, or does not hash to the revision it claims.
    """
    try:
        policy = parse_policy(data["text"], data["source"])
    except RecursionError:
        raise PolicyError([]) from None  # nested past what the parser follows
    if policy.revision != data["revision"]:
        raise PolicyError([])  # the text does not hash to the revision it claims
    return policy


def _same(policy: Policy | None, data: dict[str, Any]) -> Policy | None:
    """`policy` when `data` holds it again (not compiled twice: grants change more often)."""
    if policy is not None and policy.revision == data["revision"] and policy.source_text == data["text"]:
        return policy
    return None


def _shadow(before: Policy | None, data: object) -> Policy | None:
    """The shadow policy of a snapshot's `shadow` field; None when absent or unreadable (logged)."""
    if data is None:
        return None
    try:
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in _POLICY_KEYS):
            raise TypeError("not a policy")
        return _same(before, data) or _compiled(data)
    except (PolicyError, TypeError) as exc:
        log.warning("the shadow policy of the snapshot cannot be used (%s); calls are recorded without it", exc)
        return None
