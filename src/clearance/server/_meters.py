"""The server's Prometheus metrics: one registry per app, what the request paths count, and what a scrape reads.

Counters and histograms are this process's (sum them across replicas). The gauges read from
the store at each scrape (pending approvals, the webhook outbox, the chain head) are the whole
store's, the same on every replica (take `max`). A scrape never fails for the store: a read that
fails is counted in `clearance_store_errors_total{where="scrape"}` and its gauges are left out.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .._clock import now_us
from .._store import _gauges as gauges
from ._record_meter import RecordMeter

log = logging.getLogger("clearance.server")

BACKLOG_HEADER = "clearance-spool-backlog"
_BACKLOG = re.compile(r"[0-9]{1,12}")  # anything else (a sign, a space, 10^12 or more) is ignored
MAX_AGENTS = 10_000  # agents whose spool backlog is kept (they are keys an admin made; this is a backstop)
_CHECK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 259200)


class Meters:
    """Every metric of one app, in a registry of its own (apps in one process do not share series).

    Attributes:
        registry: What `/metrics` serves.
        state: The app's state: its store (`db`) and exporters (`sinks`) once it has started.
    """

    def __init__(self, state: Any) -> None:
        self.state = state
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._spools: dict[str, tuple[int, int]] = {}  # agent -> (backlog, reported at µs)
        self.registry.register(_ScrapeCollector(self))  # first: a scrape's own store error shows in that scrape
        self.store_errors = Counter(
            "clearance_store_errors",
            "Store operations that failed: in a request (answered 503) or while a scrape read its gauges.",
            ["where"],
            registry=self.registry,
        )
        for where in ("request", "scrape"):
            self.store_errors.labels(where=where)
        self.decisions = Counter(
            "clearance_decisions",
            "Decisions in the audit log (server checks and remote agents' own, once ingested) by effect and tool;"
            " a tool no active policy names is counted as 'other'.",
            ["effect", "tool"],
            registry=self.registry,
        )
        self.check_seconds = Histogram(
            "clearance_check_duration_seconds",
            "Time to answer a decision request (POST /v1/check, POST /policy/check), in seconds.",
            ["route"],
            buckets=_CHECK_BUCKETS,
            registry=self.registry,
        )
        self.approval_wait = Histogram(
            "clearance_approval_wait_seconds",
            "How long approvals waited for their outcome (approved, denied, cancelled, expired, allowed_on_timeout).",
            ["outcome"],
            buckets=_WAIT_BUCKETS,
            registry=self.registry,
        )
        self.webhooks = Counter(
            "clearance_webhook_deliveries",
            "Webhook delivery attempts by this process: delivered (2xx) or failed (retried later, or given up).",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("delivered", "failed"):
            self.webhooks.labels(outcome=outcome)
        self.channels = Counter(
            "clearance_channel_deliveries",
            "Approval channel messages (Slack, e-mail, …) sent or updated by this process, or failed (retried).",
            ["channel", "outcome"],
            registry=self.registry,
        )
        self.ingested = Counter(
            "clearance_ingested_events",
            "Records remote agents shipped to POST /v1/events: appended, duplicate (already stored) or refused.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in ("appended", "duplicate", "refused"):
            self.ingested.labels(outcome=outcome)

        self.checkpoints_refused = Counter(
            "clearance_checkpoints_refused",
            "Checkpoint signing passes this process refused: the chain no longer holds the newest checkpoint it"
            " saw (checkpoints deleted, records rewritten); see the error in the log.",
            registry=self.registry,
        )

    def sealing_refused(self) -> None:
        """Count a checkpoint the signer would not sign (`_sealer`)."""
        self.checkpoints_refused.inc()

    def sink(self) -> RecordMeter:
        """The event sink that counts decisions and approval waits from the audit log."""
        return RecordMeter(self.state.db, self.decisions, self.approval_wait)

    def ingest(self, agent: str, *, appended: int, duplicates: int, refused: int, backlog: str | None) -> None:
        """Count an ingested batch, and keep the spool backlog its agent reported (a header), if well-formed."""
        self.ingested.labels(outcome="appended").inc(appended)
        self.ingested.labels(outcome="duplicate").inc(duplicates)
        self.ingested.labels(outcome="refused").inc(refused)
        if backlog is None or not _BACKLOG.fullmatch(backlog):
            return
        with self._lock:
            if agent in self._spools or len(self._spools) < MAX_AGENTS:
                self._spools[agent] = (int(backlog), now_us())

    def webhook_attempted(self, delivered: bool) -> None:
        """Count one webhook delivery attempt."""
        self.webhooks.labels(outcome="delivered" if delivered else "failed").inc()

    def channel_attempted(self, channel: str, sent: bool) -> None:
        """Count one approval channel message sent (or updated), or failed."""
        self.channels.labels(channel=channel, outcome="sent" if sent else "failed").inc()

    def spools(self) -> list[tuple[str, int, int]]:
        """Each agent's last reported spool backlog: (agent, backlog, reported at µs)."""
        with self._lock:
            return [(agent, n, at) for agent, (n, at) in sorted(self._spools.items())]


