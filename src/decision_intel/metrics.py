"""Prometheus metrics: what only this daemon knows (redis_exporter covers the rest).

Opt-in: with `P35_METRICS_PORT` unset the service uses `Metrics` (every method a
no-op) and prometheus_client is never imported, so it costs neither memory nor
time. `start(settings)` builds `PrometheusMetrics` and serves `/metrics` from
prometheus_client's own thread, off the event loop. Labels stay low-cardinality:
decision, alert type and severity; never a reason or a symbol.
"""

from __future__ import annotations

from typing import Any

from decision_intel import __version__
from decision_intel.classify import DECISIONS
from decision_intel.settings import Settings
from decision_intel.store import FlushResult

FLUSH_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
SNAPSHOT_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class MetricsPortError(Exception):
    """The metrics address cannot be bound; the message names the setting."""


class Metrics:
    """No metrics: the service calls these unconditionally."""

    def flushed(self, result: FlushResult, *, size: int, seconds: float) -> None:
        pass

    def trimmed(self, n: int) -> None:
        pass

    def group(self, *, lag: int | None, pending: int, oldest_pending_age_s: float) -> None:
        pass

    def heartbeat(self, ts: float) -> None:
        pass

    def snapshot(self, seconds: float) -> None:
        pass

    def reconnected(self) -> None:
        pass

    def alert(self, kind: str, severity: str) -> None:
        pass


class PrometheusMetrics(Metrics):
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
        from prometheus_client.process_collector import ProcessCollector

        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)  # RSS, CPU, open fds of this process
        r = self.registry
        self.entries = Counter(
            "p35_entries", "Entries counted, by decision.", ["decision"], registry=r
        )
        self.invalid = Counter(
            "p35_invalid_entries", "Entries copied to quantum:p35:invalid.", registry=r
        )
        self.reclaimed = Counter(
            "p35_reclaimed_entries", "Entries counted after a claim or re-read.", registry=r
        )
        self.trimmed_entries = Counter(
            "p35_trimmed_entries", "Entries acknowledged uncounted: trimmed while pending.",
            registry=r,
        )  # fmt: skip
        self.excluded = Counter(
            "p35_excluded_entries",
            "Entries left out of a flush: claimed by another consumer or already acknowledged.",
            registry=r,
        )
        self.flush_seconds = Histogram(
            "p35_flush_duration_seconds", "Time of one flush (counts + XACK) as seen here.",
            buckets=FLUSH_SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "p35_batch_size_entries", "Entries per flush.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.lag = Gauge("p35_group_lag", "Entries not yet delivered to the group.", registry=r)
        self.pending = Gauge(
            "p35_group_pending", "Entries delivered to the group, not yet acknowledged.",
            registry=r,
        )  # fmt: skip
        self.oldest_pending = Gauge(
            "p35_oldest_pending_age_seconds", "Age of the oldest pending entry (0: none).",
            registry=r,
        )  # fmt: skip
        self.snapshot_seconds = Histogram(
            "p35_snapshot_duration_seconds", "Time to rebuild every window snapshot.",
            buckets=SNAPSHOT_SECONDS_BUCKETS, registry=r,
        )  # fmt: skip
        self.alerts = Counter(
            "p35_alerts", "Alerts raised, by type and severity.", ["type", "severity"], registry=r
        )
        self.reconnects = Counter(
            "p35_redis_reconnects", "Times Redis answered again after an outage.", registry=r
        )
        self.last_heartbeat = Gauge(
            "p35_last_heartbeat_timestamp_seconds", "Unix time of the last status heartbeat.",
            registry=r,
        )  # fmt: skip
        Info("p35_build", "Version of the daemon.", registry=r).info({"version": __version__})
        for decision in DECISIONS:
            self.entries.labels(decision)  # every decision shows, 0 until seen

    def flushed(self, result: FlushResult, *, size: int, seconds: float) -> None:
        for decision, n in result.decisions.items():
            self.entries.labels(decision).inc(n)
        self.invalid.inc(result.invalid)
        self.reclaimed.inc(result.reclaimed)
        self.trimmed_entries.inc(result.trimmed)
        self.excluded.inc(result.excluded)
        self.batch_size.observe(size)
        self.flush_seconds.observe(seconds)

    def trimmed(self, n: int) -> None:
        self.trimmed_entries.inc(n)

    def group(self, *, lag: int | None, pending: int, oldest_pending_age_s: float) -> None:
        if lag is not None:
            self.lag.set(lag)
        self.pending.set(pending)
        self.oldest_pending.set(oldest_pending_age_s)

    def heartbeat(self, ts: float) -> None:
        self.last_heartbeat.set(ts)

    def snapshot(self, seconds: float) -> None:
        self.snapshot_seconds.observe(seconds)

    def reconnected(self) -> None:
        self.reconnects.inc()

    def alert(self, kind: str, severity: str) -> None:
        self.alerts.labels(kind, severity).inc()


def start(settings: Settings) -> tuple[Metrics, Any]:
    """The metrics for this settings, and the HTTP server to shut down (None when off)."""
    if settings.metrics_port is None:
        return Metrics(), None
    from prometheus_client import start_http_server

    metrics = PrometheusMetrics()
    try:
        server, _thread = start_http_server(
            settings.metrics_port, addr=settings.metrics_addr, registry=metrics.registry
        )
    except OSError as exc:
        raise MetricsPortError(
            f"P35_METRICS_PORT={settings.metrics_port} on P35_METRICS_ADDR="
            f"{settings.metrics_addr}: {exc.strerror or exc}"
        ) from None
    return metrics, server
