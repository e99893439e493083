"""SPEC 5 "exactly once", attacked with the real `p35 run` process and a real redis-server."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest

from decision_intel import keys
from decision_intel.keys import minute_of_id
from tests.helpers import (
    GROUP,
    Daemon,
    RawRedis,
    drained,
    entries_read,
    group_info,
    ready_consumers,
    wait_for,
)
from tests.traffic import STREAM, assert_exact, load

pytestmark = pytest.mark.e2e

N = 20_000


def test_sigkill_at_random_moments_loses_and_doubles_nothing(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Five SIGKILLs mid-drain, each followed by a restart: every bucket is still exact."""
    expected = load(r, N, span_minutes=90)
    # Small reads and a large flush threshold keep many entries read-but-unflushed
    # at any instant, so a kill strands them pending on the dead consumer.
    env = {
        **base_env,
        "P35_BATCH_SIZE": "100",
        "P35_FLUSH_MAX_ENTRIES": "2000",
        "P35_ACK_INTERVAL_SEC": "30",
    }
    rng = random.Random()
    thresholds = sorted(rng.sample(range(N // 20, N * 17 // 20), 5))
    kills = 0
    for i, threshold in enumerate(thresholds):
        d = Daemon(env, tmp_path / f"run{i}.log").start()
        daemons.append(d)

        def read_past(t: int = threshold) -> bool:
            return entries_read(r) >= t

        wait_for(read_past, 60, f"{threshold} entries read")
        time.sleep(rng.uniform(0, 0.02))
        d.signal(signal.SIGKILL)
        d.wait(10)
        kills += 1
    assert kills == 5
    stranded = group_info(r)["pending"]
    final = Daemon(env, tmp_path / "final.log").start()
    daemons.append(final)
    wait_for(lambda: drained(r, N), 90, "the stream to drain")
    # The five dead consumers, owning nothing once reclaimed, leave the group.
    wait_for(lambda: len(r.xinfo_consumers(STREAM, GROUP)) == 1, 30, "dead consumers removed")
    rc, _ = final.terminate_and_wait()
    assert rc == 0, final.output()
    assert_exact(r, expected)
    # The kills did strand entries, and they were reclaimed rather than lost.
    assert int(r.hget("quantum:p35:status", "reclaimed_total") or 0) > 0, stranded


def test_three_daemons_on_one_group_count_exactly(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Three concurrent consumers share the work; no entry is lost or counted twice."""
    env = {**base_env, "P35_BATCH_SIZE": "50"}
    r.xgroup_create("quantum:stream:apply.result", "p35_decision_intel", id="0", mkstream=True)
    for i in range(3):
        daemons.append(Daemon(env, tmp_path / f"d{i}.log").start())
    wait_for(lambda: ready_consumers(r) == 3, 30, "three daemons ready")
    expected = load(r, N, span_minutes=90)
    wait_for(lambda: drained(r, N), 90, "the stream to drain")
    counted = []
    for d in daemons:
        rc, took = d.terminate_and_wait()
        assert rc == 0, d.output()
        assert took < 5
    for key in r.scan_iter("quantum:p35:status:consumer:*"):
        counted.append(int(r.hget(key, "counted") or 0))
    assert_exact(r, expected)
    assert sum(counted) == N
    assert sum(1 for c in counted if c > 0) >= 2, f"work was not shared: {counted}"


def test_sigterm_mid_drain_exits_zero_fast_and_leaves_nothing_pending(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """SIGTERM mid-drain: exit 0 within 5 s, all it read counted; a successor ends exact."""
    expected = load(r, N, span_minutes=90)
    env = {**base_env, "P35_BATCH_SIZE": "100", "P35_FLUSH_MAX_ENTRIES": "3000"}
    d = Daemon(env, tmp_path / "term.log").start()
    daemons.append(d)
    wait_for(lambda: entries_read(r) >= N // 5, 60, "a fifth of the stream read")
    rc, took = d.terminate_and_wait()
    assert rc == 0, d.output()
    assert took < 5.0
    info = group_info(r)
    assert info["pending"] == 0, "entries read before the stop were left pending"
    assert int(r.hget("quantum:p35:status", "processed_total")) == info["entries-read"]
    assert int(info["entries-read"]) < N, "the stop came after the drain; the test proved nothing"
    assert r.hget("quantum:p35:status", "state") == b"stopped"
    successor = Daemon(env, tmp_path / "successor.log").start()
    daemons.append(successor)
    wait_for(lambda: drained(r, N), 90, "the stream to drain")
    assert successor.terminate_and_wait()[0] == 0
    assert_exact(r, expected)


def test_daily_rollups_across_midnight_stay_exact_through_a_kill_and_two_daemons(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Entries from 23:50 to 00:10 (UTC, yesterday's midnight): one daemon SIGKILLed mid-drain,
    then two daemons finish. Both days' rollups are exact (assert_exact checks them)."""
    sec, _ = r.time()
    midnight_ms = (sec // 86_400 - 1) * 86_400_000  # the start of yesterday, UTC
    expected = load(r, N, span_minutes=20, end_ms=midnight_ms + 10 * 60_000)
    assert len({k[:-4] for k in expected}) == 2  # two days' worth of minute buckets
    env = {
        **base_env,
        "P35_BATCH_SIZE": "100",
        "P35_FLUSH_MAX_ENTRIES": "3000",
        "P35_ACK_INTERVAL_SEC": "30",
    }
    first = Daemon(env, tmp_path / "first.log").start()
    daemons.append(first)
    wait_for(lambda: entries_read(r) >= N // 3, 60, "a third of the stream read")
    first.signal(signal.SIGKILL)
    first.wait(10)
    for i in range(2):
        daemons.append(Daemon(base_env, tmp_path / f"d{i}.log").start())
    wait_for(lambda: drained(r, N), 90, "the stream to drain")
    for d in daemons[1:]:
        assert d.terminate_and_wait()[0] == 0
    assert_exact(r, expected)
    day = midnight_ms // 86_400_000
    for d in (day - 1, day):
        key = f"quantum:p35:daily:{time.strftime('%Y%m%d', time.gmtime(d * 86_400))}"
        assert r.execute_command("EXPIRETIME", key) == (d + 1 + 90) * 86_400


def test_a_minute_whose_bucket_expires_unrolled_while_the_daemon_is_down_reaches_its_day(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Issue 27 #2: a daemon killed after its flush and before its roll-up leaves its
    minutes listed; when it stays down past their buckets' lifetime (2 days by default,
    11 minutes with P35_BUCKET_TTL_SEC=660), the buckets expire. The roll-up struck such
    a minute off without adding it to its day: the daily sum was 0 for 200 entries. Each
    day's rollup now holds exactly that day's entries, whatever expired meanwhile."""
    env = {**base_env, "P35_SNAPSHOT_INTERVAL_SEC": "60"}  # no second turn before the kill
    first = Daemon(env, tmp_path / "first.log", name="first").start()
    daemons.append(first)
    wait_for(lambda: r.hexists(keys.STATUS, "snapshot_ts"), 30, "the first snapshot turn")
    rows = [({"symbol": "BTCUSDT", "executed": "true"}, "EXECUTE", "none")] * 100
    rows += [({"symbol": "ETHUSDT", "executed": "false", "error": "risk_paused"}, "BLOCKED",
              "risk_paused")] * 100  # fmt: skip
    want: dict[str, Counter[str]] = {}
    for fields, decision, reason in rows:
        day = keys.daily(minute_of_id(r.xadd(STREAM, fields)) // 1440)
        want.setdefault(day, Counter()).update(
            [f"decision:{decision}", f"reason:{reason}",
             f"symbol_decision:{fields['symbol']}:{decision}"]
        )  # fmt: skip
    wait_for(lambda: drained(r, len(rows)), 30, "every entry counted")
    first.signal(signal.SIGKILL)
    first.wait(10)
    listed = [int(m) for m in r.hkeys(keys.UNROLLED)]
    assert listed, "killed before its roll-up: the minutes are still listed"
    for minute in listed:  # down past the buckets' lifetime: they expire meanwhile
        r.delete(keys.bucket(minute), keys.bucket_meta(minute))

    second = Daemon(env, tmp_path / "second.log", name="second").start()
    daemons.append(second)
    wait_for(lambda: r.exists(keys.consumer_status("second")), 30, "the second daemon ready")
    assert second.terminate_and_wait()[0] == 0  # a daemon that stops rolls up what is listed
    assert not r.hlen(keys.UNROLLED)
    got = {
        k.decode(): {f.decode(): int(v) for f, v in r.hgetall(k).items()}
        for k in r.scan_iter("quantum:p35:daily:*")
    }
    assert got == {day: dict(c) for day, c in want.items()}
    assert not list(r.scan_iter("quantum:p35:rollcopy:*")), "each copy goes once it is rolled"
