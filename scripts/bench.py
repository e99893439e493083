#!/usr/bin/env python3
"""make bench: p35 against the raw read speed and the naive design, on one stream.

Starts its own throwaway redis-server, loads N realistic entries (both producers'
shapes, parametric errors), and gives each contender its own consumer group on
that same stream:

  ceiling  XREADGROUP COUNT 1000 + one XACK per batch, no processing (just before
           p35 and just after: the mean of the two)
  naive    per entry: HINCRBY decision, reason, symbol_reason, EXPIRE, XACK
  p35      the real `p35 run` process, from its first read until the group has
           no lag and nothing pending

Then: end-to-end latency at a steady rate, peak RSS on a large backlog, and the
time to rebuild every snapshot over an hour of wide buckets. Medians over runs.

  scripts/bench.py                       # the full set (about 15 minutes)
  scripts/bench.py --entries 50000 --runs 1 --latency-sec 10 --backlog 200000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis
import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.daemon.snapshots import Snapshotter
from decision_intel.devtools.producers import (
    STREAM,
    Shape,
    bad_day_entry,
    entry,
    write_backlog,
    write_live,
)
from decision_intel.devtools.testing import RedisServer
from decision_intel.model.batch import Batch
from decision_intel.model.classify import Classifier, classify
from decision_intel.settings import load as load_settings
from decision_intel.store import scripts
from decision_intel.store.flush import flush_args, flush_keys
from decision_intel.store.reads import redis_now_ms, time_ms

P35 = str(Path(sys.executable).parent / "p35")
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- clients ---------------------------------------------------------------------------


# The bench reads raw RESP2 replies (bytes). redis-py 8 types each reply as the union of
# every shape it could take (RESP2/RESP3, bytes/str, None); as src/ holds its replies as
# Any, and tests/helpers.py's RawRedis, the bench's clients give replies mypy does not check.
def sync_client(url: str, **kwargs: Any) -> Any:
    return redis.Redis.from_url(url, **kwargs)


def async_client(url: str) -> Any:
    return aioredis.from_url(url)


# -- a throwaway redis-server ---------------------------------------------------------


@contextmanager
def redis_server() -> Iterator[str]:
    workdir = Path(tempfile.mkdtemp(prefix="p35-bench-"))
    server = RedisServer(workdir)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


TRAFFICS: dict[str, Shape] = {"producers": entry, "bad day": bad_day_entry}
"""The drains' two traffics (producers.py says what a bad day holds)."""


def load(url: str, n: int, seed: int, stream: str = STREAM, shape: Shape = entry) -> None:
    r = sync_client(url)
    write_backlog(r, random.Random(seed), n, 60, stream, shape)
    r.close()


def group_state(r: Any, group: str, stream: str = STREAM) -> dict[str, int]:
    for g in r.xinfo_groups(stream):
        if g["name"].decode() == group:
            return {"read": g["entries-read"] or 0, "lag": g["lag"], "pending": g["pending"]}
    return {"read": 0, "lag": -1, "pending": -1}


# -- Redis time: what a contender's commands take -----------------------------------


BENCH_CLIENT = "p35-bench"
"""The name of the bench's own connections (producer, control): left out of Redis time."""
SCRIPTS_BY_SHA = {
    hashlib.sha1(scripts.source(name).encode()).hexdigest(): name for name in scripts.NAMES
}
NESTED = b"?:0"
"""SLOWLOG's client address for a command a script ran: its time is inside the script's."""


def slowlog_all(r: Any) -> None:
    """Log every command from now on (SLOWLOG's duration is commandstats' usec, per call)."""
    r.config_set("slowlog-log-slower-than", 0)
    r.config_set("slowlog-max-len", 5_000_000)
    r.slowlog_reset()


def command_us(r: Any) -> dict[str, float]:
    """Redis time of every command sent since the last reset, by what ran, in µs; the bench's
    own connections left out, and so is a command a script ran (it is inside the script's
    time). commandstats alone cannot tell those apart: it counts both."""
    out: dict[str, float] = {}
    for e in r.slowlog_get(-1):
        if e["client_address"] == NESTED or e["client_name"] == BENCH_CLIENT.encode():
            continue
        words = e["command"].split(maxsplit=2)
        name = words[0].decode().lower()
        if name == "evalsha" and len(words) > 1:
            name = "script:" + SCRIPTS_BY_SHA.get(words[1].decode(), "other")
        out[name] = out.get(name, 0.0) + e["duration"]
    r.slowlog_reset()
    return out


# -- ceiling and naive: run in a child process, so each has a clean interpreter --------


async def _ceiling(url: str, group: str, _cap_s: float) -> int:
    r = async_client(url)
    done = 0
    while True:
        reply = await r.xreadgroup(group, "ceiling", {STREAM: ">"}, count=1000)
        if not reply or not reply[0][1]:
            break
        ids = [entry_id for entry_id, _ in reply[0][1]]
        await r.xack(STREAM, group, *ids)
        done += len(ids)
    await r.aclose()
    return done


