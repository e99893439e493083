"""Realistic apply.result traffic whose expected classification is known independently.

Every template carries the decision/reason/symbol a careful reader of SPEC section 4
assigns it, so expected counts never come from the code under test.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from decision_intel import keys
from decision_intel.devtools import producers
from decision_intel.devtools.producers import apply_layer, intent_executor
from tests.helpers import RawRedis, wait_for

STREAM = "quantum:stream:apply.result"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"]

Template = tuple[dict[str, str], str, str]
"""(fields, decision, reason): an entry and what SPEC section 4 makes of it."""


def _templates(rng: random.Random, symbol: str) -> list[Template]:
    """Both producers' shapes, as decision_intel.devtools.producers writes them: a unique
    plan_id and timestamp on every entry, and the Intent Executor's whole result in `details`."""
    cap = rng.randint(100, 5000)
    ts = f"{1769929091 + rng.random() * 86_400:.6f}"

    def apply(**fields: str) -> dict[str, str]:
        return apply_layer(rng, symbol, ts, **fields)

    def executor(error: str | None, decision: str | None) -> dict[str, str]:
        return intent_executor(rng, symbol, ts, error=error, decision=decision)

    return [
        (apply(decision="SKIP", executed="False", error="no_position"), "SKIP", "no_position"),
        (
            apply(action="PARTIAL_75", executed="False", error="duplicate_plan"),
            "SKIP",
            "duplicate_plan",
        ),
        (apply(executed="True", order_status="FILLED"), "EXECUTE", "none"),
        (executor(f"p33_permit_denied:leverage {cap}", None), "BLOCKED", "p33_permit_denied"),
        (executor("NOT_EXIT_OWNER:source=manual", "DENIED"), "BLOCKED", "not_exit_owner"),
        (
            apply(
                decision="BLOCKED",
                executed="False",
                error=f"risk_paused:drawdown {rng.random() * 10:.1f}%",
            ),
            "BLOCKED",
            "risk_paused",
        ),
        (
            apply(executed="false", error=f"position_too_large:${cap}>$500_cap"),
            "BLOCKED",
            "position_too_large",
        ),
        (
            apply(executed="False", error="RETRYABLE_RATE_LIMIT: APIError(code=-1003)"),
            "ERROR",
            "retryable_rate_limit",
        ),
        (
            {
                "plan_id": f"{rng.getrandbits(64):016x}",
                "timestamp": ts,
                "payload": json.dumps({"symbol": symbol, "decision": "EXECUTED"}),
            },
            "EXECUTE",
            "none",
        ),
        (apply(note="no decision here"), "UNKNOWN", "none"),
        (apply(decision="MAYBE", reason="Duplicate plan_id"), "UNKNOWN", "duplicate_plan"),
    ]


def entries(n: int, seed: int = 7) -> Iterator[tuple[dict[str, str], str, str, str]]:
    """n entries: (fields, decision, reason, symbol)."""
    rng = random.Random(seed)
    for _ in range(n):
        symbol = rng.choice(SYMBOLS)
        fields, decision, reason = rng.choice(_templates(rng, symbol))
        yield fields, decision, reason, symbol


def minute_label(minute: int) -> str:
    return time.strftime("%Y%m%d%H%M", time.gmtime(minute * 60))


Truth = dict[str, tuple[str, str, str]]
"""Entry ID -> the (decision, reason, symbol) it must be counted under."""


def load_truth(
    r: RawRedis, n: int, *, span_minutes: float = 90, end_ms: int | None = None, seed: int = 7
) -> Truth:
    """XADD n entries with explicit IDs spread over the `span_minutes` before `end_ms`."""
    rng = random.Random(seed)
    if end_ms is None:
        sec, usec = r.time()
        end_ms = sec * 1000 + usec // 1000 - 1000
    start_ms = end_ms - int(span_minutes * 60_000)
    stamps = sorted(rng.randint(start_ms, end_ms) for _ in range(n))
    truth: Truth = {}
    pipe = r.pipeline(transaction=False)
    last_ms, seq = -1, 0
    for (fields, decision, reason, symbol), ms in zip(entries(n, seed), stamps, strict=True):
        seq = seq + 1 if ms == last_ms else 0
        last_ms = ms
        entry_id = f"{ms}-{seq}"
        pipe.xadd(STREAM, fields, id=entry_id)
        truth[entry_id] = (decision, reason, symbol)
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return truth


