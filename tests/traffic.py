"""Realistic apply.result traffic whose expected classification is known independently.

Every template carries the decision/reason/symbol a careful reader of SPEC section 4
assigns it, so expected counts never come from the code under test.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator

import redis

STREAM = "quantum:stream:apply.result"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT", "XRPUSDT", "DOGEUSDT"]

# (fields, decision, reason, symbol_is_valid)
Template = tuple[dict[str, str], str, str]


def _templates(rng: random.Random, symbol: str) -> list[Template]:
    cap = rng.randint(100, 5000)
    return [
        ({"plan_id": "p", "symbol": symbol, "decision": "SKIP", "executed": "False",
          "error": "no_position", "timestamp": "1769929091"}, "SKIP", "no_position"),
        ({"plan_id": "p", "symbol": symbol, "action": "PARTIAL_75", "executed": "False",
          "error": "duplicate_plan"}, "SKIP", "duplicate_plan"),
        ({"plan_id": "p", "symbol": symbol, "executed": "True", "order_status": "FILLED"},
         "EXECUTE", "none"),
        ({"event_type": "apply.result", "symbol": symbol, "executed": "false",
          "source": "intent_executor",
          "details": json.dumps({"error": f"p33_permit_denied:leverage {cap}", "decision": None})},
         "BLOCKED", "p33_permit_denied"),
        ({"event_type": "apply.result", "symbol": symbol, "executed": "false",
          "source": "intent_executor",
          "details": json.dumps({"decision": "DENIED", "error": "NOT_EXIT_OWNER:source=manual"})},
         "BLOCKED", "not_exit_owner"),
        ({"symbol": symbol, "decision": "BLOCKED", "executed": "False",
          "error": f"risk_paused:drawdown {rng.random() * 10:.1f}%"}, "BLOCKED", "risk_paused"),
        ({"symbol": symbol, "executed": "false",
          "error": f"position_too_large:${cap}>$500_cap"}, "BLOCKED", "position_too_large"),
        ({"symbol": symbol, "executed": "False",
          "error": "RETRYABLE_RATE_LIMIT: APIError(code=-1003)"}, "ERROR", "retryable_rate_limit"),
        ({"payload": json.dumps({"symbol": symbol, "decision": "EXECUTED"})}, "EXECUTE", "none"),
        ({"symbol": symbol, "note": "no decision here"}, "UNKNOWN", "none"),
        ({"symbol": symbol, "decision": "MAYBE", "reason": "Duplicate plan_id"},
         "UNKNOWN", "duplicate_plan"),
    ]  # fmt: skip


def entries(n: int, seed: int = 7) -> Iterator[tuple[dict[str, str], str, str, str]]:
    """n entries: (fields, decision, reason, symbol)."""
    rng = random.Random(seed)
    for _ in range(n):
        symbol = rng.choice(SYMBOLS)
        fields, decision, reason = rng.choice(_templates(rng, symbol))
        yield fields, decision, reason, symbol


def minute_label(minute: int) -> str:
    import time

    return time.strftime("%Y%m%d%H%M", time.gmtime(minute * 60))


def load(
    r: redis.Redis, n: int, *, span_minutes: int = 90, end_ms: int | None = None, seed: int = 7
) -> dict[str, Counter[str]]:
    """XADD n entries with explicit IDs spread over the `span_minutes` before `end_ms`.

    Returns the expected content of every bucket hash, keyed by bucket key.
    """
    rng = random.Random(seed)
    if end_ms is None:
        sec, usec = r.time()
        end_ms = sec * 1000 + usec // 1000 - 1000
    start_ms = end_ms - span_minutes * 60_000
    stamps = sorted(rng.randint(start_ms, end_ms) for _ in range(n))
    expected: dict[str, Counter[str]] = {}
    pipe = r.pipeline(transaction=False)
    last_ms, seq = -1, 0
    for (fields, decision, reason, symbol), ms in zip(entries(n, seed), stamps, strict=True):
        seq = seq + 1 if ms == last_ms else 0
        last_ms = ms
        pipe.xadd(STREAM, fields, id=f"{ms}-{seq}")
        bucket = f"quantum:p35:bucket:{minute_label(ms // 60_000)}"
        c = expected.setdefault(bucket, Counter())
        c[f"decision:{decision}"] += 1
        c[f"reason:{reason}"] += 1
        c[f"symbol_decision:{symbol}:{decision}"] += 1
        c[f"symbol_reason:{symbol}:{reason}"] += 1
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return expected


def assert_exact(r: redis.Redis, expected: dict[str, Counter[str]]) -> None:
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
        meta = {k.decode(): int(v) for k, v in r.hgetall(meta_key).items()
                if k.startswith((b"decision:", b"reason:"))}  # fmt: skip
        assert meta == {f: v for f, v in want.items() if f.startswith(("decision:", "reason:"))}
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