async def _naive_count(r: Any, group: str, entry_id: bytes, fields: dict) -> None:
    """The original design, per entry: five commands, each its own round trip."""
    c = classify(fields)
    key = keys.bucket(keys.minute_of_id(entry_id))
    await r.hincrby(key, f"decision:{c.decision}", 1)
    await r.hincrby(key, f"reason:{c.reason}", 1)
    await r.hincrby(key, f"symbol_reason:{c.symbol}:{c.reason}", 1)
    await r.expire(key, 172_800)
    await r.xack(STREAM, group, entry_id)


async def _naive(url: str, group: str, cap_s: float) -> int:
    """The naive design draining a backlog, for at most cap_s."""
    r = async_client(url)
    done = 0
    deadline = time.monotonic() + cap_s
    while time.monotonic() < deadline:
        reply = await r.xreadgroup(group, "naive", {STREAM: ">"}, count=100)
        if not reply or not reply[0][1]:
            break
        for entry_id, fields in reply[0][1]:
            await _naive_count(r, group, entry_id, fields)
            done += 1
    await r.aclose()
    return done


async def _naive_live(url: str, group: str, _cap_s: float) -> int:
    """The naive design live: a blocking read, then five round trips per entry."""
    r = async_client(url)
    while True:
        reply = await r.xreadgroup(group, "naive", {STREAM: ">"}, count=100, block=1000)
        for entry_id, fields in reply[0][1] if reply else []:
            await _naive_count(r, group, entry_id, fields)


async def _ceiling_live(url: str, group: str, _cap_s: float) -> int:
    """The raw reader live: what reading and acknowledging the entries costs at all."""
    r = async_client(url)
    while True:
        reply = await r.xreadgroup(group, "ceiling", {STREAM: ">"}, count=1000, block=1000)
        if reply and reply[0][1]:
            await r.xack(STREAM, group, *[entry_id for entry_id, _ in reply[0][1]])


def reader_child(kind: str, url: str, group: str, cap_s: float) -> None:
    fn = {
        "ceiling": _ceiling,
        "naive": _naive,
        "naive-live": _naive_live,
        "ceiling-live": _ceiling_live,
    }[kind]
    t0, c0 = time.perf_counter(), time.process_time()
    done = asyncio.run(fn(url, group, cap_s))
    print(
        json.dumps(
            {
                "entries": done,
                "seconds": time.perf_counter() - t0,
                "cpu_s": time.process_time() - c0,
            }
        )
    )


def run_reader(kind: str, url: str, group: str, cap_s: float) -> dict[str, float]:
    sync_client(url).xgroup_create(STREAM, group, id="0")
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, url, group, str(cap_s)],
        check=True,
        capture_output=True,
        text=True,
    )
    res = json.loads(out.stdout)
    res["rate"] = res["entries"] / res["seconds"]
    return res


# -- p35 --------------------------------------------------------------------------------


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


EXTRA_ENV: dict[str, str] = {}
"""Settings for every p35 run of the benchmark (--set NAME=VALUE), to compare tunings."""


def p35_env(url: str, group: str, stream: str = STREAM) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P35_", "REDIS_"))}
    env.update(
        P35_REDIS_URL=url,
        P35_GROUP=group,
        P35_STREAM=stream,
        P35_CONSUMER="bench",
        P35_LOG_LEVEL="WARNING",
    )
    env.update(EXTRA_ENV)
    return env


