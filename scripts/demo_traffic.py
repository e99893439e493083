#!/usr/bin/env python3
"""Write realistic apply.result traffic to a Redis stream (both producers' shapes).

  demo_traffic.py --url redis://127.0.0.1:6379/0 --backlog 20000 --minutes 60
  demo_traffic.py --url ... --rate 200 --seconds 10      # a live trickle

For demos and benchmarks only: never point it at a production Redis.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections.abc import Iterator

import redis

STREAM = "quantum:stream:apply.result"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"]


def entry(rng: random.Random, symbol: str | None = None) -> dict[str, str]:
    """One entry as the Apply Layer or the Intent Executor writes it, with parametric errors."""
    sym = symbol or rng.choice(SYMBOLS)
    ts = str(int(time.time()))
    plan = f"{rng.getrandbits(48):012x}"
    roll = rng.random()
    if roll < 0.30:
        return {
            "plan_id": plan,
            "symbol": sym,
            "decision": "BLOCKED",
            "executed": "False",
            "error": f"risk_paused:drawdown {rng.uniform(5, 9):.1f}%",
            "timestamp": ts,
        }
    if roll < 0.45:
        return {
            "plan_id": plan,
            "symbol": sym,
            "decision": "SKIP",
            "executed": "False",
            "would_execute": "False",
            "steps_results": "[]",
            "error": "no_position",
            "timestamp": ts,
        }
    if roll < 0.55:
        return {
            "plan_id": plan,
            "symbol": sym,
            "action": "PARTIAL_75",
            "executed": "False",
            "error": "duplicate_plan",
            "timestamp": ts,
        }
    if roll < 0.65:
        detail = {"error": f"p33_permit_denied:leverage {rng.randint(3, 20)}x", "decision": None}
        return {
            "event_type": "apply.result",
            "plan_id": plan,
            "symbol": sym,
            "executed": "false",
            "source": "intent_executor",
            "details": json.dumps(detail),
            "timestamp": ts,
        }
    if roll < 0.72:
        detail = {"decision": "DENIED", "error": "NOT_EXIT_OWNER:source=manual"}
        return {
            "event_type": "apply.result",
            "plan_id": plan,
            "symbol": sym,
            "executed": "false",
            "source": "intent_executor",
            "details": json.dumps(detail),
            "timestamp": ts,
        }
    if roll < 0.80:
        return {
            "plan_id": plan,
            "symbol": sym,
            "executed": "false",
            "error": f"position_too_large:${rng.randint(600, 9000)}>$500_cap",
            "timestamp": ts,
        }
    if roll < 0.84:
        return {
            "plan_id": plan,
            "symbol": sym,
            "executed": "False",
            "error": f"RETRYABLE_RATE_LIMIT: APIError(code=-{rng.randint(1000, 1100)})",
            "timestamp": ts,
        }
    if roll < 0.99:
        return {
            "plan_id": plan,
            "symbol": sym,
            "action": "FULL_CLOSE_PROPOSED",
            "executed": "True",
            "reduceOnly": "True",
            "close_qty": f"{rng.uniform(0.1, 3):.3f}",
            "order_id": str(rng.randint(1, 10**9)),
            "order_status": "FILLED",
            "timestamp": ts,
        }
    return {"plan_id": plan, "note": "a producer bug: no decision, no executed flag"}


def backlog(
    rng: random.Random, n: int, end_ms: int, minutes: int
) -> Iterator[tuple[str, dict[str, str]]]:
    """n entries with explicit IDs spread over the `minutes` before end_ms."""
    stamps = sorted(rng.randint(end_ms - minutes * 60_000, end_ms) for _ in range(n))
    last, seq = -1, 0
    for ms in stamps:
        seq = seq + 1 if ms == last else 0
        last = ms
        yield f"{ms}-{seq}", entry(rng)


def write_backlog(r: redis.Redis, rng: random.Random, n: int, minutes: int, stream: str) -> None:
    """XADD n backlog entries ending now (server time), in pipelines of 5000."""
    sec, usec = r.time()
    end_ms = sec * 1000 + usec // 1000 - 1
    pipe = r.pipeline(transaction=False)
    for entry_id, fields in backlog(rng, n, end_ms, minutes):
        pipe.xadd(stream, fields, id=entry_id)
        if len(pipe) >= 5000:
            pipe.execute()
    pipe.execute()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="redis://127.0.0.1:6379/0")
    p.add_argument("--stream", default=STREAM)
    p.add_argument("--backlog", type=int, default=0, help="entries to place in the past")
    p.add_argument("--minutes", type=int, default=60, help="how far back the backlog reaches")
    p.add_argument("--rate", type=float, default=0, help="live entries per second")
    p.add_argument("--seconds", type=float, default=0, help="how long to write live entries")
    p.add_argument("--seed", type=int, default=35)
    args = p.parse_args()
    rng = random.Random(args.seed)
    r = redis.Redis.from_url(args.url)
    if args.backlog:
        write_backlog(r, rng, args.backlog, args.minutes, args.stream)
    if args.rate and args.seconds:
        t0 = time.monotonic()
        sent = 0
        while (elapsed := time.monotonic() - t0) < args.seconds:
            due = int(elapsed * args.rate) - sent
            if due > 0:
                pipe = r.pipeline(transaction=False)
                for _ in range(due):
                    pipe.xadd(args.stream, entry(rng))
                pipe.execute()
                sent += due
            time.sleep(0.01)


if __name__ == "__main__":
    main()