def expected_buckets(truth: Truth) -> dict[str, Counter[str]]:
    """The content every bucket hash must have once exactly these entries are counted."""
    expected: dict[str, Counter[str]] = {}
    for entry_id, (decision, reason, symbol) in truth.items():
        minute = keys.minute_of_id(entry_id)
        c = expected.setdefault(f"quantum:p35:bucket:{minute_label(minute)}", Counter())
        c[f"decision:{decision}"] += 1
        c[f"reason:{reason}"] += 1
        c[f"symbol_decision:{symbol}:{decision}"] += 1
        c[f"symbol_reason:{symbol}:{reason}"] += 1
    return expected


def load(
    r: RawRedis, n: int, *, span_minutes: int = 90, end_ms: int | None = None, seed: int = 7
) -> dict[str, Counter[str]]:
    """XADD n entries (see load_truth); returns the expected content of every bucket hash."""
    return expected_buckets(load_truth(r, n, span_minutes=span_minutes, end_ms=end_ms, seed=seed))


def assert_exact(r: RawRedis, expected: dict[str, Counter[str]]) -> None:
    """Each bucket equals its expected content; nothing pending; Σ decision = Σ reason = entries."""
    actual_keys = {k.decode() for k in r.scan_iter("quantum:p35:bucket:*")}
    assert actual_keys == set(expected), "bucket keys differ from the minutes that had entries"
    for key, want in expected.items():
        got = {k.decode(): int(v) for k, v in r.hgetall(key).items()}
        assert got == dict(want), f"{key} differs: {diff(got, want)}"
        entries = sum(v for f, v in want.items() if f.startswith("decision:"))
        assert sum(v for f, v in got.items() if f.startswith("decision:")) == entries
        assert sum(v for f, v in got.items() if f.startswith("reason:")) == entries
        # The meta hash's copy, which snapshots read, matches the bucket.
        meta_key = key.replace(":bucket:", ":bucketmeta:")
        meta = {
            k.decode(): int(v)
            for k, v in r.hgetall(meta_key).items()
            if k.startswith((b"decision:", b"reason:"))
        }
        assert meta == {f: v for f, v in want.items() if f.startswith(("decision:", "reason:"))}
    # Daily rollups: the day's decision, reason and per-symbol decision totals, once the
    # daemons have rolled every bucket up (a quiet minute within about two snapshot
    # intervals; a daemon that stops rolls everything).
    wait_for(lambda: not r.hlen(keys.UNROLLED), 30, "every bucket in its daily rollup")
    days: dict[str, Counter[str]] = {}
    for key, want in expected.items():
        day = days.setdefault(f"quantum:p35:daily:{key.rsplit(':', 1)[1][:8]}", Counter())
        for f, v in want.items():
            if f.startswith(("decision:", "reason:", "symbol_decision:")):
                day[f] += v
    assert {k.decode() for k in r.scan_iter("quantum:p35:daily:*")} == set(days)
    for key, want in days.items():
        got = {k.decode(): int(v) for k, v in r.hgetall(key).items()}
        assert got == dict(want), f"{key} differs: {diff(got, want)}"
    summary = r.xpending(STREAM, "p35_decision_intel")
    assert summary["pending"] == 0, f"{summary['pending']} entries still pending"
    total = sum(
        sum(v for f, v in c.items() if f.startswith("decision:")) for c in expected.values()
    )
    assert int(r.hget("quantum:p35:status", "processed_total") or 0) == total


