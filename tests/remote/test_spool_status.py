"""`clearance.spool_status()`, the backlog an agent reports to the server's metrics, and the SDK's OTel gauges."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

import clearance

from .._wait import until
from ..conftest import REPO
from ..server.conftest import Server
from ._agent import connect


def reported_backlog(server: Server, agent: str) -> float | None:
    """The spool backlog the server's metrics show for `agent` (None: it has not reported)."""
    text = httpx.get(f"{server.base}/metrics", headers={"X-API-Key": server.admin}).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "clearance_remote_spool_backlog" and s.labels == {"agent": agent}:
                return float(s.value)
    return None


def test_embedded_mode_and_no_configuration_have_no_spool(configure: object) -> None:
    assert clearance.spool_status() == clearance.SpoolStatus(remote=False)
    configure()  # type: ignore[operator]
    status = clearance.spool_status()
    assert not status.remote and status.backlog == 0 and status.last_shipped_at is None


def test_the_status_follows_shipping_and_the_server_sees_the_backlog(server: Server, tmp_path: Path) -> None:
    connect(server, tmp_path)

    @clearance.guard
    def lookup(order_id: str) -> str:
        return order_id

    lookup("o1")
    clearance.flush()
    until(lambda: clearance.spool_status().backlog == 0, "o1 shipped")
    shipped = clearance.spool_status()
    assert shipped.remote and shipped.shipped >= 1 and shipped.last_error is None
    assert shipped.last_shipped_at is not None and shipped.oldest_unshipped_at is None
    assert reported_backlog(server, "refunds") == 0  # reported with the batch: nothing behind it

    server.kill()
    lookup("o2")
    lookup("o3")
    until(lambda: clearance.spool_status().last_error is not None, "a failed attempt")
    waiting = clearance.spool_status()
    assert waiting.backlog == 4 and waiting.oldest_unshipped_at is not None  # two decisions, two outcomes
    assert waiting.failures >= 1 and waiting.last_shipped_at == shipped.last_shipped_at

    server.start()
    until(lambda: clearance.spool_status().backlog == 0, "o2 and o3 shipped once the server is back")
    assert clearance.spool_status().last_shipped_at is not None
    assert reported_backlog(server, "refunds") == 0


def test_with_otel_the_spool_is_observable_gauges(server: Server, tmp_path: Path) -> None:
    # Its own process: a MeterProvider is set once per process.
    script = textwrap.dedent(
        f"""
        import json
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        import clearance

        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        clearance.configure(server_url={server.base!r}, api_key={server.agent!r}, spool_path={str(tmp_path / "s.db")!r})

        @clearance.guard
        def lookup(order_id: str) -> str:
            return order_id

        lookup("o1")
        clearance.flush()
        seen = {{}}
        for rm in reader.get_metrics_data().resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    seen[m.name] = [p.value for p in m.data.data_points]
        print(json.dumps(seen))
        clearance.shutdown()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "CLEARANCE_OTEL": "true"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["clearance.spool.backlog"] == [0]
    assert len(seen["clearance.spool.last_ship_age"]) == 1 and seen["clearance.spool.last_ship_age"][0] >= 0
    assert "clearance.spool.oldest_unshipped_age" not in seen or seen["clearance.spool.oldest_unshipped_age"] == []
