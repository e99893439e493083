"""The flush script's argument layout (flush.py), pinned: lua/flush.lua reads exactly this."""

from __future__ import annotations

import json

from decision_intel import keys
from decision_intel.model.batch import Batch
from decision_intel.model.classify import Classification
from decision_intel.settings import load
from decision_intel.store.flush import flush_args

MIN = 29_000_000  # a minute number; its day is MIN // 1440


def test_flush_args_layout_is_the_one_the_script_reads() -> None:
    s = load(redis_url="redis://h:6379/0")
    b = Batch()
    b.add(
        f"{MIN * 60_000}-0".encode(),
        {b"decision": b"SKIP"},
        Classification("SKIP", "no_position", "BTCUSDT", None),
    )
    b.add(
        f"{MIN * 60_000}-1".encode(),
        {b"x": b"y"},
        Classification("UNKNOWN", "none", None, "why"),
        reclaimed=True,
    )
    b.add_trimmed(f"{MIN * 60_000 - 5}-0".encode())
    args = flush_args(s, b, consumer="c1", token="t0k", lease_ms=15_000, now_ms=123)
    day = MIN // 1440
    e0, e1, t0 = (
        f"{MIN * 60_000}-0".encode(),
        f"{MIN * 60_000}-1".encode(),
        f"{MIN * 60_000 - 5}-0".encode(),
    )
    # One line per group of the script's ARGV: the layout reads better as a table.
    BUCKETS = args[25]
    assert json.loads(BUCKETS) == [
        1, MIN, keys.bucket(MIN), keys.bucket_meta(MIN), keys.roll_copy(MIN),  # one bucket
        MIN * 60 + 172_800,
        keys.daily(day), keys.daily_meta(day), (day + 1 + 90) * 86_400,  # and its day
        2, "SKIP", 1, "UNKNOWN", 1,  # decisions
        2, "no_position", 1, "none", 1,  # reasons
        1, "BTCUSDT", 1, "SKIP", 1, 1, "no_position", 1,  # one symbol, both groups
    ]  # fmt: skip
    assert args == [
        s.stream, s.group, "c1", "t0k", 15_000, 200, 500, 10_000,
        t0, e1,  # lowest and highest ID held
        e0,  # newest new entry
        123, 1, 0,  # now_ms, reclaimed, future
        2, e0, e1,  # counted IDs
        1, t0,  # trimmed IDs
        0,  # replayed IDs (settled before: acknowledged only)
        2, e0, e0, e1, e1,  # settled ranges: the read's run, the reclaimed entry alone
        BUCKETS,  # the increments, one JSON argument (below)
        1, e1, "why", '{"x": "y"}',  # invalid records
    ]  # fmt: skip
