"""The request-path caches: one load for a crowd of misses, and no stale value kept after a clear."""

from __future__ import annotations

import asyncio
import threading

from clearance._clock import ManualClock
from clearance.server._caches import TTLCache


def test_a_crowd_of_misses_loads_once() -> None:
    cache: TTLCache[str, int] = TTLCache()
    loads = 0

    def load() -> int:
        nonlocal loads
        loads += 1
        return 42

    async def main() -> list[int]:  # all 50 miss before the load can even start on its thread
        return await asyncio.gather(*(cache.aget("k", load) for _ in range(50)))

    assert asyncio.run(main()) == [42] * 50
    assert loads == 1
    assert cache.peek("k") == (True, 42)


def test_entries_expire(clock: ManualClock) -> None:
    cache: TTLCache[str, int] = TTLCache(ttl=0.05)
    values = iter(range(10))
    assert asyncio.run(cache.aget("k", lambda: next(values))) == 0
    clock.advance(0.04)
    assert asyncio.run(cache.aget("k", lambda: next(values))) == 0
    clock.advance(0.02)
    assert cache.peek("k") == (False, None)
    assert asyncio.run(cache.aget("k", lambda: next(values))) == 1


def test_a_clear_during_a_load_keeps_the_loaded_value_out() -> None:
    cache: TTLCache[str, str] = TTLCache()
    loading, release = threading.Event(), threading.Event()

    def load() -> str:
        loading.set()
        release.wait(5)
        return "old revision"

    async def main() -> str:
        task = asyncio.ensure_future(cache.aget("policy", load))
        await asyncio.get_running_loop().run_in_executor(None, loading.wait, 5)
        cache.clear()  # a new revision was activated while the old one was being read
        release.set()
        return await task

    assert asyncio.run(main()) == "old revision"  # the request in flight gets what it read…
    assert cache.peek("policy") == (False, None)  # …but the next one reads again
    assert cache.get("policy", lambda: "new revision") == "new revision"


def test_a_failed_load_reaches_every_waiter_and_is_not_kept() -> None:
    cache: TTLCache[str, int] = TTLCache()

    def load() -> int:
        raise RuntimeError("store down")

    async def main() -> list[BaseException | int]:
        return await asyncio.gather(*(cache.aget("k", load) for _ in range(5)), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in results)
    assert cache.peek("k") == (False, None)
    assert asyncio.run(cache.aget("k", lambda: 7)) == 7


def test_a_zero_ttl_never_serves_from_memory() -> None:
    cache: TTLCache[str, int] = TTLCache(ttl=0.0)
    values = iter(range(10))
    assert cache.get("k", lambda: next(values)) == 0
    assert cache.get("k", lambda: next(values)) == 1
