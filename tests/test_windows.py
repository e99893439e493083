"""Window sums (pure)."""

from __future__ import annotations

from decision_intel.windows import Counts, parse_bucket, top, window_counts


def test_windows_sum_the_most_recent_buckets_current_included() -> None:
    now = 1000
    buckets = {now - age: Counts({"SKIP": 1}, {"r": 1}) for age in range(0, 90)}
    got = window_counts(buckets, now)
    assert {w: c.total for w, c in got.items()} == {"1m": 1, "5m": 5, "15m": 15, "1h": 60}


def test_missing_minutes_count_as_nothing() -> None:
    got = window_counts({990: Counts({"ERROR": 2}, {"exception": 2})}, 1000)
    assert got["1m"].total == got["5m"].total == 0
    assert got["15m"].decisions == got["1h"].decisions == {"ERROR": 2}


def test_parse_bucket_keeps_only_decision_and_reason_fields() -> None:
    c = parse_bucket({
        b"decision:SKIP": b"3", b"reason:no_position": b"3",
        b"symbol_decision:BTCUSDT:SKIP": b"3", b"symbol_reason:BTCUSDT:no_position": b"3",
    })  # fmt: skip
    assert (c.decisions, c.reasons) == ({"SKIP": 3}, {"no_position": 3})


def test_top_breaks_ties_by_name() -> None:
    assert top({"b": 2, "a": 2, "c": 5, "d": 1}, 3) == [("c", 5), ("a", 2), ("b", 2)]
