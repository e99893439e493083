"""Every Redis key name the service reads or writes (SPEC section 3), and nothing else.

The public names are a fixed contract with existing runbooks; the private ones
(`bucketmeta`, `rollcopy`, `symbols`, `lease`, `lock`) are this service's bookkeeping.
"""

from __future__ import annotations

import time

PREFIX = "quantum:p35"

STATUS = f"{PREFIX}:status"
ALERTS = f"{PREFIX}:alerts"
ALERT_STATE = f"{PREFIX}:alertstate"
"""Open alerts: `type|window|subject` -> JSON (severity, last event time, alert id)."""
INVALID = f"{PREFIX}:invalid"

WINDOWS: dict[str, int] = {"1m": 1, "5m": 5, "15m": 15, "1h": 60}
WINDOW_WORDS = {"1m": "minute", "5m": "5 minutes", "15m": "15 minutes", "1h": "hour"}
"""How the CLI says a window in a sentence ("in the last 5 minutes")."""
"""Window name -> number of minute buckets it sums, the current minute included."""

LONGEST_WINDOW_MIN = max(WINDOWS.values())

SNAPSHOT_LOCK = f"{PREFIX}:lock:snapshot"
AUDIT_LOCK = f"{PREFIX}:lock:audit"
LEDGER = f"{PREFIX}:ledger"
"""The completeness ledger (HASH): the settled prefix, the accounting baseline, the
group's furthest position, the read high-water mark (lua/audit.lua)."""
SETTLED = f"{PREFIX}:settled"
"""Settled ranges above the ledger's prefix (ZSET, lexicographic; lua/lib.lua)."""
LOSSES = f"{PREFIX}:losses"
"""Loss events (STREAM, capped): cause, count, first and last ID, exact or lower bound."""
CONSUMERS = f"{PREFIX}:consumers"
"""Names p35 daemons have consumed under (SET): any other consumer of the group is
foreign, reported and never removed."""
UNROLLED = f"{PREFIX}:unrolled"
"""Minute buckets whose counts are not in their day's rollup yet: minute -> expiry (s)."""


def id_parts(entry_id: bytes | str) -> tuple[int, int]:
    """(milliseconds, sequence) of a stream entry ID `<ms>-<seq>`: its order, and its time."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def id_ms(entry_id: bytes) -> int:
    """The millisecond time of an entry ID as Redis sends it (bytes): the hot path's form."""
    return int(entry_id.partition(b"-")[0])


def minute_of_id(entry_id: bytes | str) -> int:
    """Minutes since the epoch of a stream entry ID."""
    return id_parts(entry_id)[0] // 60_000


def minute_label(minute: int) -> str:
    """`YYYYMMDDHHMM` in UTC for a minute number."""
    return time.strftime("%Y%m%d%H%M", time.gmtime(minute * 60))


def bucket(minute: int) -> str:
    return f"{PREFIX}:bucket:{minute_label(minute)}"


def bucket_meta(minute: int) -> str:
    """Private companion of a bucket: distinct-reason/symbol counts and a change counter."""
    return f"{PREFIX}:bucketmeta:{minute_label(minute)}"


DECISION, REASON = "decision", "reason"
SYMBOL_DECISION, SYMBOL_REASON = "symbol_decision", "symbol_reason"
"""The kinds of a bucket's fields (a daily rollup's, a meta hash's copy): `<kind>:<name>`,
and one symbol's `<kind>:<SYMBOL>:<name>` (lua/lib.lua writes them; neither a symbol
nor a reason holds ':')."""


def decision_field(decision: str, symbol: str | None = None) -> str:
    """The bucket field counting a decision (one symbol's, with `symbol`)."""
    return f"{DECISION}:{decision}" if symbol is None else f"{SYMBOL_DECISION}:{symbol}:{decision}"


def reason_field(reason: str, symbol: str | None = None) -> str:
    """The bucket field counting a reason (one symbol's, with `symbol`)."""
    return f"{REASON}:{reason}" if symbol is None else f"{SYMBOL_REASON}:{symbol}:{reason}"


def roll_copy(minute: int) -> str:
    """Private: the counts of a minute not yet in its day's rollup, as the day will take
    them. Written with the bucket while the minute is unrolled, it outlives the bucket
    (until the day's rollup expires) and goes once the roll-up has added it."""
    return f"{PREFIX}:rollcopy:{minute_label(minute)}"


def day_label(day: int) -> str:
    """`YYYYMMDD` in UTC for a day number (days since the epoch)."""
    return time.strftime("%Y%m%d", time.gmtime(day * 86_400))


def daily(day: int) -> str:
    """Decision/reason totals and per-symbol decision totals of one UTC day."""
    return f"{PREFIX}:daily:{day_label(day)}"


def daily_meta(day: int) -> str:
    """Private companion of a daily rollup: its distinct reason/symbol counts."""
    return f"{PREFIX}:dailymeta:{day_label(day)}"


def decision_counts(window: str) -> str:
    return f"{PREFIX}:decision:counts:{window}"


def reason_top(window: str) -> str:
    return f"{PREFIX}:reason:top:{window}"


def symbol_decision_counts(symbol: str, window: str) -> str:
    return f"{PREFIX}:symbol:{symbol}:decision:counts:{window}"


def symbol_reason_top(symbol: str, window: str) -> str:
    return f"{PREFIX}:symbol:{symbol}:reason:top:{window}"


def symbols_in(window: str) -> str:
    """SET of the symbols that have per-symbol snapshot keys for a window (so they can go)."""
    return f"{PREFIX}:symbols:{window}"


def lease(consumer: str) -> str:
    """Holds the token of the one live process allowed to use a consumer name."""
    return f"{PREFIX}:lease:{consumer}"


def lease_of(name: bytes) -> bytes:
    """`lease()` of a consumer name as Redis has it (any bytes: names are anyone's)."""
    return f"{PREFIX}:lease:".encode() + name


def consumer_status(consumer: str) -> str:
    """Per-consumer heartbeat (expires when the consumer stops refreshing it)."""
    return f"{PREFIX}:status:consumer:{consumer}"
