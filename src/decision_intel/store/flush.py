"""The flush script's protocol (`lua/flush.lua`): its arguments and its result. Pure.

`HEADER` names the script's fixed arguments; the script reads them by those names
(`lua_prelude()` hands it the list) and `flush_args()` writes them in that order, then
the variable-length groups `flush_read` (lua/flush_lib.lua) reads. `tests/test_flush.py`
pins the layout and tests/test_flush_lua.py runs the script's steps on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from decision_intel import keys
from decision_intel.model.batch import Batch, BucketDelta
from decision_intel.settings import Settings

APPLIED, NOT_OURS, LEASE_LOST, REFUSED, REPLAYED = 0, 1, 2, 3, 4
"""The script's first reply element: counted and acknowledged; some IDs are not this
consumer's (they follow), nothing done; the lease is another process's; an argument or
a key would have made a write fail (the reason follows), nothing done; some IDs were
settled before (delivered again after the group moved back; they follow), nothing done."""


@dataclass(frozen=True)
class FlushResult:
    counted: int
    excluded: int
    lease_lost: bool = False
    decisions: dict[str, int] = field(default_factory=dict)
    invalid: int = 0
    reclaimed: int = 0
    trimmed: int = 0
    replayed: int = 0
    replay_range: tuple[bytes, bytes] | None = None


HEADER = (
    "stream",  # not a KEY: the ACL lets p35 read and acknowledge the stream, never write it
    "group",
    "consumer",
    "token",  # the lease's holder token
    "lease_ms",
    "max_reasons",
    "max_symbols",
    "invalid_maxlen",
    "min_id",  # min_id and max_id bound every ID in the batch
    "max_id",
    "newest_id",  # '' when the batch holds only reclaimed entries
    "now_ms",
    "reclaimed",
    "future",  # entries whose ID lay too far ahead of Redis's clock
)


def lua_prelude() -> str:
    """The header's names for the script, in front of lua/flush_lib.lua."""
    return "local FLUSH_HEADER = {" + ", ".join(f"'{n}'" for n in HEADER) + "}\n"


def _pairs(args: list[Any], counts: dict[str, int]) -> None:
    args.append(len(counts))
    for name, n in counts.items():
        args += [name, n]


def _delta_args(args: list[Any], d: BucketDelta) -> None:
    """One bucket's increments in the scripts' layout (lua/lib.lua, `add_counts`)."""
    _pairs(args, d.decisions)
    _pairs(args, d.reasons)
    args.append(len(d.symbol_decisions))
    for symbol, by_decision in d.symbol_decisions.items():
        args.append(symbol)
        _pairs(args, by_decision)
        _pairs(args, d.symbol_reasons[symbol])


def day_args(s: Settings, minute: int) -> list[Any]:
    """A minute's daily rollup, its meta hash and when both expire (`P35_DAILY_TTL_DAYS`
    after the day ends), as the flush and roll-up scripts take them."""
    day = minute // 1440
    return [keys.daily(day), keys.daily_meta(day), (day + 1 + s.daily_ttl_days) * 86_400]


def flush_keys(consumer: str) -> list[str]:
    """KEYS of `lua/flush.lua`: the status hash, the consumer's lease, the invalid-entry
    stream, the hash of buckets not yet rolled up, the completeness ledger and its settled
    ranges. The minute and day keys are in ARGV."""
    return [
        keys.STATUS,
        keys.lease(consumer),
        keys.INVALID,
        keys.UNROLLED,
        keys.LEDGER,
        keys.SETTLED,
    ]


def flush_args(
    s: Settings, batch: Batch, *, consumer: str, token: str, lease_ms: int, now_ms: int
) -> list[Any]:
    """ARGV of `lua/flush.lua` for a batch: `HEADER`, then the groups flush_read reads."""
    low, high = batch.id_range()
    ids = list(batch.items)
    header = {
        "stream": s.stream,
        "group": s.group,
        "consumer": consumer,
        "token": token,
        "lease_ms": lease_ms,
        "max_reasons": s.max_reasons_per_bucket,
        "max_symbols": s.max_symbols_per_bucket,
        "invalid_maxlen": s.invalid_maxlen,
        "min_id": low,
        "max_id": high,
        "newest_id": batch.newest or "",
        "now_ms": now_ms,
        "reclaimed": batch.reclaimed_count(),
        "future": len(batch.future),
    }
    args: list[Any] = [header[name] for name in HEADER]
    args += [
        len(ids),
        *ids,
        len(batch.trimmed),
        *batch.trimmed,
        len(batch.replayed),
        *batch.replayed,
    ]
    runs = batch.runs()
    args.append(len(runs))
    for first, last in runs:
        args += [first, last]
    # The increments travel as one JSON argument (the script decodes it with cjson):
    # a flush's hundred-odd small values cost redis-py an encoding each, and this
    # process a quarter of its CPU at live rates.
    deltas = batch.deltas()
    counts: list[Any] = [len(deltas)]
    for minute, d in deltas.items():
        counts += [minute, keys.bucket(minute), keys.bucket_meta(minute), keys.roll_copy(minute)]
        counts.append(minute * 60 + s.bucket_ttl_sec)
        counts += day_args(s, minute)
        _delta_args(counts, d)
    args.append(orjson.dumps(counts))
    records = batch.invalid_records()
    args.append(len(records))
    for entry_id, cause, raw in records:
        args += [entry_id, cause, raw]
    return args
