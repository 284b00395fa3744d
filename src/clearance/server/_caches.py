"""Short-lived caches on the request path: who a key is, and which policy an agent has.

Both are cleared by the changes they depend on (a revocation through this server, a policy
change announced in this process or by another replica's NOTIFY) and expire after `TTL`
seconds anyway, which bounds how late a change made elsewhere can be seen.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from starlette.concurrency import run_in_threadpool

from .._clock import monotonic

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
        self._generation = 0  # bumped by clear(): a load that started before it is not kept
        self._loading: dict[K, asyncio.Task[V]] = {}  # touched only on the event loop

    def peek(self, key: K) -> tuple[bool, V | None]:
        """`(True, value)` for a live entry, else `(False, None)`; never loads."""
        with self._lock:
            hit = self._items.get(key)
        if hit is not None and hit[0] > monotonic():
            return True, hit[1]
        return False, None

    def get(self, key: K, load: Callable[[], V]) -> V:
        """The cached value, or `load()`ed and kept."""
        found, value = self.peek(key)
        if found:
            return value  # type: ignore[return-value]
        with self._lock:
            generation = self._generation
        value = load()
        self._keep(key, value, generation)
        return value

    async def aget(self, key: K, load: Callable[[], V]) -> V:
        """`get` for the event loop: `load` runs on a worker thread.

        It runs once for all the requests that miss the same entry at the same moment, as they
        all do when it expires.
        """
        found, value = self.peek(key)
        if found:
            return value  # type: ignore[return-value]
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.ensure_future(self._load(key, load))
        return await asyncio.shield(task)

    async def _load(self, key: K, load: Callable[[], V]) -> V:
        try:
            with self._lock:
                generation = self._generation
            value = await run_in_threadpool(load)
            self._keep(key, value, generation)
            return value
        finally:
            self._loading.pop(key, None)

    def _keep(self, key: K, value: V, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return  # cleared while loading: what was loaded may already be stale
            if len(self._items) >= _MAX:
                self._items.clear()
            self._items[key] = (monotonic() + self.ttl, value)

    def clear(self) -> None:
        """Forget everything, including what is being loaded right now."""
        with self._lock:
            self._items.clear()
            self._generation += 1


def fingerprint(secret: str) -> str:
    """A cache key for a presented API key that is not the key itself."""
    return hashlib.sha256(secret.encode()).hexdigest()
