"""The daemon's lifecycle with the real process: waiting for Redis, heartbeat, names, logs."""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from decision_intel import keys
from decision_intel.devtools.testing import RedisServer, free_port
from decision_intel.settings import Settings
from tests.helpers import Daemon, RawRedis, drained, group_info, run_p35, wait_for
from tests.traffic import Producer, assert_exact, expected_buckets, load, load_truth

pytestmark = pytest.mark.e2e


def test_waits_for_redis_at_start_then_proceeds(
    base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """No Redis yet: the daemon backs off (one warning), then joins once Redis appears."""
    server = RedisServer(tmp_path / "late")
    server.port = free_port()
    env = {**base_env, "P35_REDIS_URL": server.url}
    d = Daemon(env, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: any(e["event"] == "redis.unavailable" for e in d.events()), 20, "warning")
    time.sleep(2)  # let it retry several times while Redis is still absent
    assert d.proc is not None and d.proc.poll() is None, "it exited instead of waiting"
    server.start()
    try:
        r = RawRedis(port=server.port)
        wait_for(lambda: bool(r.exists("quantum:p35:status")), 30, "first status")
        wait_for(  # the log lines follow the status the daemon wrote
            lambda: {"redis.available", "service.ready"} <= {e["event"] for e in d.events()},
            30,
            "redis.available and service.ready logged",
        )
        names = [e["event"] for e in d.events()]
        assert names.count("redis.unavailable") == 1, names
        assert "redis.available" in names and "service.ready" in names
        assert d.terminate_and_wait()[0] == 0
    finally:
        server.stop()


def test_idle_heartbeat_is_rewritten_within_5_seconds(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    env = {**base_env, "P35_HEARTBEAT_INTERVAL_SEC": "5", "P35_LEASE_SEC": "15"}
    d = Daemon(env, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: bool(r.hget("quantum:p35:status", "last_ts")), 30, "first status")
    stamps = set()
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        stamps.add(float(r.hget("quantum:p35:status", "last_ts")))
        age = time.time() - max(stamps)
        assert age < 5.5, f"status is {age:.1f} s old while idle"
        time.sleep(0.2)
    assert len(stamps) >= 2
    status = {k.decode(): v.decode() for k, v in r.hgetall("quantum:p35:status").items()}
    for field in (
        "processed_total",
        "pending_estimate",
        "last_ts",
        "consumer_name",
        "service_start_ts",
        "lag",
        "rate",
        "version",
    ):
        assert field in status or field == "processed_total", field
    assert d.terminate_and_wait()[0] == 0


def test_drain_logs_progress_and_no_line_per_message(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    # 5,000 entries read 5 at a time: 1,000 reads, so a line per entry or per read would
    # be ten times the 100 allowed, and the drain outlasts several 0.1 s progress lines.
    n = 5_000
    expected = load(r, n)
    env = {
        **base_env,
        "P35_BATCH_SIZE": "5",
        "P35_PROGRESS_INTERVAL_SEC": "0.1",
        "P35_SNAPSHOT_INTERVAL_SEC": "0.2",
    }
    d = Daemon(env, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: drained(r, n), 120, "drain")
    assert d.terminate_and_wait()[0] == 0
    assert_exact(r, expected)
    evs = d.events()
    progress = [e for e in evs if e["event"] == "progress"]
    assert progress, "no progress line while draining"
    assert {"rate", "lag", "eta_s"} <= set(progress[0])
    moving = [e for e in progress if e["rate"] > 0 and e["eta_s"] is not None]
    assert moving, f"no progress line with a rate and an ETA: {progress[:3]}"
    info_lines = [e for e in evs if e["level"] == "info"]
    assert len(info_lines) < 100, f"{len(info_lines)} INFO lines for {n} entries"


def test_live_traffic_caught_up_logs_no_progress_line(
    r: RawRedis,
    redis_server: RedisServer,
    base_env: dict[str, str],
    daemons: list[Daemon],
    tmp_path: Path,
) -> None:
    """Caught up under live traffic the group's lag is what arrived during the linger,
    never 0 for long: that is not a backlog, and a progress line for it every interval
    would fill the journal (it logged one every 10 s at 1,000 entries/s)."""
    env = {**base_env, "P35_PROGRESS_INTERVAL_SEC": "0.2"}
    d = Daemon(env, tmp_path / "d.log", name="live").start()
    daemons.append(d)
    wait_for(lambda: bool(r.exists("quantum:p35:status:consumer:live")), 30, "ready")
    producer = Producer(redis_server.port, rate=500)
    producer.start()
    try:
        # About 4 s of traffic: some 20 progress intervals, each with entries in flight.
        wait_for(
            lambda: int(r.hget("quantum:p35:status", "processed_total") or 0) >= 2_000,
            60,
            "2,000 live entries counted",
        )
    finally:
        producer.stop()
    truth = producer.truth(r)
    wait_for(lambda: drained(r, len(truth)), 30, "the rest counted")
    assert d.terminate_and_wait()[0] == 0
    assert [e for e in d.events() if e["event"] == "progress"] == []


def test_a_stream_key_of_another_type_stops_the_start_as_a_config_error(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """P35_STREAM naming a string: one error event naming it and exit 78, which systemd
    does not restart. It was a raw traceback and exit 1 (after a `service.stopped` line
    that said exit 0), restarted every 10 s to fail the same way."""
    r.set("quantum:stream:apply.result", "not a stream")
    d = Daemon(base_env, tmp_path / "d.log").start()
    daemons.append(d)
    assert d.wait(30) == 78
    events = d.events()
    [wrong] = [e for e in events if e["event"] == "stream.wrong_type"]
    assert wrong["stream"] == "quantum:stream:apply.result" and wrong["level"] == "error"
    assert [e["exit_code"] for e in events if e["event"] == "service.stopped"] == [78]
    assert "Traceback" not in d.output()


def test_a_stream_replaced_by_another_type_while_running_stops_as_a_config_error(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """The stream replaced by a string under a running daemon: it crashed with a
    traceback and exit 1 (and a second traceback from its final flush), and only the
    restart that systemd made gave the `stream.wrong_type` error. Now the running
    daemon gives it: one error, exit 78, no traceback."""
    load_truth(r, 1_000)
    d = Daemon(base_env, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: drained(r, 1_000), 30, "the entries counted")
    with r.pipeline(transaction=True) as pipe:  # no moment without the key
        pipe.delete("quantum:stream:apply.result")
        pipe.set("quantum:stream:apply.result", "not a stream")
        pipe.execute()
    assert d.wait(30) == 78
    events = d.events()
    [wrong] = [e for e in events if e["level"] == "error"]
    assert wrong["event"] == "stream.wrong_type", wrong
    assert [e["exit_code"] for e in events if e["event"] == "service.stopped"] == [78]
    assert "Traceback" not in d.output()


def test_a_key_of_the_daemons_with_another_type_is_named_and_stops_it(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """`quantum:p35:status` holding a string (set by hand, or by another program): at
    start-up the daemon blamed P35_STREAM; mid-run it crashed (exit 1, restarted into the
    same failure). Redis's WRONGTYPE names no key: the daemon now finds it, names it, and
    stops with exit 78. Once it is deleted, a restart counts everything once."""
    r.set(keys.STATUS, "planted")
    d = Daemon(base_env, tmp_path / "start.log").start()
    daemons.append(d)
    assert d.wait(30) == 78
    [error] = [e for e in d.events() if e["level"] == "error"]
    assert error["event"] == "redis.key_wrong_type", error
    assert str(error["detail"]).startswith("quantum:p35:status is a string, not a hash")
    r.delete(keys.STATUS)
    first = load_truth(r, 1_000)
    d = Daemon(base_env, tmp_path / "run.log", name="kept").start()
    daemons.append(d)
    wait_for(lambda: drained(r, 1_000), 30, "the first entries counted")
    r.delete(keys.STATUS)
    r.set(keys.STATUS, "planted")
    sec, _ = r.time()
    more = load_truth(r, 200, seed=3, end_ms=sec * 1000 + 1000, span_minutes=0.01)
    assert d.wait(30) == 78
    [error] = [e for e in d.events() if e["event"] == "redis.key_wrong_type"]
    assert str(error["detail"]).startswith("quantum:p35:status is a string, not a hash")
    assert "consumer.crashed" not in [e["event"] for e in d.events()]
    r.delete(keys.STATUS)
    d = Daemon(base_env, tmp_path / "again.log", name="kept").start()
    daemons.append(d)
    # The status went with the planted value: its processed_total starts again at 0.
    wait_for(lambda: drained(r, 200), 30, "the rest counted after the key was deleted")
    assert d.terminate_and_wait()[0] == 0
    r.hincrby(keys.STATUS, "processed_total", 1_000)  # what the deleted status had counted
    assert_exact(r, expected_buckets({**first, **more}))


def test_a_database_the_redis_lacks_stops_the_start_as_a_config_error(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """P35_REDIS_URL ending in /99 on a Redis with 16 databases: a traceback and exit 1,
    restarted every 10 s until systemd's start limit; `p35 check` named only
    `ResponseError`. Now one error event and exit 78; check gives Redis's words."""
    env = {**base_env, "P35_REDIS_URL": base_env["P35_REDIS_URL"].rsplit("/", 1)[0] + "/99"}
    d = Daemon(env, tmp_path / "d.log").start()
    daemons.append(d)
    assert d.wait(30) == 78
    events = d.events()
    [error] = [e for e in events if e["level"] == "error"]
    assert error["event"] == "redis.no_such_db" and "P35_REDIS_URL" in str(error["detail"])
    assert "Traceback" not in d.output()
    check = run_p35(env, "check")
    assert check.returncode == 2 and "DB index is out of range" in check.stdout, check.stdout


def test_a_redis_cluster_node_stops_the_start_as_a_config_error(
    base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Redis Cluster is not supported (README). Pointed at a cluster node the daemon
    crashed with a traceback (CLUSTERDOWN without slots, CROSSSLOT with them) and exit 1,
    restarted until systemd's start limit. Now one error event saying so, and exit 78."""
    # The bus port is the port + 10000 unless given: past 65535 for a high free port.
    node = RedisServer(
        tmp_path / "node", "--cluster-enabled", "yes", "--cluster-port", str(free_port())
    )
    node.start()
    try:
        env = {**base_env, "P35_REDIS_URL": node.url}
        for state in ("no slots", "every slot"):
            if state == "every slot":
                RawRedis(port=node.port).execute_command("CLUSTER ADDSLOTSRANGE 0 16383")
            d = Daemon(env, tmp_path / f"{state}.log").start()
            daemons.append(d)
            assert d.wait(30) == 78, (state, d.output())
            [error] = [e for e in d.events() if e["level"] == "error"]
            assert error["event"] == "redis.cluster_unsupported", (state, error)
            assert "Traceback" not in d.output()
    finally:
        node.stop()


def test_sighup_is_no_reload_and_does_not_stop_the_daemon(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """`kill -HUP`, the habit for a reload, killed the daemon unflushed (the default
    action). It is logged and ignored; counting goes on."""
    d = Daemon(base_env, tmp_path / "d.log", name="hup").start()
    daemons.append(d)
    wait_for(lambda: bool(r.exists("quantum:p35:status:consumer:hup")), 30, "ready")
    d.signal(signal.SIGHUP)
    wait_for(lambda: any(e["event"] == "signal.ignored" for e in d.events()), 30, "the line")
    expected = load(r, 500)
    wait_for(lambda: drained(r, 500), 30, "the entries after it counted")
    assert d.terminate_and_wait()[0] == 0
    assert_exact(r, expected)


def test_a_second_process_with_a_name_in_use_is_refused(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    first = Daemon(base_env, tmp_path / "a.log", name="shared").start()
    daemons.append(first)
    wait_for(lambda: bool(r.exists("quantum:p35:status:consumer:shared")), 30, "first ready")
    second = Daemon(base_env, tmp_path / "b.log", name="shared").start()
    daemons.append(second)
    assert second.wait(30) == 75
    assert any(e["event"] == "consumer.name_in_use" for e in second.events())
    assert first.proc is not None and first.proc.poll() is None
    assert first.terminate_and_wait()[0] == 0


def test_stable_name_restart_rereads_its_own_pending_first(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Killed with entries pending; restarted under the same name it recovers them itself
    (the claim time is far away, so only its own re-read can)."""
    n = 20_000
    expected = load(r, n)
    env = {
        **base_env,
        "P35_CLAIM_MIN_IDLE_SEC": "600",
        "P35_BATCH_SIZE": "100",
        "P35_FLUSH_MAX_ENTRIES": "3000",
        "P35_ACK_INTERVAL_SEC": "30",
    }
    d = Daemon(env, tmp_path / "a.log", name="stable").start()
    daemons.append(d)
    wait_for(lambda: int(group_info(r).get("entries-read") or 0) >= n // 3, 60, "a third read")
    d.signal(signal.SIGKILL)
    d.wait(10)
    assert group_info(r)["pending"] > 0
    again = Daemon(env, tmp_path / "b.log", name="stable").start()
    daemons.append(again)
    wait_for(lambda: drained(r, n), 60, "drain")
    assert again.terminate_and_wait()[0] == 0
    assert_exact(r, expected)


def test_sigterm_while_waiting_for_the_lease_exits_0_and_says_stopped(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """A stop within the lease time after a crash: the restarted daemon waits for the dead
    one's lease, and a SIGTERM then must end it cleanly (it exited 1 with a traceback,
    flushing without the lease, and left the unit failed)."""
    env = {**base_env, "P35_LEASE_SEC": "15"}
    first = Daemon(env, tmp_path / "a.log", name="stable").start()
    daemons.append(first)
    wait_for(lambda: bool(r.exists("quantum:p35:status:consumer:stable")), 30, "first ready")
    first.signal(signal.SIGKILL)
    first.wait(10)
    second = Daemon(env, tmp_path / "b.log", name="stable").start()
    daemons.append(second)
    wait_for(
        lambda: any(e["event"] == "consumer.name_busy" for e in second.events()),
        30,
        "the second waiting for the lease",
    )
    rc, took = second.terminate_and_wait()
    assert rc == 0, second.output()
    assert took < 5
    assert "Traceback" not in second.output()
    assert any(e["event"] == "service.stopped" for e in second.events())


def test_handle_exit_in_process_stops_cleanly_and_logs_it(
    settings_for: Callable[..., Settings],
) -> None:
    """uvicorn's way: the service runs as a task, the test calls the signal handler itself,
    and reads what it logged (structlog's capture_logs)."""
    import asyncio

    import structlog
    from structlog.testing import capture_logs

    from decision_intel.daemon.service import Service

    settings = settings_for(heartbeat_interval_sec=0.5, lease_sec=2)

    async def go() -> tuple[int, bool]:
        service = Service(settings, structlog.get_logger())
        task = asyncio.create_task(service.serve())
        for _ in range(200):
            if service.ready:
                break
            await asyncio.sleep(0.02)
        ready = service.ready
        service.handle_exit(signal.SIGINT)
        return await asyncio.wait_for(task, 10), ready

    with capture_logs() as logs:
        code, was_ready = asyncio.run(go())
    assert was_ready
    assert code == 0
    events = [e["event"] for e in logs]
    assert events[0] == "service.starting" and "service.ready" in events
    assert events[-1] == "service.stopped"
    assert not [e for e in logs if e["log_level"] in ("error", "critical")]


def at_least(counts: dict[str, int], key: str, n: int) -> Callable[[], bool]:
    return lambda: counts[key] >= n


def test_a_job_that_keeps_failing_is_backed_off_alone_and_the_others_keep_running(
    r: RawRedis, settings_for: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The progress job raises on every try: it is tried again after a growing backoff,
    logged once (`tick.failed`) for the whole streak and once when it recovers
    (`tick.recovered`), while the heartbeat, snapshots, alerts and the audit after it in
    the job list keep running. It used to stay due, run first every tick, stop the jobs
    after it and log `tick.failed` each time."""
    import asyncio

    import structlog
    from structlog.testing import capture_logs

    from decision_intel.daemon import ticker
    from decision_intel.daemon.service import Service

    monkeypatch.setattr(ticker, "RETRY_FIRST_S", 0.05)  # the streak's tries, quick
    monkeypatch.setattr(ticker, "RETRY_CAP_S", 0.4)
    settings = settings_for(
        heartbeat_interval_sec=0.5, lease_sec=2, snapshot_interval_sec=1, progress_interval_sec=0.2
    )
    since_broken: dict[str, int] = {"beat": 0, "built": 0, "alerts": 0, "audit": 0}
    tries: list[float] = []
    broken = True

    async def go() -> int:
        service = Service(settings, structlog.get_logger())
        changed = asyncio.Event()

        def spy(obj: object, name: str, counter: str | None = None) -> None:
            inner = getattr(obj, name)

            async def call(*args: object, **kwargs: object) -> object:
                result = await inner(*args, **kwargs)
                if counter and tries and (counter != "built" or result is not None):
                    since_broken[counter] += 1
                    changed.set()
                return result

            setattr(obj, name, call)

        async def progress(counted: int, caught_up: bool) -> dict[str, Any] | None:
            if not broken:
                changed.set()
                return None
            tries.append(asyncio.get_running_loop().time())
            changed.set()
            raise RuntimeError("progress is broken")

        async def until(cond: Callable[[], bool], what: str) -> None:
            try:
                async with asyncio.timeout(30):
                    while not cond():
                        changed.clear()
                        await changed.wait()
            except TimeoutError:
                raise AssertionError(f"no {what}: {since_broken}, {len(tries)} tries") from None

        spy(service.heartbeat, "beat", "beat")
        spy(service.snapshotter, "maybe_run", "built")
        spy(service.alert_store, "run", "alerts")
        spy(service.auditor, "run", "audit")
        service.heartbeat.progress = progress  # type: ignore[method-assign]
        task = asyncio.create_task(service.serve())
        try:
            await until(lambda: service.ready and bool(tries), "the first failure")
            for n in range(2):  # traffic, so that snapshots are rebuilt and alerts run
                await until(at_least(since_broken, "alerts", n), "alerts")
                fields = {"plan_id": f"p{n}", "symbol": "BTCUSDT", "error": "no_position"}
                await asyncio.to_thread(r.xadd, settings.stream, fields)
            await until(
                lambda: (
                    since_broken["beat"] >= 3
                    and since_broken["built"] >= 2
                    and since_broken["alerts"] >= 2
                    and since_broken["audit"] >= 3
                    and len(tries) >= 4
                ),
                "the other jobs while progress fails",
            )
            nonlocal broken
            broken = False
            await until(lambda: any(e["event"] == "tick.recovered" for e in logs), "recovery")
        finally:
            service.handle_exit(signal.SIGTERM)
        return await asyncio.wait_for(task, 10)

    with capture_logs() as logs:
        code = asyncio.run(go())
    assert code == 0
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    for k, gap in enumerate(gaps):  # 0.05 s, 0.1 s, 0.2 s, then 0.4 s: never sooner
        assert gap >= min(0.05 * 2**k, 0.4) - 0.01, gaps
    failed = [e for e in logs if e["event"] == "tick.failed"]
    assert [(e["job"], e["log_level"]) for e in failed] == [("progress", "error")], failed
    recovered = [e for e in logs if e["event"] == "tick.recovered"]
    assert [(e["job"], e["failures"]) for e in recovered] == [("progress", len(tries))]