def run_p35(url: str, group: str, total: int) -> dict[str, float]:
    """Drain `total` entries with a real `p35 run`; time from first read to fully drained."""
    r = sync_client(url)
    r.xgroup_create(STREAM, group, id="0")
    proc = subprocess.Popen([P35, "run"], env=p35_env(url, group), stdout=subprocess.DEVNULL)
    try:
        t0 = c0 = None
        while True:
            st = group_state(r, group)
            now = time.perf_counter()
            if t0 is None and st["read"] > 0:
                t0, c0 = now, proc_cpu_s(proc.pid)
            if st["lag"] == 0 and st["pending"] == 0 and st["read"] >= total:
                assert t0 is not None and c0 is not None  # total > 0: read since the start
                seconds, cpu = now - t0, proc_cpu_s(proc.pid) - c0
                hwm = proc_hwm_mb(proc.pid)
                break
            if proc.poll() is not None:
                raise RuntimeError(f"p35 run exited with {proc.returncode}")
            time.sleep(0.005)
        # Every entry counted, in the status total and in the buckets.
        counted = int(r.hget("quantum:p35:status", "processed_total") or 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
        r.close()
    return {
        "entries": total,
        "seconds": seconds,
        "cpu_s": cpu,
        "rate": total / seconds,
        "hwm_mb": hwm,
        "counted": counted,
    }


def drain_round(
    entries: int, seed: int, naive_cap_s: float, shape: Shape = entry
) -> dict[str, dict[str, float]]:
    """Each contender drains the same stream. The raw reader drains it just before p35 and
    again just after, and counts as the mean of the two: the machine's speed drifts, and a
    ratio of two drains seconds apart would carry that drift."""
    with redis_server() as url:
        load(url, entries, seed, shape=shape)
        naive = run_reader("naive", url, "bench_naive", naive_cap_s)
        before = run_reader("ceiling", url, "bench_ceiling", 0)
        p35 = run_p35(url, "bench_p35", entries)
        after = run_reader("ceiling", url, "bench_ceiling_after", 0)
        ceiling = {k: (before[k] + after[k]) / 2 for k in ("entries", "seconds", "cpu_s")}
        ceiling["rate"] = ceiling["entries"] / ceiling["seconds"]
        ceiling["rate_before"], ceiling["rate_after"] = before["rate"], after["rate"]
        out = {"ceiling": ceiling, "naive": naive, "p35": p35}
        if out["p35"]["counted"] != entries:
            raise RuntimeError(f"p35 counted {out['p35']['counted']} of {entries}")
        return out


# -- end-to-end latency ------------------------------------------------------------------


async def _latency(url: str, rate: int, seconds: float) -> dict[str, float]:
    """Entries at a steady rate; an entry's latency runs from its XADD (the ID's time) to
    the first poll that sees it counted. The status total moves in the same script as the
    bucket increments, and one consumer counts in stream order, so entry k is counted
    when processed_total > k."""
    r = async_client(url)
    rng = random.Random(7)
    added: list[int] = []  # ID milliseconds, in stream order
    seen: list[tuple[int, int]] = []  # (server ms, processed_total)
    stop = asyncio.Event()

    async def produce() -> None:
        t0 = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - t0) < seconds:
            due = int(elapsed * rate) - sent
            if due > 0:
                async with r.pipeline(transaction=False) as pipe:
                    for _ in range(due):
                        pipe.xadd(STREAM, entry(rng))
                    ids = await pipe.execute()
                added.extend(int(i.split(b"-")[0]) for i in ids)
                sent += due
            await asyncio.sleep(0.002)

    async def watch() -> None:
        while not stop.is_set():
            async with r.pipeline(transaction=False) as pipe:
                pipe.time().hget("quantum:p35:status", "processed_total")
                now, total = await pipe.execute()
            seen.append((time_ms(now), int(total or 0)))
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    await produce()
    deadline = time.monotonic() + 10
    while (not seen or seen[-1][1] < len(added)) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    stop.set()
    await watcher
    await r.aclose()

    latencies = []
    i = 0
    for k, added_ms in enumerate(added):
        while i < len(seen) and seen[i][1] <= k:
            i += 1
        if i == len(seen):
            raise RuntimeError(f"entry {k} of {len(added)} was never counted")
        latencies.append(max(0, seen[i][0] - added_ms))
    latencies.sort()
    return {
        "entries": len(added),
        "p50_ms": latencies[len(latencies) // 2],
        "p99_ms": latencies[int(len(latencies) * 0.99)],
        "max_ms": latencies[-1],
    }


def latency_round(rate: int, seconds: float) -> dict[str, float]:
    with redis_server() as url:
        r = sync_client(url)
        r.xgroup_create(STREAM, "bench_p35", id="$", mkstream=True)
        proc = subprocess.Popen(
            [P35, "run"], env=p35_env(url, "bench_p35"), stdout=subprocess.DEVNULL
        )
        while not r.exists("quantum:p35:status:consumer:bench"):
            time.sleep(0.02)
        try:
            out = asyncio.run(_latency(url, rate, seconds))
            out["hwm_mb"] = proc_hwm_mb(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
        return out


# -- steady state: CPU and Redis time at live rates ---------------------------------------


def _at_rate(r: Any, rng: random.Random, rate: int, seconds: float) -> None:
    if rate:
        write_live(r, rng, rate, seconds)
    else:
        time.sleep(seconds)


def _started(r: Any, kind: str) -> bool:
    """p35 built its first snapshot; a reader child, its imports done, waits on its first
    read (a blocked XREADGROUP on an empty stream creates no consumer yet: CLIENT LIST)."""
    if kind == "p35":
        return bool(r.hget("quantum:p35:status", "snapshot_ts"))
    return any(c.get("cmd") == "xreadgroup" for c in r.client_list())


def steady_round(
    kind: str, rates: list[int], seconds: float, idle_s: float, warmup_s: float = 2.0
) -> dict[str, dict[str, Any]]:
    """One contender (p35, naive or the raw reader) at each rate: its CPU as % of a core
    (from /proc) and the Redis time its commands take as % of Redis's core (every
    command it sent, as SLOWLOG times them, the producer's XADDs left out). Idle (rate 0)
    is measured over `idle_s`: the kernel charges CPU in 10 ms ticks, and a few seconds
    idle hold only a few of them."""
    with redis_server() as url:
        r = sync_client(url, client_name=BENCH_CLIENT)
        rng = random.Random(11)
        r.xgroup_create(STREAM, "bench_live", id="$", mkstream=True)
        if kind == "p35":
            proc = subprocess.Popen(
                [P35, "run"], env=p35_env(url, "bench_live"), stdout=subprocess.DEVNULL
            )
        else:
            cmd = [sys.executable, __file__, "--child", f"{kind}-live", url, "bench_live", "0"]
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        out: dict[str, dict[str, Any]] = {}
        try:
            deadline = time.monotonic() + 60
            while not _started(r, kind):  # start-up is not measured
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{kind} did not start (exit status {proc.poll()})")
                time.sleep(0.02)
            for rate in rates:
                _at_rate(r, rng, rate, warmup_s)
                slowlog_all(r)
                c0, t0 = proc_cpu_s(proc.pid), time.monotonic()
                _at_rate(r, rng, rate, seconds if rate else idle_s)
                took = time.monotonic() - t0
                cpu = proc_cpu_s(proc.pid) - c0
                parts = command_us(r)
                out[str(rate)] = {
                    "cpu_pct": cpu / took * 100,
                    "redis_pct": sum(parts.values()) / took / 1e4,
                    "redis_parts_pct": {k: v / took / 1e4 for k, v in parts.items()},
                }
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
            r.close()
        return out


# -- the flush script and the consumer group, per call ---------------------------------------


def _produce(r: Any, rng: random.Random, n: int) -> None:
    pipe = r.pipeline(transaction=False)
    for _ in range(n):
        pipe.xadd(STREAM, entry(rng))
    pipe.execute()


def flush_round(sizes: list[int], flushes: int) -> dict[str, dict[str, float]]:
    """Redis time per flush (lua/flush.lua) of batches of producer traffic read through the
    group, and what reading and acknowledging those entries costs per entry (XREADGROUP,
    XACK): the part of a flush that no counting design avoids. Medians over `flushes`."""
    settings = load_settings()
    classifier = Classifier(settings.vocabulary).classify
    rng = random.Random(7)
    out: dict[str, dict[str, float]] = {}
    with redis_server() as url:
        r = sync_client(url, client_name=BENCH_CLIENT)
        reader = sync_client(url)
        r.xgroup_create(STREAM, settings.group, id="$", mkstream=True)
        flush = reader.register_script(scripts.source("flush"))
        # Each reading below takes only its own command's name, and resets the log.
        slowlog_all(r)
        for size in sizes:
            per_flush, read_us, ack_us = [], [], []
            for _ in range(flushes):
                _produce(r, rng, size)
                got = reader.xreadgroup(settings.group, "bench", {STREAM: ">"}, count=size)[0][1]
                batch = Batch(settings.symbol_breakdown)
                now_ms = int(time.time() * 1000)
                batch.clock(now_ms, settings.max_id_skew_sec * 1000)
                for entry_id, fields in got:
                    batch.add(entry_id, fields, classifier(fields))
                args = flush_args(
                    settings, batch, consumer="bench", token="t", lease_ms=15_000, now_ms=now_ms
                )
                reply = flush(keys=flush_keys("bench"), args=args)
                if int(reply[0]) != 0:
                    raise RuntimeError(f"flush refused: {reply}")
                parts = command_us(r)
                per_flush.append(parts["script:flush"])
                read_us.append(parts["xreadgroup"] / size)
            # XACK alone, on entries read the same way (the flush's XACK is inside the script).
            for _ in range(flushes):
                _produce(r, rng, size)
                got = reader.xreadgroup(settings.group, "ack", {STREAM: ">"}, count=size)[0][1]
                reader.xack(STREAM, settings.group, *[entry_id for entry_id, _ in got])
                ack_us.append(command_us(r)["xack"] / size)
            out[str(size)] = {
                "flush_us": statistics.median(per_flush),
                "xreadgroup_us_per_entry": statistics.median(read_us),
                "xack_us_per_entry": statistics.median(ack_us),
            }
        reader.close()
        r.close()
    return out


# -- large backlog: peak RSS -----------------------------------------------------------------


def backlog_round(entries: int) -> dict[str, float]:
    with redis_server() as url:
        load(url, entries, 1)
        return run_p35(url, "bench_p35", entries)


# -- event-loop stalls -------------------------------------------------------------------------

STALL_LINE = re.compile(r"Executing (.*) took (\d+\.\d+) seconds")


def _stalls(text: str) -> list[tuple[float, str]]:
    """asyncio's debug-mode reports of a callback or task step that held the loop past
    100 ms: (ms, what), in the order they came."""
    return [(float(m[2]) * 1000, m[1][:120]) for m in STALL_LINE.finditer(text)]


def stall_round(symbols: int, reasons: int, entries: int) -> dict[str, Any]:
    """The real `p35 run` in asyncio's debug mode (which reports every step that holds the
    event loop over 100 ms, and slows the loop: an upper bound) over an hour of wide
    buckets: its first views round, a second one, then a drain of `entries`."""
    with redis_server() as url, tempfile.TemporaryFile("w+") as err:
        now_minute = int(time.time()) // 60
        plant_wide_buckets(url, symbols, reasons, now_minute)
        r = sync_client(url, client_name=BENCH_CLIENT)
        r.xgroup_create(STREAM, "bench_stall", id="$", mkstream=True)
        env = {**p35_env(url, "bench_stall"), "PYTHONASYNCIODEBUG": "1"}
        env["P35_SNAPSHOT_INTERVAL_SEC"] = "2"
        proc = subprocess.Popen([P35, "run"], env=env, stdout=subprocess.DEVNULL, stderr=err)
        try:
            deadline = time.monotonic() + 120
            first = None
            while True:  # two views rounds: the cold one and one after
                ts = r.hget("quantum:p35:status", "snapshot_ts")
                first = first or ts
                if ts and ts != first:
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"p35 made no second views round ({proc.poll()})")
                time.sleep(0.05)
            err.flush()
            views = _stalls(Path(f"/proc/{proc.pid}/fd/2").read_text())
            write_backlog(r, random.Random(5), entries, 1)
            while (st := group_state(r, "bench_stall"))["lag"] != 0 or st["pending"]:
                if proc.poll() is not None:
                    raise RuntimeError(f"p35 run exited with {proc.returncode}")
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)
            r.close()
        err.seek(0)
        every = _stalls(err.read())
    drain = every[len(views) :]
    longest_views, longest_drain = max(views, default=(0.0, "")), max(drain, default=(0.0, ""))
    return {
        "views_ms": longest_views[0],
        "views_what": longest_views[1],
        "drain_ms": longest_drain[0],
        "drain_what": longest_drain[1],
        "over_100ms": len(every),
    }


