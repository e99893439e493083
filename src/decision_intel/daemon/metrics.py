"""Prometheus metrics: what only this daemon knows (redis_exporter covers the rest).

Opt-in: with `P35_METRICS_PORT` unset the service uses `Metrics` (every method a
no-op) and prometheus_client is never imported, so it costs neither memory nor
time. `build(settings)` makes `PrometheusMetrics`, and `serve()` serves `/metrics` from the
daemon's own event loop: no thread per connection (the unit allows 32 tasks), at
most MAX_CONNECTIONS at once, a timeout on every request, 404 for any other path,
and nothing it does can hold up the heartbeat or the shutdown. Labels stay
low-cardinality: decision, alert type and severity; never a reason or a symbol, except
`p35_alert_open`, whose subject (a gate or a symbol, sanitized and capped by the rules)
is what an alert rule forwards: at most MAX_OPEN_ALERT_SERIES of them, the highest
severities first.

The `process_*` series come from /proc/self only: under the unit's
`ProcSubset=pid`, /proc/stat is hidden and prometheus_client's own process
collector switches itself off.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import time
from collections.abc import Iterator
from typing import Any

from decision_intel import __version__
from decision_intel.model.alerts import ALERT_TYPES, SEVERITY_RANK
from decision_intel.model.classify import DECISIONS
from decision_intel.model.losses import LOSS_CAUSES
from decision_intel.settings import Settings
from decision_intel.store.flush import FlushResult

FLUSH_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
SNAPSHOT_SECONDS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MAX_OPEN_ALERT_SERIES = 200
"""p35_alert_open series at most; open alerts past it are left out, lowest severity first."""
OPEN_ALERTS_FRESH_S = 120.0
"""p35_alert_open shows what this daemon last read of the open-alert state for this long.
Only the daemon that evaluates reads it; another one's older view is dropped, so a
Prometheus taking the max over instances never keeps an alert another daemon resolved."""
SEVERITY_ORDER = {"CRITICAL": 0, "HIGH": 1, "MEDIUM": 2}

OpenAlerts = dict[tuple[str, str, str], str]
"""(type, window, subject) -> severity of the alerts open in Redis's state."""


class MetricsPortError(Exception):
    """The metrics address cannot be bound; the message names the setting."""


class Metrics:
    """No metrics: the service calls these unconditionally."""

    def flushed(self, result: FlushResult, *, size: int, seconds: float) -> None:
        pass

    def trimmed(self, n: int) -> None:
        pass

    def audited(self, lost: dict[str, int], headroom_s: float | None, foreign: int) -> None:
        pass

    def group(self, *, lag: int | None, pending: int, oldest_pending_age_s: float) -> None:
        pass

    def heartbeat(self, ts: float) -> None:
        pass

    def snapshot(self, seconds: float) -> None:
        pass

    def reconnected(self) -> None:
        pass

    def alert(self, alert_type: str, severity: str) -> None:
        pass

    def alerts_open(self, open_alerts: OpenAlerts) -> None:
        pass


