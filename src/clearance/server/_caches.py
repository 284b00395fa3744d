"""Short-lived caches on the request path: who a key is, and which policy an agent has.

Both are cleared by the changes they depend on (a revocation through this server, a policy
change announced in this process or by another replica's NOTIFY) and expire after `TTL`
seconds anyway, which bounds how late a change made elsewhere can be seen.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
TTL = 1.0
_MAX = 10_000


class TTLCache(Generic[K, V]):
    """A small thread-safe cache whose entries expire after `ttl` seconds."""

    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self._items: dict[K, tuple[float, V]] = {}
        self._lock = threading.Lock()

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The cached value, or `load()`ed and kept."""
        now = time.monotonic()
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        value = load()
        with self._lock:
            if len(self._items) >= _MAX:
                self._items.clear()
            self._items[key] = (now + self.ttl, value)
        return value

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()


def fingerprint(secret: str) -> str:
    """A cache key for a presented API key that is not the key itself."""
    return hashlib.sha256(secret.encode()).hexdigest()
