"""Window snapshots: right sums, atomic replacement, no key for an empty window, once per group."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from decision_intel import keys
from decision_intel.daemon.snapshots import Snapshotter
from decision_intel.devtools.testing import RedisServer
from decision_intel.settings import Settings
from decision_intel.store.client import connect
from tests.helpers import Daemon, RawRedis, drained, snapshot, wait_for
from tests.traffic import load


def expected_windows(
    expected: dict[str, Counter[str]], now_minute: int
) -> dict[str, tuple[Counter[str], Counter[str]]]:
    out = {}
    for window, length in keys.WINDOWS.items():
        decisions: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for minute in range(now_minute - length + 1, now_minute + 1):
            for field, n in expected.get(keys.bucket(minute), Counter()).items():
                kind, _, name = field.partition(":")
                if kind == "decision":
                    decisions[name] += n
                elif kind == "reason":
                    reasons[name] += n
        out[window] = (decisions, reasons)
    return out


def expected_symbol_windows(
    expected: dict[str, Counter[str]], now_minute: int
) -> dict[str, dict[str, tuple[Counter[str], Counter[str]]]]:
    """Per window, per symbol seen in it: (decision counts, reason counts)."""
    out: dict[str, dict[str, tuple[Counter[str], Counter[str]]]] = {}
    for window, length in keys.WINDOWS.items():
        per: dict[str, tuple[Counter[str], Counter[str]]] = {}
        for minute in range(now_minute - length + 1, now_minute + 1):
            for field, n in expected.get(keys.bucket(minute), Counter()).items():
                kind, _, rest = field.partition(":")
                if kind in ("symbol_decision", "symbol_reason"):
                    symbol, _, name = rest.partition(":")
                    pair = per.setdefault(symbol, (Counter(), Counter()))
                    pair[0 if kind == "symbol_decision" else 1][name] += n
        out[window] = per
    return out


def plant(r: RawRedis, minute: int, fields: dict[str, int]) -> None:
    """A bucket as the flush script leaves it: the fields, and their copy in its meta hash."""
    r.hset(keys.bucket(minute), mapping=fields)
    r.hset(keys.bucket_meta(minute), mapping={**fields, "v": 1})


def drain_with_daemon(r: RawRedis, env: dict[str, str], log: Path, n: int) -> None:
    d = Daemon(env, log).start()
    try:
        wait_for(lambda: drained(r, n), 60, "drain")
    finally:
        assert d.terminate_and_wait()[0] == 0


@pytest.mark.e2e
def test_snapshot_values_are_the_sums_of_the_right_buckets(
    r: RawRedis, redis_server: RedisServer, base_env: dict[str, str], tmp_path: Path
) -> None:
    sec, _ = r.time()
    now_ms = sec * 1000
    expected = load(r, 6_000, span_minutes=90, end_ms=now_ms - 1)
    drain_with_daemon(r, base_env, tmp_path / "d.log", 6_000)
    snapshot(redis_server.url, now_ms, top_reasons=3)
    want = expected_windows(expected, now_ms // 60_000)
    want_symbols = expected_symbol_windows(expected, now_ms // 60_000)
    for window, (decisions, reasons) in want.items():
        got = {k.decode(): int(v) for k, v in r.hgetall(keys.decision_counts(window)).items()}
        assert got == dict(decisions), window
        top = r.zrevrange(keys.reason_top(window), 0, -1, withscores=True)
        if not decisions:  # 1m, when `now` is a minute's first second: no keys
            assert not top
            continue
        assert len(top) == min(3, len(reasons))
        for reason, score in top:
            assert reasons[reason.decode()] == score
        assert min(s for _, s in top) >= sorted(reasons.values())[-len(top)]
        assert 0 < r.ttl(keys.decision_counts(window)) <= 86_400
        for symbol, (sym_decisions, sym_reasons) in want_symbols[window].items():
            got = {
                k.decode(): int(v)
                for k, v in r.hgetall(keys.symbol_decision_counts(symbol, window)).items()
            }
            assert got == dict(sym_decisions), (window, symbol)
            ranked = r.zrevrange(keys.symbol_reason_top(symbol, window), 0, -1, withscores=True)
            assert {k.decode(): v for k, v in ranked} == {
                k: v for k, v in sym_reasons.items() if k in {x.decode() for x, _ in ranked}
            }
        registry = {s.decode() for s in r.smembers(keys.symbols_in(window))}
        assert registry == set(want_symbols[window]), window
    assert sum(want["1h"][0].values()) > sum(want["15m"][0].values()) > 0


def test_an_empty_window_has_no_keys_and_stale_copies_go(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """Traffic only 20-50 minutes ago: 1m/5m/15m have no keys (old copies removed); 1h has."""
    sec, _ = r.time()
    now_ms = sec * 1000
    for window in ("1m", "5m", "15m"):
        r.hset(keys.decision_counts(window), "SKIP", 99)
        r.zadd(keys.reason_top(window), {"stale": 99})
    plant(r, now_ms // 60_000 - 30, {"decision:SKIP": 4, "reason:no_position": 4})
    snapshot(redis_server.url, now_ms)
    for window in ("1m", "5m", "15m"):
        assert not r.exists(keys.decision_counts(window), keys.reason_top(window)), window
    assert r.hgetall(keys.decision_counts("1h")) == {b"SKIP": b"4"}
    assert r.zrange(keys.reason_top("1h"), 0, -1, withscores=True) == [(b"no_position", 4.0)]


def test_per_symbol_keys_follow_their_symbol_in_and_out_of_each_window(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """BTC now and 10 min ago, ETH 30 min ago: keys where they have data, none elsewhere;
    45 minutes later ETH has left every window and BTC all but 1h, and their keys go."""
    now_minute = r.time()[0] // 60
    btc = {
        "decision:EXECUTE": 1,
        "reason:none": 1,
        "symbol_decision:BTCUSDT:EXECUTE": 1,
        "symbol_reason:BTCUSDT:none": 1,
    }
    eth = {
        "decision:BLOCKED": 3,
        "reason:risk_paused": 3,
        "symbol_decision:ETHUSDT:BLOCKED": 3,
        "symbol_reason:ETHUSDT:risk_paused": 3,
    }
    plant(r, now_minute, btc)
    plant(r, now_minute - 10, btc)
    plant(r, now_minute - 30, eth)

    def holders(window: str) -> set[str]:
        return {k.decode().split(":")[3] for k in r.scan_iter(f"quantum:p35:symbol:*:{window}")}

    snapshot(redis_server.url, now_minute * 60_000 + 1)
    assert {w: holders(w) for w in keys.WINDOWS} == {
        "1m": {"BTCUSDT"},
        "5m": {"BTCUSDT"},
        "15m": {"BTCUSDT"},
        "1h": {"BTCUSDT", "ETHUSDT"},
    }
    assert r.hgetall(keys.symbol_decision_counts("BTCUSDT", "15m")) == {b"EXECUTE": b"2"}
    assert r.hgetall(keys.symbol_decision_counts("BTCUSDT", "5m")) == {b"EXECUTE": b"1"}
    assert r.zrange(keys.symbol_reason_top("ETHUSDT", "1h"), 0, -1, withscores=True) == [
        (b"risk_paused", 3.0)
    ]
    assert 0 < r.ttl(keys.symbol_reason_top("ETHUSDT", "1h")) <= 86_400

    snapshot(redis_server.url, (now_minute + 45) * 60_000 + 1)
    assert {w: holders(w) for w in keys.WINDOWS} == {
        "1m": set(),
        "5m": set(),
        "15m": set(),
        "1h": {"BTCUSDT"},
    }
    assert r.smembers(keys.symbols_in("15m")) == set()
    assert r.hgetall(keys.symbol_decision_counts("BTCUSDT", "1h")) == {b"EXECUTE": b"2"}


def test_a_reader_never_sees_a_snapshot_missing_or_half_built(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """A reader polls while the snapshot is rebuilt 150 times: always whole, never absent."""
    sec, _ = r.time()
    now_ms = sec * 1000
    minute = now_ms // 60_000
    total = 0
    for m in range(minute - 59, minute + 1):
        fields = {f"decision:{d}": 3 for d in ("SKIP", "BLOCKED", "EXECUTE")}
        fields.update({f"reason:gate_{i}": 1 for i in range(9)})
        plant(r, m, fields)
        total += 9
    stop = threading.Event()
    seen: list[tuple[int, int]] = []
    bad: list[str] = []

    def reader() -> None:
        client = RawRedis(port=redis_server.port)
        while not stop.is_set():
            pipe = client.pipeline(transaction=False)
            pipe.hgetall(keys.decision_counts("1h"))
            pipe.zcard(keys.reason_top("1h"))
            counts, zcard = pipe.execute()
            got = sum(int(v) for v in counts.values())
            seen.append((got, zcard))
            if got != total or zcard != 9:
                bad.append(f"sum {got} zcard {zcard}")
        client.close()

    snapshot(redis_server.url, now_ms)
    thread = threading.Thread(target=reader)
    thread.start()

    async def rebuild() -> None:
        s = Settings(redis_url=redis_server.url)
        client = connect(s)
        for _ in range(150):
            await Snapshotter(s, client, "test").run(now_ms)  # fresh cache: full rewrite
        await client.aclose()

    asyncio.run(rebuild())
    stop.set()
    thread.join()
    assert len(seen) > 100, "the reader did not overlap the rebuilds"
    assert not bad, bad[:5]


def test_only_one_daemon_per_interval_rebuilds(r: RawRedis, redis_server: RedisServer) -> None:
    """Across the group, the lock lets exactly one of several daemons rebuild per interval."""

    async def go() -> list[bool]:
        s = Settings(redis_url=redis_server.url, snapshot_interval_sec=30)
        results = []
        for name in ("a", "b", "c", "a"):
            client = connect(s)
            built = await Snapshotter(s, client, name).maybe_run(time.monotonic())
            results.append(built is not None)
            await client.aclose()
        return results

    assert asyncio.run(go()) == [True, False, False, False]


def test_rebuild_rereads_only_buckets_that_changed(r: RawRedis, redis_server: RedisServer) -> None:
    """The change counter lets a rebuild skip unchanged buckets, yet pick up a changed one."""
    now_ms = 1_795_000_000_000
    minute = now_ms // 60_000

    async def go() -> tuple[int, int, int]:
        s = Settings(redis_url=redis_server.url)
        client = connect(s)
        for m in (minute, minute - 3):
            for key in (keys.bucket(m), keys.bucket_meta(m)):
                await client.hset(key, mapping={"decision:SKIP": 1, "reason:a": 1})
            await client.hset(keys.bucket_meta(m), "v", 1)
        snap = Snapshotter(s, client, "x")

        async def total_5m() -> int:
            windows = await snap.run(now_ms)
            assert windows is not None  # this daemon's turn: it built them
            return windows["5m"].total

        first = await total_5m()
        for key in (keys.bucket(minute - 3), keys.bucket_meta(minute - 3)):
            await client.hset(key, mapping={"decision:SKIP": 5, "reason:a": 5})
        unchanged = await total_5m()  # same version: cache used
        await client.hincrby(keys.bucket_meta(minute - 3), "v", 1)
        changed = await total_5m()
        await client.aclose()
        return first, unchanged, changed

    assert asyncio.run(go()) == (2, 2, 6)


def test_an_unchanged_hour_is_not_rebuilt_within_its_minute(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """Idle: no bucket changed since the last rebuild in this minute, so only snapshot_ts
    moves and nothing is handed to the alerts; a change, or the next minute, rebuilds."""
    now_ms = 1_795_000_000_000 + 5_000
    minute = now_ms // 60_000

    async def go() -> list[object]:
        s = Settings(redis_url=redis_server.url)
        client = connect(s)
        for key in (keys.bucket(minute), keys.bucket_meta(minute)):
            await client.hset(key, mapping={"decision:SKIP": 2, "reason:a": 2})
        await client.hset(keys.bucket_meta(minute), "v", 1)
        snap = Snapshotter(s, client, "x")
        out: list[object] = []
        for step_ms, change in ((0, False), (1_000, False), (2_000, True), (60_000, False)):
            if change:
                await client.hincrby(keys.bucket_meta(minute), "v", 1)
            built = await snap.run(now_ms + step_ms, skip_unchanged=True)
            ts = float(await client.hget(keys.STATUS, "snapshot_ts") or 0)
            out.append((built is not None, ts == (now_ms + step_ms) / 1000))
        await client.aclose()
        return out

    assert asyncio.run(go()) == [(True, True), (False, True), (True, True), (True, True)]


async def _plant(client: Any, minute: int, skips: int) -> None:
    """A bucket and its meta copy as a flush leaves them (version 1)."""
    for key in (keys.bucket(minute), keys.bucket_meta(minute)):
        await client.hset(key, mapping={"decision:SKIP": skips, "reason:a": skips})
    await client.hset(keys.bucket_meta(minute), "v", 1)


async def _add_behind_the_flush(client: Any, minute: int, skips: int) -> None:
    """A change a flush would make, but not by a flush: processed_total stays."""
    for key in (keys.bucket(minute), keys.bucket_meta(minute)):
        await client.hincrby(key, "decision:SKIP", skips)
    await client.hincrby(keys.bucket_meta(minute), "v", 1)


@pytest.mark.parametrize("ttl_s, sees_change", [(172_800, False), (120, True)])
def test_an_idle_turn_reads_no_bucket_while_processed_total_stands_still(
    r: RawRedis, redis_server: RedisServer, ttl_s: int, sees_change: bool
) -> None:
    """Every flush that changes a bucket moves the group's processed_total with it, so
    a turn that finds the same total in the same minute reads no bucket: a change made
    behind the flush's back goes unseen, which proves nothing was read. A new total,
    or the next minute, rebuilds. With buckets that can expire inside a window (a TTL
    under the hour), a window can change with no flush: the turn reads them again."""
    now_ms = 1_795_000_000_000 + 5_000
    minute = now_ms // 60_000

    async def go() -> list[int | None]:
        s = Settings(redis_url=redis_server.url, bucket_ttl_sec=ttl_s)
        client = connect(s)
        await _plant(client, minute, 2)
        snap = Snapshotter(s, client, "x")
        totals: list[int | None] = []
        steps = ((0, b"7", False), (1_000, b"7", True), (2_000, b"8", False), (60_000, b"8", False))
        for step_ms, processed, behind_the_back in steps:
            if behind_the_back:
                await _add_behind_the_flush(client, minute, 3)
            built = await snap.run(now_ms + step_ms, skip_unchanged=True, processed=processed)
            totals.append(None if built is None else built["1h"].total)
            ts = float(await client.hget(keys.STATUS, "snapshot_ts") or 0)
            assert ts == (now_ms + step_ms) / 1000  # the keys say they are current
        await client.aclose()
        return totals

    expected = [2, 5, None, 5] if sees_change else [2, None, 5, 5]
    assert asyncio.run(go()) == expected


def test_the_turn_reads_processed_total_and_skips_the_buckets_while_it_stands_still(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """The daemon's own path (maybe_run): the turn's round trip carries processed_total.
    A change behind the flush's back is not seen while the total stands still; once the
    total moves, the turn rebuilds."""

    async def turn(snap: Snapshotter) -> int | None:
        snap.next_try_s = 0.0
        r.delete(keys.SNAPSHOT_LOCK)
        built = await snap.maybe_run(time.monotonic())
        return None if built is None else built[0]["1h"].total

    async def go() -> tuple[list[int | None], set[int]]:
        s = Settings(redis_url=redis_server.url)
        client = connect(s)
        sec, _ = r.time()
        minute = int(sec) // 60
        await _plant(client, minute, 2)
        snap = Snapshotter(s, client, "x")
        got = [await turn(snap)]
        await _add_behind_the_flush(client, minute, 3)
        got.append(await turn(snap))  # the total stood still (absent counts as 0)
        await client.hincrby(keys.STATUS, "processed_total", 3)
        got.append(await turn(snap))
        minutes = {int(r.time()[0]) // 60, minute}
        await client.aclose()
        return got, minutes

    for _ in range(3):  # a turn in the next minute rebuilds anyway: try again then
        got, minutes = asyncio.run(go())
        if len(minutes) == 1:
            break
        r.flushdb()
    assert got == [2, None, 5]