class PrometheusMetrics(Metrics):
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(ProcessCollector())  # RSS, CPU, open fds of this process
        self.open_alerts = OpenAlertsCollector()
        self.registry.register(self.open_alerts)
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
            "p35_trimmed_entries",
            "Entries acknowledged uncounted: trimmed while pending.",
            registry=r,
        )
        self.replayed = Counter(
            "p35_replayed_entries",
            "Entries delivered again after the group moved back: acknowledged, not counted.",
            registry=r,
        )
        self.lost = Counter(
            "p35_lost_entries",
            "Entries that left the group uncounted, by cause (trimmed, acked_elsewhere, "
            "skipped); found by this daemon's audit turns.",
            ["cause"],
            registry=r,
        )
        self.headroom = Gauge(
            "p35_stream_headroom_seconds",
            "Age of the stream's oldest entry: how long p35 may stop before entries are "
            "trimmed unread.",
            registry=r,
        )
        self.foreign_consumers = Gauge(
            "p35_foreign_consumers",
            "Consumers of the group that are not p35.",
            registry=r,
        )
        self.excluded = Counter(
            "p35_excluded_entries",
            "Entries left out of a flush: claimed by another consumer or already acknowledged.",
            registry=r,
        )
        self.flush_seconds = Histogram(
            "p35_flush_duration_seconds",
            "Time of one flush (counts + XACK) as seen here.",
            buckets=FLUSH_SECONDS_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "p35_batch_size_entries", "Entries per flush.", buckets=BATCH_SIZE_BUCKETS, registry=r
        )
        self.lag = Gauge("p35_group_lag", "Entries not yet delivered to the group.", registry=r)
        self.pending = Gauge(
            "p35_group_pending",
            "Entries delivered to the group, not yet acknowledged.",
            registry=r,
        )
        self.oldest_pending = Gauge(
            "p35_oldest_pending_age_seconds",
            "Age of the oldest pending entry (0: none).",
            registry=r,
        )
        self.snapshot_seconds = Histogram(
            "p35_snapshot_duration_seconds",
            "Time to rebuild every window snapshot.",
            buckets=SNAPSHOT_SECONDS_BUCKETS,
            registry=r,
        )
        self.alerts = Counter(
            "p35_alerts", "Alerts raised, by type and severity.", ["type", "severity"], registry=r
        )
        self.reconnects = Counter(
            "p35_redis_reconnects", "Times Redis answered again after an outage.", registry=r
        )
        self.last_heartbeat = Gauge(
            "p35_last_heartbeat_timestamp_seconds",
            "Unix time of the last status heartbeat.",
            registry=r,
        )
        Info("p35_build", "Version of the daemon.", registry=r).info({"version": __version__})
        for decision in DECISIONS:
            self.entries.labels(decision)  # every decision shows, 0 until seen
        for cause in LOSS_CAUSES:
            self.lost.labels(cause)
        for alert_type in ALERT_TYPES:  # 0 from the start: increase() sees the first one
            for severity in SEVERITY_RANK:
                self.alerts.labels(alert_type, severity)

    def flushed(self, result: FlushResult, *, size: int, seconds: float) -> None:
        for decision, n in result.decisions.items():
            self.entries.labels(decision).inc(n)
        self.invalid.inc(result.invalid)
        self.reclaimed.inc(result.reclaimed)
        self.trimmed_entries.inc(result.trimmed)
        self.replayed.inc(result.replayed)
        self.excluded.inc(result.excluded)
        self.batch_size.observe(size)
        self.flush_seconds.observe(seconds)

    def trimmed(self, n: int) -> None:
        self.trimmed_entries.inc(n)

    def audited(self, lost: dict[str, int], headroom_s: float | None, foreign: int) -> None:
        for cause, n in lost.items():
            self.lost.labels(cause).inc(n)
        if headroom_s is not None:
            self.headroom.set(headroom_s)
        self.foreign_consumers.set(foreign)

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

    def alert(self, alert_type: str, severity: str) -> None:
        self.alerts.labels(alert_type, severity).inc()

    def alerts_open(self, open_alerts: OpenAlerts) -> None:
        self.open_alerts.update(open_alerts)