# -- snapshots over wide buckets ---------------------------------------------------------------


def plant_wide_buckets(url: str, symbols: int, reasons: int, now_minute: int) -> None:
    r = sync_client(url)
    rng = random.Random(3)
    names = [f"gate_{i:03d}" for i in range(reasons)]
    syms = [f"SYM{i:03d}USDT" for i in range(symbols)]
    decisions = ["EXECUTE", "SKIP", "BLOCKED", "ERROR"]
    pipe = r.pipeline(transaction=False)
    for minute in range(now_minute - 59, now_minute + 1):
        fields: dict[str, int] = {f"reason:{n}": rng.randint(1, 50) for n in names}
        fields["decision:BLOCKED"] = sum(fields.values())
        for s in syms:
            for d in decisions:
                fields[f"symbol_decision:{s}:{d}"] = rng.randint(1, 9)
            for n in rng.sample(names, 5):
                fields[f"symbol_reason:{s}:{n}"] = rng.randint(1, 9)
        pipe.hset(keys.bucket(minute), mapping=fields)
        # The meta hash as the flush script keeps it: counters, symbols seen, and
        # the copy of the decision and reason fields.
        meta: dict[str, int] = {"v": 1, "reasons": reasons, "symbols": symbols}
        meta.update((f"s:{s}", 1) for s in syms)
        meta.update((k, v) for k, v in fields.items() if k.startswith(("decision:", "reason:")))
        pipe.hset(keys.bucket_meta(minute), mapping=meta)
    pipe.execute()
    r.close()


