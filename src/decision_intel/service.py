"""The daemon's lifecycle: startup(), the main loop, shutdown().

Three tasks share one event loop: the consumer (read, classify, flush), the
ticker (heartbeat and lease, snapshots, progress, consumer clean-up) and the
watchdog (proves the loop turns, whatever Redis does; it runs from READY=1, sent as
soon as the configuration is valid, so waiting for Redis never fails the start).
Signal handlers only set flags; every wait at shutdown has a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from typing import Any

from decision_intel import __version__
from decision_intel.alert_store import AlertStore
from decision_intel.alerts import evaluate
from decision_intel.backoff import ACCESS_DENIED, REDIS_DOWN, Connectivity
from decision_intel.client import connect, drop_idle_connections
from decision_intel.consumer import Consumer, LeaseLost
from decision_intel.metrics import Metrics, MetricsPortError, MetricsServer
from decision_intel.metrics import serve as metrics_serve
from decision_intel.notify import Notifier
from decision_intel.settings import EX_CONFIG, Settings
from decision_intel.snapshots import Snapshotter
from decision_intel.status import RateMeter, group_fields, write_heartbeat
from decision_intel.store import Store
from decision_intel.text import safe
from decision_intel.windows import Counts

EX_TEMPFAIL = 75
GRACE_S = 4.0
"""Shutdown budget: flush, final status, release; well inside systemd's stop timeout."""
WATCHDOG_EVERY_S = 2.0


class NameInUse(Exception):
    pass


class AccessDenied(Exception):
    """The Redis user may not do what the daemon needs; the message says what."""


