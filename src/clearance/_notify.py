"""Waking a waiting agent the moment a human decides, across processes, without polling.

The waiter binds a UDP socket on 127.0.0.1 and writes its address on the approval row; whoever
decides sends it one datagram after committing. The datagram is only a hint — the waiter then
reads the approval from the store — so a forged or lost datagram cannot change an outcome, and
a slow re-check (every `FALLBACK_SECONDS`) covers a lost one.

On a manual clock (tests) the timeout is in the clock's seconds: the waiter sleeps until woken
or until the clock moves (each move sends it a tick), and the caller re-checks its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from . import _clock

FALLBACK_SECONDS = 5.0
TICK = b"\x00tick"  # the clock moved: only a manual clock sends it, and it is never a wake-up


class Waiter:
    """A wake-up address for one waiting call."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        host, port = self._sock.getsockname()
        self.address = f"udp:{host}:{port}"
        self.wakeups = 0
        self._clock = _clock.current()
        self._unlisten = self._clock.on_advance(self._tick)

    def wait(self, timeout: float) -> bool:
        """Block until woken or `timeout` seconds pass (a manual clock: until it moves); True when woken."""
        self._sock.settimeout(None if self._clock.manual else max(timeout, 0.0))
        try:
            with self._clock.parked("approval"):
                first = self._sock.recv(256)
        except (TimeoutError, BlockingIOError):
            return False
        finally:
            self._sock.setblocking(False)
        return self._woken(first)

    async def wait_async(self, timeout: float) -> bool:
        """Await a wake-up without blocking the event loop; True when woken."""
        loop = asyncio.get_running_loop()
        try:
            with self._clock.parked("approval"):
                received = loop.sock_recv(self._sock, 256)
                first = await (received if self._clock.manual else asyncio.wait_for(received, max(timeout, 0.0)))
        except TimeoutError:
            return False
        return self._woken(first)

    def _tick(self) -> None:
        wake(self.address, TICK.decode())

    def _woken(self, first: bytes) -> bool:
        """Read what else is queued; True (and counted) when any datagram was a wake-up."""
        woken = first != TICK
        with contextlib.suppress(BlockingIOError, OSError):
            while True:
                woken |= self._sock.recv(256) != TICK
        self.wakeups += woken
        return woken

    def close(self) -> None:
        """Release the socket."""
        self._unlisten()
        self._sock.close()

    def __enter__(self) -> Waiter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def wake(address: str | None, message: str = "decided") -> bool:
    """Send a wake-up to a waiter's address; False when there is none or it is not reachable."""
    if not address or not address.startswith("udp:"):
        return False
    _, host, port = address.split(":", 2)
    if host != "127.0.0.1":  # only ever loopback, whatever the row says
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(message.encode()[:200], (host, int(port)))
    except (OSError, ValueError):
        return False
    return True