async def _snapshot_times(url: str, repeats: int, per_symbol: bool) -> dict[str, float]:
    settings = load_settings(redis_url=url, symbol_breakdown=per_symbol)
    client = async_client(url)
    now_ms = int(time.time() * 1000)
    cold, warm = [], []
    for _ in range(repeats):
        snap = Snapshotter(settings, client, "bench")
        t0 = time.perf_counter()
        await snap.run(now_ms)
        cold.append((time.perf_counter() - t0) * 1000)
        # The steady state: only the current minute changed since the last run.
        await client.hincrby(keys.bucket_meta(now_ms // 60_000), "v", 1)
        t0 = time.perf_counter()
        await snap.run(now_ms)
        warm.append((time.perf_counter() - t0) * 1000)
    await client.aclose()
    return {"cold_ms": statistics.median(cold), "warm_ms": statistics.median(warm)}


def snapshot_round(symbols: int, reasons: int, repeats: int) -> dict[str, float]:
    with redis_server() as url:
        plant_wide_buckets(url, symbols, reasons, int(time.time()) // 60)
        fields = sync_client(url).hlen(keys.bucket(int(time.time()) // 60))
        window_only = asyncio.run(_snapshot_times(url, repeats, per_symbol=False))
        out = asyncio.run(_snapshot_times(url, repeats, per_symbol=True))
        out["window_only_cold_ms"] = window_only["cold_ms"]
        out["window_only_warm_ms"] = window_only["warm_ms"]
        out["fields_per_bucket"] = fields
        return out


# -- p35 why over 48 h of wide buckets ------------------------------------------------------


def plant_history(url: str, symbols: int, reasons: int, now_minute: int, hours: int) -> None:
    """`hours` of minute buckets (and metas) of `symbols` x `reasons`: a steady gate
    (gate_000, about 15 %, so its onset walk goes back to the horizon) and, for the last
    90 minutes, kill_switch_active at about 60 %. Built as a few templates, DUMPed once
    and RESTOREd into every minute: planting millions of fields one by one takes minutes."""
    r = sync_client(url)
    rng = random.Random(5)
    names = [f"gate_{i:03d}" for i in range(reasons)]
    syms = [f"SYM{i:03d}USDT" for i in range(symbols)]
    templates = []
    for gated in (False, True):
        for _variant in range(3):
            fields: dict[str, int] = {f"reason:{n}": rng.randint(1, 50) for n in names}
            fields["reason:gate_000"] = 4000
            fields["decision:EXECUTE"] = 4000
            if gated:
                fields["reason:kill_switch_active"] = 15_000
            fields["decision:BLOCKED"] = sum(v for k, v in fields.items() if k[:7] == "reason:")
            for s in syms:
                for d in ("EXECUTE", "SKIP", "BLOCKED", "ERROR"):
                    fields[f"symbol_decision:{s}:{d}"] = rng.randint(1, 9)
                for n in rng.sample(names, 5) + (["kill_switch_active"] if gated else []):
                    fields[f"symbol_reason:{s}:{n}"] = rng.randint(1, 30)
            meta: dict[str, int] = {"v": 1, "reasons": reasons, "symbols": symbols}
            meta.update((f"s:{s}", 1) for s in syms)
            meta.update((k, v) for k, v in fields.items() if k.startswith(("decision:", "reason:")))
            r.delete("tmpl", "tmplmeta")
            r.hset("tmpl", mapping=fields)
            r.hset("tmplmeta", mapping=meta)
            templates.append((gated, r.dump("tmpl"), r.dump("tmplmeta")))
    r.delete("tmpl", "tmplmeta")
    pipe = r.pipeline(transaction=False)
    for i, minute in enumerate(range(now_minute - hours * 60 + 1, now_minute + 1)):
        gated = minute > now_minute - 90
        choices = [t for t in templates if t[0] == gated]
        _, bucket, meta_dump = choices[i % len(choices)]
        pipe.restore(keys.bucket(minute), 0, bucket, replace=True)
        pipe.restore(keys.bucket_meta(minute), 0, meta_dump, replace=True)
        if i % 100 == 99:
            pipe.execute()
    pipe.execute()
    write_backlog(r, random.Random(1), 2000, 5)
    r.hset(keys.STATUS, mapping={"last_ts": f"{time.time():.3f}", "lag": 0})
    r.close()


async def _snapshot_once(url: str) -> None:
    client = async_client(url)
    now_ms = await redis_now_ms(client)
    await Snapshotter(load_settings(redis_url=url), client, "bench").run(now_ms)
    await client.aclose()


async def _why_times(url: str, repeats: int) -> dict[str, Any]:
    from decision_intel.cli.why import why
    from decision_intel.model.diagnose import Diagnosis

    settings = load_settings(redis_url=url)
    client = async_client(url)
    times = []
    doc: Diagnosis | None = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        doc = await why(client, settings, "1h", None)
        times.append((time.perf_counter() - t0) * 1000)
    await client.aclose()
    assert doc is not None, "no repeats"
    gates = [f"{g['reason']} ({g['where'] or 'no symbols'})" for g in doc["gates"]]
    return {"ms": statistics.median(times), "gates": gates, "verdict": doc["verdict"]}


def why_round(symbols: int, reasons: int, hours: int) -> dict:
    with redis_server() as url:
        r = sync_client(url, client_name=BENCH_CLIENT)
        planted_up_to = int(r.time()[0]) // 60
        plant_history(url, symbols, reasons, planted_up_to, hours)
        asyncio.run(_snapshot_once(url))  # the per-symbol keys attribution reads
        fields = r.hlen(keys.bucket(planted_up_to))  # (the clock may be a minute on now)
        slowlog_all(r)
        out = asyncio.run(_why_times(url, 3))
        out["redis_ms"] = sum(command_us(r).values()) / 3000
        env = p35_env(url, "p35_decision_intel")
        t0 = time.perf_counter()
        subprocess.run([P35, "why", "--window", "1h"], env=env, capture_output=True, check=False)
        out["cli_ms"] = (time.perf_counter() - t0) * 1000
        out["fields_per_bucket"] = fields
        r.close()
        return out


# -- p35 top: one refresh ---------------------------------------------------------------------


async def _top_times(url: str, repeats: int) -> dict[str, float]:
    from decision_intel.cli.top import Reader

    settings = load_settings(redis_url=url)
    client = async_client(url)
    sec, _ = await client.time()
    cold, warm, redis_us = [], [], []
    for _ in range(repeats):
        reader = Reader(client, settings)
        t0 = time.perf_counter()
        await reader.frame("5m")
        cold.append((time.perf_counter() - t0) * 1000)
        # The steady state: the current minute changed since the last refresh.
        await client.hincrby(keys.bucket_meta(int(sec) // 60), "v", 1)
        await client.config_resetstat()
        t0 = time.perf_counter()
        await reader.frame("5m")
        warm.append((time.perf_counter() - t0) * 1000)
        stats = await client.info("commandstats")
        redis_us.append(sum(v["usec"] for k, v in stats.items() if "resetstat" not in k))
    await client.aclose()
    return {
        "cold_ms": statistics.median(cold),
        "warm_ms": statistics.median(warm),
        "warm_redis_ms": statistics.median(redis_us) / 1000,
    }


def top_round(symbols: int, reasons: int) -> dict[str, float]:
    with redis_server() as url:
        r = sync_client(url)
        plant_wide_buckets(url, symbols, reasons, int(r.time()[0]) // 60)
        asyncio.run(_snapshot_once(url))
        r.close()
        return asyncio.run(_top_times(url, 5))


# -- report -------------------------------------------------------------------------------------


def median_of(rounds: list[dict[str, dict[str, float]]], who: str, what: str) -> float:
    return statistics.median(r[who][what] for r in rounds)


def _rate_label(rate: str) -> str:
    return "idle" if rate == "0" else f"{int(rate):,}/s"


def _steady_lines(args: argparse.Namespace, results: dict) -> list[str]:
    """The steady state's table, p35's Redis time by command, and the per-call costs."""
    lines: list[str] = []
    if steady := results.get("steady"):
        lines += [
            "",
            f"steady state ({args.steady_sec:.0f} s per rate, {args.idle_sec:.0f} s idle; "
            "% of one core; Redis: the time of the commands the contender sent, as "
            "SLOWLOG times them):",
            "",
            "| rate | p35 CPU | p35 Redis | naive CPU | naive Redis "
            "| raw reader CPU | raw reader Redis |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for rate in steady["p35"]:
            cells = [
                f"{steady[who][rate]['cpu_pct']:.2f} % | {steady[who][rate]['redis_pct']:.3f} %"
                for who in ("p35", "naive", "ceiling")
            ]
            lines.append(f"| {_rate_label(rate)} | {' | '.join(cells)} |")
        lines += ["", "p35's Redis time by command (% of one core):", ""]
        for rate, row in steady["p35"].items():
            parts = sorted(row["redis_parts_pct"].items(), key=lambda kv: -kv[1])
            shown = ", ".join(f"{name} {pct:.3f}" for name, pct in parts if pct >= 0.0005)
            lines.append(f"  {_rate_label(rate)}: {shown or 'nothing'}")
        lines += ["", "p35's whole Redis time as a multiple of its own XREADGROUP time:", ""]
        for rate, row in steady["p35"].items():
            if rate != "0" and (read := row["redis_parts_pct"].get("xreadgroup")):
                lines.append(f"  {_rate_label(rate)}: {row['redis_pct'] / read:.2f}x")
    if flushes := results.get("flush"):
        lines += ["", "Redis time per call, on producer traffic read through the group (medians):"]
        for size, f in flushes.items():
            lines.append(
                f"  {size} entries: flush script {f['flush_us']:.0f} µs; "
                f"XREADGROUP {f['xreadgroup_us_per_entry']:.2f} µs and XACK "
                f"{f['xack_us_per_entry']:.2f} µs per entry"
            )
    return lines


def _drain_lines(traffic: str, rounds: list[dict[str, dict[str, float]]]) -> list[str]:
    if not rounds:
        return []
    lines = [
        "",
        f"{traffic} traffic:",
        "",
        "| contender | entries/s | CPU s per 100k | peak RSS MB |",
        "|---|---:|---:|---:|",
    ]
    for who in ("ceiling", "naive", "p35"):
        rate = median_of(rounds, who, "rate")
        cpu = statistics.median(r[who]["cpu_s"] / r[who]["entries"] * 1e5 for r in rounds)
        hwm = f"{median_of(rounds, who, 'hwm_mb'):.1f}" if who == "p35" else "-"
        lines.append(f"| {who} | {rate:,.0f} | {cpu:.2f} | {hwm} |")
    ratios_c = [r["p35"]["rate"] / r["ceiling"]["rate"] for r in rounds]
    ratios_n = [r["p35"]["rate"] / r["naive"]["rate"] for r in rounds]
    lines += [
        "",
        f"p35 / ceiling: {statistics.median(ratios_c):.2f} "
        f"(runs: {', '.join(f'{x:.2f}' for x in ratios_c)})",
        f"p35 / naive:   {statistics.median(ratios_n):.1f} "
        f"(runs: {', '.join(f'{x:.1f}' for x in ratios_n)})",
    ]
    return lines


def report(args: argparse.Namespace, results: dict) -> str:
    lines = [f"entries per drain run: {args.entries:,}; runs: {args.runs}; medians"]
    for traffic, rounds in results["drain"].items():
        lines += _drain_lines(traffic, rounds)
    if lat := results.get("latency"):
        lines += [
            "",
            f"latency at {args.rate}/s for {args.latency_sec:.0f} s "
            f"({lat['entries']:,} entries): p50 {lat['p50_ms']} ms, "
            f"p99 {lat['p99_ms']} ms, max {lat['max_ms']} ms; "
            f"p35 peak RSS {lat['hwm_mb']:.1f} MB",
        ]
    lines += _steady_lines(args, results)
    if big := results.get("backlog"):
        lines += [
            "",
            f"backlog of {args.backlog:,}: drained at {big['rate']:,.0f}/s, "
            f"peak RSS (VmHWM) {big['hwm_mb']:.1f} MB",
        ]
    if stall := results.get("stall"):

        def held(ms: float, what: str) -> str:
            return f"{ms:.0f} ms ({what})" if ms else "none over 100 ms"

        lines += [
            "",
            f"event-loop stalls (asyncio debug mode reports steps over 100 ms) over "
            f"{args.symbols} symbols x {args.reasons} reasons: views round "
            f"{held(stall['views_ms'], stall['views_what'])}; drain of {args.stall_entries:,} "
            f"{held(stall['drain_ms'], stall['drain_what'])}",
        ]
    if snap := results.get("snapshot"):
        lines += [
            "",
            f"snapshots over 60 buckets x {snap['fields_per_bucket']:,} fields "
            f"({args.symbols} symbols, {args.reasons} reasons), cold (fresh cache) / "
            "warm (one bucket changed):",
            f"  the four windows: {snap['window_only_cold_ms']:.0f} / "
            f"{snap['window_only_warm_ms']:.0f} ms",
            f"  with per-symbol keys for every symbol: {snap['cold_ms']:.0f} / "
            f"{snap['warm_ms']:.0f} ms",
        ]
    if t := results.get("top"):
        lines += [
            "",
            f"p35 top, one refresh over 60 buckets x {args.symbols} symbols x {args.reasons} "
            f"reasons: first {t['cold_ms']:.0f} ms, then {t['warm_ms']:.0f} ms with "
            f"{t['warm_redis_ms']:.2f} ms of Redis time (one minute changed)",
        ]
    if w := results.get("why"):
        lines += [
            "",
            f"p35 why --window 1h over {args.why_hours} h of buckets x "
            f"{w['fields_per_bucket']:,} fields ({args.symbols} symbols, {args.reasons} "
            f"reasons): {w['ms']:.0f} ms in process (median of 3; Redis "
            f"{w['redis_ms']:.0f} ms of it), {w['cli_ms']:.0f} ms as a command; "
            f"gates {', '.join(w['gates'])}",
        ]
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--entries", type=int, default=200_000, help="entries per drain run")
    p.add_argument("--runs", type=int, default=3, help="drain runs (medians reported)")
    p.add_argument(
        "--naive-sec",
        type=float,
        default=10.0,
        help="the naive reader stops after this long; its rate is entries/time",
    )
    p.add_argument("--rate", type=int, default=1000, help="entries/s for the latency run")
    p.add_argument("--latency-sec", type=float, default=60.0, help="0 skips the latency run")
    p.add_argument("--backlog", type=int, default=1_000_000, help="0 skips the RSS run")
    p.add_argument(
        "--steady-sec", type=float, default=20.0, help="seconds per rate; 0 skips the steady state"
    )
    p.add_argument("--idle-sec", type=float, default=60.0, help="seconds of the idle state")
    p.add_argument(
        "--flushes", type=int, default=200, help="flushes per batch size timed; 0 skips them"
    )
    p.add_argument(
        "--stall-entries", type=int, default=100_000, help="drain of the stall round; 0 skips it"
    )
    p.add_argument("--symbols", type=int, default=500)
    p.add_argument("--reasons", type=int, default=100)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="P35_NAME=VALUE",
        help="a setting for the p35 runs (repeatable)",
    )
    p.add_argument(
        "--why-hours", type=int, default=48, help="hours of buckets for p35 why; 0 skips it"
    )
    p.add_argument("--json", type=Path, help="also write the raw results here")
    return p.parse_args(argv)


def _views_rounds(args: argparse.Namespace, results: dict) -> None:
    """What reading the views costs over wide buckets: the daemon's stalls, snapshots,
    p35 top and p35 why."""
    if args.stall_entries > 0:
        print("event-loop stalls ...", file=sys.stderr, flush=True)
        results["stall"] = stall_round(args.symbols, args.reasons, args.stall_entries)
    print("snapshots ...", file=sys.stderr, flush=True)
    results["snapshot"] = snapshot_round(args.symbols, args.reasons, 5)
    print("p35 top refresh ...", file=sys.stderr, flush=True)
    results["top"] = top_round(args.symbols, args.reasons)
    if args.why_hours > 0:
        print(f"p35 why over {args.why_hours} h ...", file=sys.stderr, flush=True)
        results["why"] = why_round(args.symbols, args.reasons, args.why_hours)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        reader_child(sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]))
        return
    args = parse_args()
    EXTRA_ENV.update(item.split("=", 1) for item in args.set)

    results: dict = {"drain": {traffic: [] for traffic in TRAFFICS}}
    for i in range(args.runs):  # the traffics interleaved: a drift hits both alike
        for traffic, shape in TRAFFICS.items():
            print(f"drain run {i + 1}/{args.runs}, {traffic} ...", file=sys.stderr, flush=True)
            results["drain"][traffic].append(
                drain_round(args.entries, 35 + i, args.naive_sec, shape)
            )
    if args.steady_sec > 0:
        print("steady state: idle, 100/s, 1000/s ...", file=sys.stderr, flush=True)
        results["steady"] = {
            kind: steady_round(kind, [0, 100, 1000], args.steady_sec, args.idle_sec)
            for kind in ("p35", "naive", "ceiling")
        }
    if args.flushes > 0:
        print("flush script per call ...", file=sys.stderr, flush=True)
        results["flush"] = flush_round([20, 200], args.flushes)
    if args.latency_sec > 0:
        print(f"latency at {args.rate}/s for {args.latency_sec:.0f} s ...", file=sys.stderr)
        results["latency"] = latency_round(args.rate, args.latency_sec)
    if args.backlog > 0:
        print(f"backlog of {args.backlog:,} ...", file=sys.stderr, flush=True)
        results["backlog"] = backlog_round(args.backlog)
    if args.symbols > 0:
        _views_rounds(args, results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print(report(args, results))


if __name__ == "__main__":
    main()
