"""The daemon's lifecycle: startup(), the main loop, shutdown().

Three tasks share one event loop: the consumer (read, classify, flush), the ticker
(it calls each periodic job where it lives: the heartbeat in status.py, snapshots,
alerts in alert_store.py, departed consumers in consumer.py; a job that fails is backed
off alone, ticker.py) and the watchdog (proves the loop turns, whatever Redis does).
READY=1 goes to systemd as soon as the configuration is valid, so waiting for Redis
never fails the start. Signal handlers only set flags (`handle_exit`); internal reasons
to stop use `request_stop(code)`; every wait at shutdown has a limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import time
from typing import Any

from redis.exceptions import ResponseError

from decision_intel import __version__
from decision_intel.daemon import metrics
from decision_intel.daemon.alert_store import AlertStore
from decision_intel.daemon.consumer import Consumer, pause
from decision_intel.daemon.metrics import MetricsPortError, MetricsServer
from decision_intel.daemon.notify import Notifier
from decision_intel.daemon.rollup import Roller
from decision_intel.daemon.snapshots import Snapshotter
from decision_intel.daemon.status import Heartbeat
from decision_intel.daemon.ticker import Job
from decision_intel.model.losses import utc_of_id
from decision_intel.settings import Settings
from decision_intel.store.audit import Auditor, add_to_days
from decision_intel.store.backoff import (
    ACCESS_DENIED,
    REDIS_DOWN,
    WRONG_KEY,
    Connectivity,
    config_error,
)
from decision_intel.store.client import connect, renew_connections
from decision_intel.store.group import FlushRefused, LeaseLost, Store
from decision_intel.text import describe, safe

GRACE_S = 4.0
"""Shutdown budget: flush, final status, release; well inside systemd's stop timeout."""
WATCHDOG_EVERY_S = 2.0


class NameInUse(Exception):
    pass


class AccessDenied(Exception):
    """The Redis user may not do what the daemon needs; the message says what."""


LEFT_UNKNOWN = (
    "the final flush did not get through: what was read and not counted stays pending "
    "under this consumer name, counted by a restart under the same name or by another "
    "consumer after P35_CLAIM_MIN_IDLE_SEC"
)