class Service:
    def __init__(self, settings: Settings, log: Any, notifier: Notifier | None = None):
        self.s = settings
        self.log = log.bind(consumer=settings.consumer_name)
        self.notifier = notifier or Notifier(None)
        self.should_exit = False
        self.force_exit = False
        self.exit_code = 0
        self.start_ts = time.time()
        self.metrics: Metrics = Metrics()
        self._metrics_server: MetricsServer | None = None
        self.conn = Connectivity(self.log, on_reconnect=self._reconnected)
        self._background: set[asyncio.Task[None]] = set()
        self.meter = RateMeter()
        self.rate = 0.0
        self.group: dict[str, Any] = {}
        self.ready = False
        self._stop: asyncio.Event | None = None

    def _reconnected(self) -> None:
        self.metrics.reconnected()
        task = asyncio.ensure_future(drop_idle_connections(self.client, self.reader))
        self._background.add(task)  # held until done (the loop keeps only weak references)
        task.add_done_callback(self._background.discard)

    # -- signals ----------------------------------------------------------------

    def handle_exit(self, sig: int) -> None:
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.should_exit = True
        if self._stop is not None:
            self._stop.set()

    @property
    def stop(self) -> asyncio.Event:
        assert self._stop is not None
        return self._stop

    @staticmethod
    async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on a stop request."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    # -- lifecycle ----------------------------------------------------------------

    async def serve(self) -> int:
        try:
            self.metrics, self._metrics_server = await metrics_serve(self.s)
        except MetricsPortError as exc:
            self.log.error("metrics.unavailable", detail=str(exc))
            return EX_CONFIG
        self._stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig)
        self.client = connect(self.s)
        self.reader = connect(self.s, blocking=True)
        self.store = Store(self.s, self.client, self.reader)
        self.snapshotter = Snapshotter(self.s, self.client, self.s.consumer_name)
        self.alert_store = AlertStore(self.s, self.client)
        self.consumer = Consumer(self.s, self.store, self.log, self.metrics)
        # The configuration is valid: tell systemd we are up now. Waiting for Redis is
        # running, not starting (a start timeout would kill a daemon that only waits);
        # STATUS= says what it waits for, and the watchdog runs from here on.
        self.notifier.send("READY=1", f"STATUS=connecting to Redis at {self.s.redacted_url}")
        watchdog = asyncio.create_task(self._watchdog_loop(), name="watchdog")
        try:
            if await self.startup():
                await self.main_loop()
        except NameInUse:
            self.log.error(
                "consumer.name_in_use",
                detail="another live process holds this consumer name; refusing to start",
            )
            self.exit_code = EX_TEMPFAIL
        except (AccessDenied, *ACCESS_DENIED) as exc:
            self._access_denied(exc)
        finally:
            await self.shutdown()
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return self.exit_code

    async def startup(self) -> bool:
        self.log.info(
            "service.starting",
            version=__version__,
            redis=self.s.redacted_url,
            stream=self.s.stream,
            group=self.s.group,
        )
        while not self.should_exit:
            try:
                await self._check_permissions()
                created = await self.store.ensure_group()
                await self.store.server_time_ms()  # Redis's clock, to judge entry IDs by
                await self._acquire_name()
                if self.should_exit:
                    return False
                await self.heartbeat()
                self.conn.ok()
                break
            except ACCESS_DENIED:
                raise
            except REDIS_DOWN as exc:
                delay = self.conn.failed(exc)
                self.notifier.send(
                    f"STATUS=waiting for Redis at {self.s.redacted_url} "
                    f"({type(exc).__name__}), retrying"
                )
                await self._pause(delay)
        else:
            return False
        self.log.info("service.ready", group_created=created, lag=self.group.get("lag"))
        # What startup built (modules, settings, clients) lives as long as the process:
        # keep it out of the collector's full passes, which the hot loop triggers.
        gc.freeze()
        self.ready = True
        self.notifier.send(self._status_line())
        return True

    async def _check_permissions(self) -> None:
        denied = await self.store.denied_permissions()
        if denied is None:
            self.log.debug("permissions.unchecked", why="ACL WHOAMI/DRYRUN not allowed")
        elif denied:
            raise AccessDenied("; ".join(dict.fromkeys(denied)))

    def _access_denied(self, exc: BaseException) -> None:
        self.log.error(
            "redis.access_denied",
            detail=str(exc),
            hint="see docs/security.md for the ACL the daemon needs",
        )
        self.exit_code = EX_CONFIG
        self.handle_exit(signal.SIGTERM)

    async def _acquire_name(self) -> None:
        """Hold the lease on our consumer name, waiting out (once) a dead predecessor's lease."""
        deadline = time.monotonic() + self.s.lease_sec + 1
        warned = False
        while not await self.store.take_lease():
            if time.monotonic() > deadline:
                raise NameInUse(self.s.consumer_name)
            if not warned:
                self.log.warning("consumer.name_busy", waiting_up_to_s=self.s.lease_sec + 1)
                self.notifier.send(
                    f"STATUS=waiting for the lease on consumer name {self.s.consumer_name}"
                )
                warned = True
            await self._pause(1.0)
            if self.should_exit:
                return

    async def main_loop(self) -> None:
        tasks = [
            asyncio.create_task(self._consume_loop(), name="consume"),
            asyncio.create_task(self._tick_loop(), name="tick"),
        ]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def shutdown(self) -> None:
        self.notifier.send("STOPPING=1")
        self.should_exit = True
        self.stop.set()
        unflushed = 0
        gave_up = self.exit_code in (EX_TEMPFAIL, EX_CONFIG)  # not ours to flush, or not allowed
        # Before `ready` the lease may be another process's and nothing was read yet:
        # there is nothing to flush, and no status of ours to write.
        if self.ready and not self.force_exit and not gave_up:
            try:
                async with asyncio.timeout(GRACE_S):
                    await self.consumer.finish()
                    await self.heartbeat(state="stopped")
                    await self.store.release_lease()
            except TimeoutError:
                self.log.warning("shutdown.timeout", grace_s=GRACE_S)
            except (*REDIS_DOWN, *ACCESS_DENIED) as exc:
                self.log.warning("shutdown.redis_unavailable", error=type(exc).__name__)
            except LeaseLost:
                self.log.warning("shutdown.lease_lost", detail="not flushed: the name is taken")
            unflushed = len(self.consumer.batch)
        for client in (getattr(self, "client", None), getattr(self, "reader", None)):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        self.log.info(
            "service.stopped",
            exit_code=self.exit_code,
            counted=getattr(getattr(self, "consumer", None), "counted", 0),
            unflushed_left_pending=unflushed,
        )
        if self._metrics_server is not None:
            await self._metrics_server.close()
        self.notifier.close()

    # -- the three loops -----------------------------------------------------------

    async def _consume_loop(self) -> None:
        while not self.should_exit:
            try:
                await self.consumer.run(self.stop)
                self.conn.ok()
            except ACCESS_DENIED as exc:
                self._access_denied(exc)
            except REDIS_DOWN as exc:
                delay = self.conn.failed(exc)
                # Woken early when the tick loop sees Redis answer again.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._either(self.stop, self.conn.back), delay)
            except LeaseLost:
                self._lease_lost()
            except Exception:
                self.log.exception("consumer.crashed")
                self.exit_code = 1
                self.handle_exit(signal.SIGTERM)

    async def _tick_loop(self) -> None:
        tick_s = min(1.0, self.s.snapshot_interval_sec / 2)
        forget_every_s = min(60.0, max(5.0, self.s.claim_min_idle_sec))
        last_beat = last_progress = last_forget = time.monotonic()
        while not self.should_exit:
            await self._pause(tick_s)
            if self.should_exit:
                break
            now = time.monotonic()
            try:
                if now - last_beat >= self.s.heartbeat_interval_sec:
                    await self.heartbeat()
                    last_beat = now
                t0 = time.perf_counter()
                now_ms = await self.store.server_time_ms()
                windows = await self.snapshotter.maybe_run(now_ms)
                if windows is not None:
                    self.metrics.snapshot(time.perf_counter() - t0)
                    await self._alerts(windows, now_ms)
                if now - last_progress >= self.s.progress_interval_sec:
                    await self._progress()
                    last_progress = now
                if now - last_forget >= forget_every_s:
                    await self._forget_departed()
                    last_forget = now
            except ACCESS_DENIED as exc:
                self._access_denied(exc)
            except REDIS_DOWN as exc:
                self.conn.failed(exc)
            except LeaseLost:
                self._lease_lost()
            except Exception:
                self.log.exception("tick.failed")
            else:
                self.conn.ok()

    async def _watchdog_loop(self) -> None:
        if not self.notifier.enabled:
            return
        while not self.should_exit:
            self.notifier.send("WATCHDOG=1")
            await self._pause(WATCHDOG_EVERY_S)

    # -- periodic work -------------------------------------------------------------

    async def heartbeat(self, state: str = "running") -> None:
        if not await self.store.take_lease():
            raise LeaseLost(self.s.consumer_name)
        info = await self.store.group_info()
        self.group = group_fields(info)
        oldest = info.get("oldest-pending-id") if info else None
        oldest_ms = int(oldest.partition("-")[0]) if oldest else None
        now = time.time()
        self.group["oldest_pending_age_s"] = (
            0 if oldest_ms is None else round(max(0.0, now - oldest_ms / 1000), 1)
        )
        self.rate = self.meter.sample(time.monotonic(), self.consumer.counted)
        self.metrics.group(
            lag=self.group["lag"] if isinstance(self.group["lag"], int) else None,
            pending=int(self.group["pending_estimate"]),
            oldest_pending_age_s=self.group["oldest_pending_age_s"],
        )
        self.metrics.heartbeat(now)
        await write_heartbeat(
            self.client,
            consumer=self.s.consumer_name,
            start_ts=self.start_ts,
            counted=self.consumer.counted,
            rate=self.rate,
            group=self.group,
            state=state,
        )
        if self.ready:  # systemd hears READY=1 first
            self.notifier.send(self._status_line())

    def _status_line(self) -> str:
        return (
            f"STATUS=counted {self.consumer.counted}, lag {self.group.get('lag', '?')}, "
            f"pending {self.group.get('pending_estimate', '?')}, {self.rate:.0f}/s"
        )

    async def _progress(self) -> None:
        """While a backlog drains: one line with fresh rate, lag and ETA."""
        self.group = group_fields(await self.store.group_info())
        self.rate = self.meter.sample(time.monotonic(), self.consumer.counted)
        lag = self.group.get("lag")
        if not isinstance(lag, int) or (lag == 0 and self.consumer.caught_up):
            return
        self.log.info(
            "progress",
            rate=round(self.rate, 1),
            lag=lag,
            pending=self.group.get("pending_estimate"),
            eta_s=round(lag / self.rate) if self.rate > 0 else None,
            counted=self.consumer.counted,
        )

    async def _alerts(self, windows: dict[str, Counts], now_ms: int) -> None:
        """Evaluate the alert rules on the windows just built (once per interval per group)."""
        evaluation = evaluate(
            windows,
            await self.alert_store.open_keys(),
            gate_windows=self.s.gate_windows,
            mix_window=self.s.mix_window,
            min_decisions=self.s.alert_min_decisions,
            stuck_min_decisions=self.s.stuck_min_decisions,
            clock=await self.alert_store.stream_clock(now_ms),
        )
        by_key = {f.key: f for f in evaluation.firing}
        for key, severity, state in await self.alert_store.apply(evaluation, now_ms):
            kind, window, subject = key.split("|", 2)
            if state == "firing":
                self.metrics.alert(kind, severity)
                fields = by_key[key].fields if key in by_key else {}
                self.log.warning("alert", type=kind, window=window, subject=subject,
                                 severity=severity, **fields)  # fmt: skip
            else:
                self.log.info("alert.resolved", type=kind, window=window, subject=subject)

    async def _forget_departed(self) -> None:
        min_idle_ms = int(max(self.s.claim_min_idle_sec, 2 * self.s.lease_sec) * 1000)
        for name in await self.store.departed_consumers(min_idle_ms):
            if await self.store.forget_consumer(name):
                self.log.info("consumer.removed", removed=safe(name)[:200])

    def _lease_lost(self) -> None:
        self.log.error(
            "consumer.lease_lost",
            detail="another process took this consumer name; stopping without counting",
        )
        self.exit_code = EX_TEMPFAIL
        self.handle_exit(signal.SIGTERM)
