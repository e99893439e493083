"""Simulated producers: entries shaped as the Apply Layer and the Intent Executor write them.

For the demo, the benchmark and the tests; never point it at a production Redis. Every
entry carries its own `plan_id` and `timestamp`, and the Intent Executor's `details` is
the JSON of its whole result (with its own `plan_id` and `timestamp`), as in production:
traffic that repeats identical values flatters every cache and measures nothing real.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator

import redis

from decision_intel.store.reads import time_ms

STREAM = "quantum:stream:apply.result"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"]


def apply_layer(rng: random.Random, symbol: str, ts: str, **fields: str) -> dict[str, str]:
    return {"plan_id": f"{rng.getrandbits(64):016x}", "symbol": symbol, **fields, "timestamp": ts}


def intent_executor(
    rng: random.Random, symbol: str, ts: str, *, error: str | None, decision: str | None
) -> dict[str, str]:
    """The Intent Executor: top-level fields, and `details` = json.dumps(its whole result)."""
    plan = f"{rng.getrandbits(64):016x}"
    result = {
        "plan_id": plan,
        "symbol": symbol,
        "executed": False,
        "source": "intent_executor",
        "timestamp": ts,
        "side": rng.choice(["BUY", "SELL"]),
        "qty": round(rng.uniform(0.001, 5), 4),
        "error": error,
        "decision": decision,
    }
    return {
        "event_type": "apply.result",
        "plan_id": plan,
        "symbol": symbol,
        "executed": "false",
        "source": "intent_executor",
        "details": json.dumps(result),
        "timestamp": ts,
    }


def entry(
    rng: random.Random, symbol: str | None = None, now: float | None = None
) -> dict[str, str]:
    """One entry of either producer, with parametric errors, in production's proportions."""
    sym = symbol or rng.choice(SYMBOLS)
    ts = f"{time.time() if now is None else now:.6f}"
    roll = rng.random()
    if roll < 0.30:
        return apply_layer(
            rng,
            sym,
            ts,
            decision="BLOCKED",
            executed="False",
            error=f"risk_paused:drawdown {rng.uniform(5, 9):.1f}%",
        )
    if roll < 0.45:
        return apply_layer(
            rng,
            sym,
            ts,
            decision="SKIP",
            executed="False",
            would_execute="False",
            steps_results="[]",
            error="no_position",
        )
    if roll < 0.55:
        return apply_layer(
            rng, sym, ts, action="PARTIAL_75", executed="False", error="duplicate_plan"
        )
    if roll < 0.65:
        return intent_executor(
            rng, sym, ts, decision=None, error=f"p33_permit_denied:leverage {rng.randint(3, 20)}x"
        )
    if roll < 0.72:
        return intent_executor(
            rng, sym, ts, decision="DENIED", error="NOT_EXIT_OWNER:source=manual"
        )
    if roll < 0.80:
        return apply_layer(
            rng,
            sym,
            ts,
            executed="false",
            error=f"position_too_large:${rng.randint(600, 9000)}>$500_cap",
        )
    if roll < 0.84:
        return apply_layer(
            rng,
            sym,
            ts,
            executed="False",
            error=f"RETRYABLE_RATE_LIMIT: APIError(code=-{rng.randint(1000, 1100)})",
        )
    if roll < 0.99:
        return apply_layer(
            rng,
            sym,
            ts,
            action="FULL_CLOSE_PROPOSED",
            executed="True",
            reduceOnly="True",
            close_qty=f"{rng.uniform(0.1, 3):.3f}",
            order_id=str(rng.randint(1, 10**9)),
            order_status="FILLED",
        )
    return {"plan_id": f"{rng.getrandbits(64):016x}", "note": "a producer bug: no decision"}


ODD_SYMBOLS = [
    "BTCUSDT",
    "ethusdt",
    " SOLUSDT ",
    "BnbUsdt",
    "XRPUSDT\t",
    "DOGE/USDT",
    "ADA-USDT",
    "1000PEPEUSDT",
    "wifusdt ",
    "\u200bAVAXUSDT",
]
"""Ten symbols as a bad day spells them: cases, padding, separators, a zero-width space."""


def _junk(rng: random.Random, size: int) -> str:
    return "".join(rng.choices("abcdefghij KLMNOP0123456789_-./{}[]\"'", k=size))


def bad_day_entry(
    rng: random.Random, symbol: str | None = None, now: float | None = None
) -> dict[str, str]:
    """An entry of a bad day (`make bench`'s second traffic, docs/performance.md): the
    producers' mix over ten oddly spelt symbols, about 6 % of entries the rules must call
    UNKNOWN (no decision and no executed field, `details` that is no JSON, junk fields up
    to 3 KB, with the producers' own 1 %) and about 1 % carrying a 5 KB error string."""
    sym = symbol or rng.choice(ODD_SYMBOLS)
    ts = f"{time.time() if now is None else now:.6f}"
    roll = rng.random()
    if roll < 0.017:
        return {"plan_id": f"{rng.getrandbits(64):016x}", "symbol": sym, "timestamp": ts}
    if roll < 0.034:
        return {
            "plan_id": f"{rng.getrandbits(64):016x}",
            "symbol": sym,
            "details": "{" + _junk(rng, rng.randint(10, 400)),
            "timestamp": ts,
        }
    if roll < 0.05:
        fields = {"plan_id": f"{rng.getrandbits(64):016x}", "timestamp": ts}
        for i in range(rng.randint(1, 6)):
            fields[f"x_{i}_{rng.getrandbits(16):x}"] = _junk(rng, rng.randint(1, 3000))
        return fields
    if roll < 0.06:
        error = "BinanceAPIException(code=-2019): " + _junk(rng, 5000)
        return apply_layer(rng, sym, ts, executed="False", error=error)
    return entry(rng, sym, now)


Shape = Callable[..., dict[str, str]]
"""An entry generator: `entry` (the producers) or `bad_day_entry`."""


def backlog(
    rng: random.Random, n: int, end_ms: int, minutes: int, shape: Shape = entry
) -> Iterator[tuple[str, dict[str, str]]]:
    """n entries with explicit IDs spread over the `minutes` before end_ms."""
    stamps = sorted(rng.randint(end_ms - minutes * 60_000, end_ms) for _ in range(n))
    last, seq = -1, 0
    for ms in stamps:
        seq = seq + 1 if ms == last else 0
        last = ms
        yield f"{ms}-{seq}", shape(rng, now=ms / 1000)


def write_backlog(
    r: redis.Redis,
    rng: random.Random,
    n: int,
    minutes: int,
    stream: str = STREAM,
    shape: Shape = entry,
) -> None:
    """XADD n backlog entries ending now (server time), in pipelines of 5000."""
    end_ms = time_ms(r.time()) - 1
    pipe = r.pipeline(transaction=False)
    for entry_id, fields in backlog(rng, n, end_ms, minutes, shape):
        pipe.xadd(stream, fields, id=entry_id)  # type: ignore[arg-type]
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def write_live(
    r: redis.Redis, rng: random.Random, rate: float, seconds: float, stream: str = STREAM
) -> int:
    """`rate` entries a second for `seconds`, sent every 10 ms; returns how many."""
    t0 = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - t0) < seconds:
        due = int(elapsed * rate) - sent
        if due > 0:
            pipe = r.pipeline(transaction=False)
            for _ in range(due):
                pipe.xadd(stream, entry(rng))  # type: ignore[arg-type]
            pipe.execute()
            sent += due
        time.sleep(0.01)
    return sent