class _ScrapeCollector(Collector):
    """What a scrape reads as it happens: the store's gauges, agents' spools, the exporters' backlogs."""

    def __init__(self, meters: Meters) -> None:
        self.meters = meters

    def describe(self) -> list[Any]:
        return []  # read at scrape time: nothing to describe up front (and no store read at registration)

    def collect(self) -> Iterator[Any]:
        now = now_us()
        yield from self._store(now)
        backlog = GaugeMetricFamily(
            "clearance_remote_spool_backlog",
            "Records waiting in a remote agent's spool, as the agent last reported with a shipped batch.",
            labels=["agent"],
        )
        reported = GaugeMetricFamily(
            "clearance_remote_spool_reported_timestamp_seconds",
            "When each remote agent last reported its spool backlog (Unix time).",
            labels=["agent"],
        )
        for agent, n, at in self.meters.spools():
            backlog.add_metric([agent], n)
            reported.add_metric([agent], at / 1e6)
        yield backlog
        yield reported
        yield from self._sinks()

    def _store(self, now: int) -> Iterator[Any]:
        db = getattr(self.meters.state, "db", None)
        if db is None:  # not started (or stopped): nothing to read
            return
        try:
            g = gauges.read(db)
        except Exception as exc:  # the store is down: the rest of the scrape still answers
            log.warning("metrics: the store's gauges could not be read: %s", exc)
            self.meters.store_errors.labels(where="scrape").inc()
            return
        yield _gauge("clearance_approvals_pending", "Approvals waiting for a decision.", g.pending_approvals)
        yield _gauge(
            "clearance_approval_oldest_pending_age_seconds",
            "How long the oldest pending approval has waited (0: none waits).",
            _age(now, g.oldest_pending_us),
        )
        yield _gauge(
            "clearance_outbox_pending", "Webhooks waiting to be delivered (retries included).", g.outbox_pending
        )
        yield _gauge(
            "clearance_outbox_oldest_pending_age_seconds",
            "How long the oldest undelivered webhook has waited (0: none waits).",
            _age(now, g.oldest_outbox_us),
        )
        yield _gauge("clearance_outbox_failed", "Webhooks given up after their last attempt.", g.outbox_failed)
        yield _gauge("clearance_audit_chain_head", "The audit log's newest chain position.", g.chain_head)

    def _sinks(self) -> Iterator[Any]:
        backlog = GaugeMetricFamily(
            "clearance_sink_backlog",
            "Committed records an event sink (an exporter, or `metrics` itself) has not delivered yet,"
            " from the process that delivers it (one per sink name and store)",
            labels=["sink"],
        )
        for running in (getattr(self.meters.state, "sinks", None), getattr(self.meters.state, "metrics_sinks", None)):
            if running is None:
                continue
            try:
                statuses = running.status()
            except Exception as exc:
                log.warning("metrics: the event sinks' backlog could not be read: %s", exc)
                self.meters.store_errors.labels(where="scrape").inc()
                continue
            for status in statuses:
                if not status.standby:  # another process delivers it: this one's position is stale
                    backlog.add_metric([status.name], status.backlog)
        yield backlog


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _age(now: int, since: int | None) -> float:
    return 0.0 if since is None else max(0, now - since) / 1e6
