"""The server under load, and the remote SDK against it. Prints figures; asserts nothing.

- `/v1/check` throughput and latency with 1, 8 and 32 concurrent clients, on SQLite and on
  PostgreSQL (one `clearance serve` process; the clients share its 2 cores).
- The same on PostgreSQL with `clearance serve --workers 1, 2 and 4` at 8 and 32 clients,
  each row run `--repeat` times: the median and the spread (min-max) of checks/s, since the
  cores are shared with the load generator (and, here, with whatever else the machine runs).
- The remote SDK's overhead on an allowed call (decided in-process, record spooled), next to
  the embedded mode's, and ardenpy 0.5 (one HTTP round trip a call) against Clearance's
  compatible endpoints on the same policy.

    .venv/bin/python bench/server.py [--seconds 5] [--repeat 3] [--pg postgresql+psycopg://…]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import httpx
import orjson
import psycopg
import uvloop

import clearance
from clearance._store import Database
from clearance._store import _keys as keys

PG = os.environ.get("CLEARANCE_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
POLICY = "version: 1\ntools:\n  issue_refund:\n    rules:\n" + "".join(
    f"      - {{id: r{i}, when: 'args.amount > {10000 + i}.0', effect: block}}\n" for i in range(10)
)
ARGS = {"order_id": "A-10042", "amount": 125.5}


class Server:
    def __init__(self, url: str, workers: int = 1) -> None:
        db = Database(url)
        self.keys = {
            name: keys.create(db, name=name, scopes=scopes, agent=agent, environment="test", created_by="bench")[1]
            for name, scopes, agent in (("admin", ["admin"], None), ("agent", ["agent"], "bench"))
        }
        db.close()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clearance.cli", "serve", "--port", str(self.port), "--database-url", url]
            + ["--workers", str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        answered: set[str] = set()  # every worker serves before the load starts
        deadline = time.monotonic() + 300
        while len(answered) < workers and time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.base}/readyz")
                if r.status_code == 200:
                    answered.add(r.json().get("process", "the only one"))
            except httpx.TransportError:
                time.sleep(0.05)
        a = {"X-API-Key": self.keys["admin"]}
        rev = httpx.post(f"{self.base}/v1/policies", headers=a, json={"text": POLICY}).json()["id"]
        httpx.post(f"{self.base}/v1/policies/{rev}/activate", headers=a, json={})

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


async def load(base: str, key: str, clients: int, seconds: float) -> tuple[float, float, float]:
    """Keep `clients` keep-alive connections busy for `seconds`; checks/s, p50 and p99 in ms.

    A bare HTTP/1.1 client on asyncio streams (tens of microseconds a request), so the load
    generator takes as little as possible of the two cores it shares with the server.
    """
    host, port = base.removeprefix("http://").split(":")
    body = orjson.dumps({"tool": "issue_refund", "args": ARGS, "session_id": "bench"})
    request = (
        f"POST /v1/check HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    stop = time.monotonic() + seconds

    async def one() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.monotonic() < stop:
                t = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                if not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"the server answered {head.splitlines()[0]!r}")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - t)
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(one() for _ in range(clients)))
    elapsed = time.monotonic() - started
    latencies.sort()
    return len(latencies) / elapsed, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000


def per_call_us(fn: Any, n: int) -> float:
    for _ in range(min(200, n)):
        fn()
    times = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - t)
    return statistics.median(times) / 1000


def sdk_overheads(server: Server, tmp: Path, n: int) -> None:
    def issue_refund(order_id: str, amount: float) -> str:
        return order_id

    bare = per_call_us(lambda: issue_refund(**ARGS), n)
    (tmp / "p.yaml").write_text(POLICY)
    clearance.configure(policy=str(tmp / "p.yaml"), database_url=str(tmp / "embedded.db"))
    governed = clearance.guard_tool("issue_refund", issue_refund)
    embedded = per_call_us(lambda: governed(**ARGS), n)
    clearance.shutdown()
    clearance.configure(server_url=server.base, api_key=server.keys["agent"], spool_path=str(tmp / "spool.db"))
    remote = per_call_us(lambda: governed(**ARGS), n)
    clearance.shutdown()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import ardenpy

        ardenpy.configure(api_key=server.keys["agent"], api_url=server.base, environment="test")
        arden_guarded = ardenpy.guard_tool("issue_refund", issue_refund)
        arden = per_call_us(lambda: arden_guarded(**ARGS), max(200, n // 10))
    print(f"guarded allowed call, median overhead over the bare call ({bare:.2f} us):")
    print(f"  embedded SDK (SQLite commit)        {embedded - bare:9.1f} us")
    print(
        f"  remote SDK (local decision, spool)  {remote - bare:9.1f} us   ({(remote - bare) / (embedded - bare):.2f}x "
        "embedded; target <= 2x)"
    )
    print(
        f"  ardenpy 0.5 -> Clearance endpoints  {arden - bare:9.1f} us   (an HTTP round trip a call; "
        f"{(arden - bare) / (remote - bare):.0f}x the remote SDK)"
    )


def workers_rows(url: str, seconds: float, repeat: int) -> None:
    """Checks/s on PostgreSQL at 1, 2 and 4 worker processes: median and min-max of `repeat` runs."""
    print(
        f"POST /v1/check on PostgreSQL, clearance serve --workers N; median of {repeat} runs of {seconds:g} s"
        f" (min-max); {os.cpu_count()} cores shared by the workers, PostgreSQL and the load generator"
    )
    for workers in (1, 2, 4):
        server = Server(url, workers)
        try:
            for clients in (8, 32):
                runs = [uvloop.run(load(server.base, server.keys["agent"], clients, seconds)) for _ in range(repeat)]
                rates, p50s, p99s = zip(*runs, strict=True)
                print(
                    f"  {workers} worker{'s' if workers > 1 else ' '} {clients:>2} clients"
                    f"  {statistics.median(rates):7.0f} checks/s ({min(rates):.0f}-{max(rates):.0f})"
                    f"   p50 {statistics.median(p50s):6.2f} ms   p99 {statistics.median(p99s):6.2f} ms"
                    f" ({min(p99s):.1f}-{max(p99s):.1f})"
                )
        finally:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--pg", default=PG)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each --workers row")
    o = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        plain = o.pg.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            stores = (
                ("SQLite", str(Path(tmp) / "server.db")),
                ("PostgreSQL", f"{o.pg}?options=-csearch_path%3D{schema}"),
            )
            print(
                f"POST /v1/check, 10 rules, decision recorded; {o.seconds:g} s per row"
                " (target >= 2,000/s, p99 <= 25 ms)"
            )
            for label, url in stores:
                server = Server(url)
                try:
                    for clients in (1, 8, 32):
                        rate, p50, p99 = uvloop.run(load(server.base, server.keys["agent"], clients, o.seconds))
                        print(
                            f"  {label:<10} {clients:>2} clients  {rate:7.0f} checks/s"
                            f"   p50 {p50:6.2f} ms   p99 {p99:6.2f} ms"
                        )
                    if label == "SQLite":
                        sdk_overheads(server, Path(tmp), o.calls)
                finally:
                    server.stop()
            workers_rows(stores[1][1], o.seconds, o.repeat)
        finally:
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


if __name__ == "__main__":
    main()