class OpenAlertsCollector:
    """`p35_alert_open{type,subject,window,severity}`: 1 while the alert is open in
    Redis's state (docs/alerts.md), no series once it is resolved."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self.clock = clock
        self.open: OpenAlerts = {}
        self.read_at_s = float("-inf")

    def update(self, open_alerts: OpenAlerts) -> None:
        ranked = sorted(open_alerts.items(), key=lambda kv: (SEVERITY_ORDER.get(kv[1], 3), kv[0]))
        self.open = dict(ranked[:MAX_OPEN_ALERT_SERIES])
        self.read_at_s = self.clock()

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "p35_alert_open",
            "1 while a p35 alert is open (firing), by type, subject, window and severity.",
            labels=["type", "subject", "window", "severity"],
        )
        if self.clock() - self.read_at_s <= OPEN_ALERTS_FRESH_S:
            for (alert_type, window, subject), severity in self.open.items():
                family.add_metric([alert_type, subject, window, severity], 1)
        yield family


class ProcessCollector:
    """process_* series read from /proc/self (readable under ProcSubset=pid)."""

    def __init__(self) -> None:
        self.start_time_s = time.time()
        self.page_bytes = resource.getpagesize()
        self.ticks = os.sysconf("SC_CLK_TCK")

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
        utime, stime = int(fields[11]) / self.ticks, int(fields[12]) / self.ticks
        vsize, rss = int(fields[20]), int(fields[21]) * self.page_bytes
        yield CounterMetricFamily(
            "process_cpu_seconds",
            "User and system CPU time spent in seconds.",
            value=utime + stime,
        )
        yield GaugeMetricFamily(
            "process_virtual_memory_bytes", "Virtual memory size in bytes.", value=vsize
        )
        yield GaugeMetricFamily(
            "process_resident_memory_bytes", "Resident memory size in bytes.", value=rss
        )
        yield GaugeMetricFamily(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            value=self.start_time_s,
        )
        with contextlib.suppress(OSError):
            yield GaugeMetricFamily(
                "process_open_fds",
                "Number of open file descriptors.",
                value=len(os.listdir("/proc/self/fd")),
            )
        yield GaugeMetricFamily(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            value=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        )


MAX_CONNECTIONS = 8
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 8192


class MetricsServer:
    """`/metrics` over HTTP/1.0-style one-request connections, inside the event loop."""

    def __init__(self, metrics: PrometheusMetrics):
        self.metrics = metrics
        self.server: asyncio.Server | None = None
        self.handlers: set[asyncio.Task[None]] = set()

    async def start(self, addr: str, port: int) -> None:
        self.server = await asyncio.start_server(self._accept, addr, port, limit=MAX_REQUEST_BYTES)

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self.handlers) >= MAX_CONNECTIONS:
            writer.close()  # over the limit: refused at once, nothing else held
            return
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self.handlers.add(task)
        task.add_done_callback(self.handlers.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                head = await reader.readuntil(b"\r\n\r\n")
                method, _, rest = head.partition(b" ")
                path = rest.partition(b" ")[0].partition(b"?")[0]
                if method not in (b"GET", b"HEAD"):
                    status, body, ctype = "405 Method Not Allowed", b"", "text/plain"
                elif path != b"/metrics":
                    status, body, ctype = "404 Not Found", b"only /metrics here\n", "text/plain"
                else:
                    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                    status, ctype = "200 OK", CONTENT_TYPE_LATEST
                    body = generate_latest(self.metrics.registry)
                head_out = (
                    f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
                )
                writer.write(head_out.encode() + (b"" if method == b"HEAD" else body))
                await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a slow, broken or oversized request: just close it
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self.handlers):
            task.cancel()
        if self.handlers:
            await asyncio.wait(list(self.handlers), timeout=1.0)


def build(settings: Settings) -> Metrics:
    """The metrics for these settings: real ones only when the endpoint is on."""
    return Metrics() if settings.metrics_port is None else PrometheusMetrics()


async def serve(settings: Settings, metrics: Metrics) -> MetricsServer | None:
    """Serve `/metrics` when configured (None when off); MetricsPortError names the port."""
    if settings.metrics_port is None or not isinstance(metrics, PrometheusMetrics):
        return None
    server = MetricsServer(metrics)
    try:
        await server.start(settings.metrics_addr, settings.metrics_port)
    except OSError as exc:
        raise MetricsPortError(
            f"P35_METRICS_PORT={settings.metrics_port} on P35_METRICS_ADDR="
            f"{settings.metrics_addr}: {exc.strerror or exc}"
        ) from None
    return server