class Service:
    def __init__(self, settings: Settings, log: Any, notifier: Notifier | None = None):
        self.s = settings
        self.log = log.bind(consumer=settings.consumer_name)
        self.notifier = notifier or Notifier(None)
        self.should_exit = False
        self.force_exit = False
        self.exit_code = 0
        self.ready = False
        """Startup is done: this process holds its name and may flush."""
        self.stop = asyncio.Event()
        self.metrics = metrics.build(settings)
        self.conn = Connectivity(
            self.log, on_reconnect=self._reconnected, on_not_primary=self._renew_connections
        )
        # Clients connect on first use: building them here does no I/O.
        self.client = connect(settings)
        self.reader = connect(settings, blocking=True)
        self.store = Store(settings, self.client, self.reader)
        self.consumer = Consumer(settings, self.store, self.log, self.metrics)
        self.heartbeat = Heartbeat(settings, self.store, self.metrics)
        self.snapshotter = Snapshotter(settings, self.client, settings.consumer_name)
        self.roller = Roller(settings, self.client)
        self.alert_store = AlertStore(settings, self.client, self.log, self.metrics)
        self.auditor = Auditor(settings, self.client, self.store.token)
        self._foreign_seen: set[bytes] = set()
        self._headroom_logged = False
        self._metrics_server: MetricsServer | None = None

    # -- stopping -----------------------------------------------------------------

    def handle_exit(self, sig: int) -> None:
        """Signal handler: a flag, nothing else. A second SIGINT skips the flush."""
        if self.should_exit and sig == signal.SIGINT:
            self.force_exit = True
        self.request_stop()

    def request_stop(self, exit_code: int | None = None) -> None:
        """Stop the loops and shut down; `exit_code` records why (the first one wins)."""
        if exit_code is not None and self.exit_code == 0:
            self.exit_code = exit_code
        self.should_exit = True
        self.stop.set()

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once on a stop request."""
        await pause(self.stop, seconds)

    # -- lifecycle ----------------------------------------------------------------

    async def serve(self) -> int:
        try:
            self._metrics_server = await metrics.serve(self.s, self.metrics)
        except MetricsPortError as exc:
            self.log.error("metrics.unavailable", detail=str(exc))
            return os.EX_CONFIG
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.handle_exit, sig)
        # The habit of `kill -HUP` to reload must not kill the daemon unflushed (the
        # default action): there is nothing to reload, settings apply on a restart.
        loop.add_signal_handler(signal.SIGHUP, self._no_reload)
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
            self.request_stop(os.EX_TEMPFAIL)
        except (AccessDenied, *ACCESS_DENIED) as exc:
            self._access_denied(exc)
        except Exception:  # a bug: one event with its traceback, and exit 1 (said so)
            self.log.exception("service.crashed")
            self.request_stop(1)
        finally:
            await self.shutdown()
            watchdog.cancel()
            await asyncio.gather(watchdog, return_exceptions=True)
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return self.exit_code

    def _no_reload(self) -> None:
        self.log.warning(
            "signal.ignored",
            signal="SIGHUP",
            detail="nothing to reload: settings apply on a restart (systemctl restart)",
        )

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
                created = await self.store.ensure_group() is not None
                await self.store.server_time_ms()  # Redis's clock, to judge entry IDs by
                await self._acquire_name()
                if self.should_exit:
                    return False
                await self.heartbeat.beat(self.consumer.counted)
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
            except ResponseError as exc:
                if await self._config_stop(exc):
                    return False
                raise
        else:
            return False
        self.log.info("service.ready", group_created=created, lag=self.heartbeat.group.get("lag"))
        # What startup built (modules, settings, clients) lives as long as the process:
        # keep it out of the collector's full passes, which the hot loop triggers.
        gc.freeze()
        self.ready = True
        self.notifier.send(self.heartbeat.status_line(self.consumer.counted))
        return True

    async def _config_stop(self, exc: ResponseError) -> bool:
        """Stop as for a bad setting (exit 78, not restarted) on a reply a restart cannot
        mend, with one line naming what to fix; False for any other reply."""
        # WRONGTYPE names no key: the stream's, or one of the daemon's own?
        wrong = []
        if "WRONGTYPE" in str(exc):
            wrong = await self.store.wrong_types(self.store.start_keys())
        said = config_error(exc, wrong)
        if said is not None:
            self._stop_for_config(*said)
        return said is not None

    def _stop_for_config(self, event: str, detail: str) -> None:
        self.log.error(event, stream=self.s.stream, redis=self.s.redacted_url, detail=detail)
        self.request_stop(os.EX_CONFIG)

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
        self.request_stop()
        gave_up = self.exit_code in (os.EX_TEMPFAIL, os.EX_CONFIG)  # not ours, or not allowed
        # Entries read and not counted, left pending under our name. None: unknown, as
        # the shutdown flush did not get through (what it held, and what a failed
        # flush before it held, stay pending; Redis knows how many).
        left: int | None = len(self.consumer.batch)
        # Before `ready` the lease may be another process's and nothing was read yet:
        # there is nothing to flush, and no status of ours to write.
        if self.ready and not self.force_exit and not gave_up:
            left = None
            try:
                async with asyncio.timeout(GRACE_S):
                    await self.consumer.finish()
                    left = len(self.consumer.batch)
                    await self.roller.run(everything=True)
                    await self.heartbeat.beat(self.consumer.counted, state="stopped")
                    await self.store.release_lease()
            except TimeoutError:
                self.log.warning("shutdown.timeout", grace_s=GRACE_S)
            except (*REDIS_DOWN, *ACCESS_DENIED) as exc:
                self.log.warning("shutdown.redis_unavailable", error=describe(exc))
            except LeaseLost:
                self.log.warning("shutdown.lease_lost", detail="not flushed: the name is taken")
            except Exception:  # the group gone, a bug: entries stay pending, the exit goes on
                self.log.exception("shutdown.flush_failed")
        for client in (self.client, self.reader):
            with contextlib.suppress(Exception):
                await client.aclose()
        self.log.info(
            "service.stopped",
            exit_code=self.exit_code,
            counted=self.consumer.counted,
            unflushed_left_pending=left,
            **({} if left is not None else {"detail": LEFT_UNKNOWN}),
        )
        if self._metrics_server is not None:
            await self._metrics_server.close()
        self.notifier.close()

    # -- the three loops -----------------------------------------------------------

    async def _consume_loop(self) -> None:
        group_lost = False
        while not self.should_exit:
            try:
                if group_lost:
                    await self._recreate_group()
                    group_lost = False
                await self.consumer.run(self.stop)
                self.conn.ok()
            except ACCESS_DENIED as exc:  # before REDIS_DOWN: a kind of ConnectionError
                self._access_denied(exc)
            except REDIS_DOWN as exc:
                delay = self.conn.failed(exc)
                # Woken early when the tick loop sees Redis answer again.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._either(self.stop, self.conn.back), delay)
            except LeaseLost:
                self._lease_lost()
            except FlushRefused as exc:
                if not exc.wrong_type:
                    self._crashed()
                    continue
                # A restart cannot mend it: stop as for a bad setting (not restarted).
                self._stop_for_config("redis.key_wrong_type", WRONG_KEY.format(exc))
            except ResponseError as exc:
                group_lost = await self._failed_reply(exc)
            except Exception:
                self._crashed()

    async def _failed_reply(self, exc: ResponseError) -> bool:
        """True when the group, or its stream, went while we ran (UNBLOCKED: during a
        blocking read; NOGROUP: at the next command, a script's included): it is made
        again. A role change's UNBLOCKED is a refusal (backoff.ROLE_CHANGED), waited out
        before this. Any other reply stops the daemon: as a configuration error (the
        stream replaced by a key of another type, say), else as a crash."""
        if "NOGROUP" in str(exc) or str(exc).startswith("UNBLOCKED"):
            return True
        try:
            stopped = await self._config_stop(exc)
        except REDIS_DOWN:
            return False  # asked again at the next failure
        if not stopped:
            self._crashed()
        return False

    def _crashed(self) -> None:
        # Counting is broken in a way a retry will not mend: stop, and let systemd
        # restart a clean process (entries stay pending; nothing is lost).
        self.log.exception("consumer.crashed")
        self.request_stop(1)

    async def _recreate_group(self) -> None:
        """The group was removed while this daemon ran (XGROUP DESTROY, or the stream
        deleted): its pending entries went with it, so what this daemon read and had not
        counted is dropped, and the group is made again after the newest entry counted
        (`ensure_group`): the entries after it are delivered again, none twice."""
        dropped = self.consumer.drop_held()
        start = await self.store.ensure_group()
        self.log.warning(
            "group.recreated",
            starts_after=start if start is not None else "(made again by another consumer)",
            dropped_unflushed=dropped,
            detail="the group or its stream was removed while running; entries pending "
            "in it on other consumers, older than the newest counted, are not counted",
        )

    async def _tick_loop(self) -> None:
        tick_s = min(1.0, self.s.snapshot_interval_sec / 2)
        forget_every_s = min(60.0, max(5.0, self.s.claim_min_idle_sec))
        start = time.monotonic()
        jobs = [
            Job(name, every_s, run, start + every_s)
            for name, every_s, run in (
                ("heartbeat", self.s.heartbeat_interval_sec, self._beat),
                ("snapshot", 0.0, self._snapshot),  # every tick: the group's lock decides
                ("progress", self.s.progress_interval_sec, self._progress),
                ("forget_departed", forget_every_s, self.consumer.forget_departed),
                ("audit", self.s.heartbeat_interval_sec, self._audit),
            )
        ]
        while not self.should_exit:
            # Sleep until the next job is due: the snapshot turn is asked for each tick,
            # except while this daemon's own turn lasts (idle, that halves the wake-ups).
            # A job that failed is due after its own backoff (ticker.py); one that met
            # Redis down is overdue: it is tried again a tick later.
            now = time.monotonic()
            turn_s = self.snapshotter.next_try_s
            due = [job.due_s for job in jobs if job.every_s or job.failures]
            due.append(turn_s if turn_s > now else now + tick_s)
            wait_s = min(due) - now
            await self._pause(wait_s if wait_s > 0 else tick_s)
            if self.should_exit:
                break
            now = time.monotonic() + 0.001  # a timer may fire a hair early
            for job in jobs:
                if job.due(now) and not await self._run_job(job, now, tick_s):
                    break

    async def _run_job(self, job: Job, now: float, tick_s: float) -> bool:
        """Run one due job; False when the rest of this tick must wait (Redis is down, or
        the service stops)."""
        try:
            more = await job.run()
        except ACCESS_DENIED as exc:
            self._access_denied(exc)
            return False
        except REDIS_DOWN as exc:
            self.conn.failed(exc)  # the consumer loop waits out the backoff
            return False
        except LeaseLost:
            self._lease_lost()
            return False
        except Exception:
            # Periodic work only, and this job alone: it backs off, the others keep their
            # schedule, counting goes on. One line per failure streak, not per try.
            retry_s = job.failed(time.monotonic())  # from the failure, not the tick's start
            if job.failures == 1:
                self.log.exception("tick.failed", job=job.name, retry_in_s=retry_s)
            return True
        failures = job.succeeded(now, tick_s if more else None)
        if failures:
            self.log.info(
                "tick.recovered",
                job=job.name,
                failures=failures,
                failed_for_s=round(now - job.failing_since_s, 3),
            )
        return True

    async def _beat(self) -> None:
        await self.heartbeat.beat(self.consumer.counted)
        # The heartbeat writes: its success, not a tick of reads, tells that Redis is
        # back (a Redis refusing writes still answers reads). A failed beat is retried
        # the next tick, so an outage's end is seen within a second.
        self.conn.ok()
        self.notifier.send(self.heartbeat.status_line(self.consumer.counted))

    async def _snapshot(self) -> None:
        t0 = time.perf_counter()
        built = await self.snapshotter.maybe_run(time.monotonic())
        turn_ms = self.snapshotter.turn_ms
        # This daemon's turn: it rolls up too, unless nothing was counted since a roll
        # that left nothing listed (idle).
        if turn_ms is not None and not (self.snapshotter.idle and self.roller.left == 0):
            await self.roller.run(turn_ms // 60_000, self.snapshotter.quiet)
        if built is not None:
            windows, now_ms = built
            self.store.observe_clock(now_ms)
            self.metrics.snapshot(time.perf_counter() - t0)
            await self.alert_store.run(windows, now_ms, self.snapshotter.minutes)

    async def _audit(self) -> None:
        """The completeness audit's turn (once per heartbeat interval across the group):
        one warning per loss and per new foreign consumer, the headroom once at start."""
        lock_ms = max(500, int(self.s.heartbeat_interval_sec * 1000) - 100)
        audit = await self.auditor.run(self.consumer.read_high, lock_ms)
        if audit is None:
            return
        self.metrics.audited(
            {e.cause: e.count for e in audit.losses}, audit.headroom_s, audit.foreign_total
        )
        if audit.losses:
            await add_to_days(self.client, self.s, audit.losses)
        await self.alert_store.run_completeness(audit, self.store.now_ms())
        if not self._headroom_logged:
            self._headroom_logged = True
            self.log.info("stream.headroom", headroom_s=audit.headroom_s)
        for e in audit.losses:
            self.log.warning(
                "entries.lost",
                cause=e.cause,
                count=e.count,
                first_id=e.first_id,
                last_id=e.last_id,
                first_utc=utc_of_id(e.first_id),
                last_utc=utc_of_id(e.last_id),
                exact=audit.exact,
            )
        for name, held in audit.foreign:
            if name not in self._foreign_seen and len(self._foreign_seen) < 1000:
                self._foreign_seen.add(name)
                self.log.warning(
                    "consumer.foreign",
                    name=safe(name)[:200],
                    pending=held,
                    detail="a consumer of the group that is not p35; p35 never removes it",
                )

    async def _progress(self) -> None:
        line = await self.heartbeat.progress(self.consumer.counted, self.consumer.caught_up)
        if line is not None:
            self.log.info("progress", **line)

    async def _watchdog_loop(self) -> None:
        if not self.notifier.enabled:
            return
        while not self.should_exit:
            self.notifier.send("WATCHDOG=1")
            await self._pause(WATCHDOG_EVERY_S)

    # -- helpers ----------------------------------------------------------------------

    @staticmethod
    async def _either(a: asyncio.Event, b: asyncio.Event) -> None:
        waits = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    def _reconnected(self) -> None:
        self.metrics.reconnected()
        self._renew_connections()

    def _renew_connections(self) -> None:
        renew_connections(self.client, self.reader)

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
        self.request_stop(os.EX_CONFIG)

    async def _acquire_name(self) -> None:
        """Hold the lease on our consumer name, waiting out (once) a dead predecessor's lease."""
        deadline = time.monotonic() + self.s.lease_sec + 1
        warned = False
        await self.store.register()
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

    def _lease_lost(self) -> None:
        self.log.error(
            "consumer.lease_lost",
            detail="another process took this consumer name; stopping without counting",
        )
        self.request_stop(os.EX_TEMPFAIL)