def diff(got: dict[str, int], want: Counter[str]) -> str:
    keys = sorted(set(got) | set(want))
    rows = [f"{k}: got {got.get(k)} want {want.get(k)}" for k in keys if got.get(k) != want.get(k)]
    return "; ".join(rows[:10]) + (f" (+{len(rows) - 10} more)" if len(rows) > 10 else "")


class Producer(threading.Thread):
    """Live traffic with explicit IDs at a steady rate, riding out Redis restarts.

    After `stop()`, `truth()` reads back which entries actually made it into the
    stream (an XADD whose reply was lost may or may not have), with their labels.
    """

    def __init__(self, port: int, rate: int, seed: int = 11):
        super().__init__(daemon=True)
        self.port, self.rate = port, rate
        self.labels: dict[str, tuple[str, str, str]] = {}
        self.errors = 0
        self._halt = threading.Event()
        self._source = entries(10**9, seed)

    def run(self) -> None:
        # No automatic retry: a re-sent pipeline that was half applied would collide
        # with its own IDs. A failed chunk is simply given up; truth() reads back.
        r = RawRedis(port=self.port, socket_timeout=2, retry=Retry(NoBackoff(), 0))
        last_ms, seq = 0, 0
        while not self._halt.is_set():
            chunk = max(1, self.rate // 50)
            pipe = r.pipeline(transaction=False)
            for _ in range(chunk):
                ms = max(int(time.time() * 1000), last_ms)
                seq = seq + 1 if ms == last_ms else 0
                last_ms = ms
                fields, decision, reason, symbol = next(self._source)
                entry_id = f"{ms}-{seq}"
                self.labels[entry_id] = (decision, reason, symbol)
                pipe.xadd(STREAM, fields, id=entry_id)
            try:
                pipe.execute(raise_on_error=False)
            except redis.RedisError:
                self.errors += 1
                time.sleep(0.05)
            time.sleep(0.02)
        r.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)

    def truth(self, r: RawRedis) -> Truth:
        present = [entry_id.decode() for entry_id, _ in r.xrange(STREAM)]
        return {entry_id: self.labels[entry_id] for entry_id in present}


# -- scenarios by the minute (p35 why, p35 top): a shape per entry, explicit IDs -------------

Make = Callable[[random.Random, str, float], dict[str, str]]
"""(rng, symbol, timestamp) -> one entry."""


def normal(rng: random.Random, symbol: str, ts: float) -> dict[str, str]:
    """Both producers' mix, with 40 % executed (the mix alone has few executions)."""
    if rng.random() < 0.4:
        return producers.apply_layer(rng, symbol, f"{ts:.6f}", decision="EXECUTE", executed="true")
    return producers.entry(rng, symbol, ts)


def blocked(error: str) -> Make:
    def make(rng: random.Random, symbol: str, ts: float) -> dict[str, str]:
        return producers.apply_layer(rng, symbol, f"{ts:.6f}", executed="false", error=error)

    return make


def write_minutes(
    r: RawRedis,
    minutes: range,
    per_minute: int,
    pick: Callable[[random.Random, int, str], Make],
    seed: int = 1,
) -> int:
    """per_minute entries in each minute, with explicit IDs; pick(rng, minute, symbol)
    chooses each entry's shape. Returns how many were written."""
    rng = random.Random(seed)
    pipe = r.pipeline(transaction=False)
    n = 0
    for minute in minutes:
        for i in range(per_minute):
            ms = minute * 60_000 + i * (60_000 // per_minute)
            symbol = rng.choice(producers.SYMBOLS)
            make = pick(rng, minute, symbol)
            pipe.xadd(STREAM, make(rng, symbol, ms / 1000), id=f"{ms}-0")
            n += 1
    pipe.execute()
    return n


def now_minute(r: RawRedis) -> int:
    sec, _usec = r.time()
    return int(sec) // 60
