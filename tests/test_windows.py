"""Window sums (pure)."""

from __future__ import annotations

from decision_intel import keys
from decision_intel.model.windows import (
    Counts,
    parse_bucket,
    summed,
    top,
    window_counts,
    window_sum,
)


def test_windows_sum_the_most_recent_buckets_current_included() -> None:
    now = 1000
    buckets = {now - age: Counts({"SKIP": 1}, {"r": 1}) for age in range(0, 90)}
    got = window_counts(buckets, now)
    assert {w: c.total for w, c in got.items()} == {"1m": 1, "5m": 5, "15m": 15, "1h": 60}


def test_a_window_sum_is_the_minutes_ending_at_its_newest_and_no_other() -> None:
    """Minute m holds m decisions: a window is exactly its `length` minutes, its newest
    included (`p35 top` takes the window before it by moving `newest` back a length)."""
    buckets = {m: Counts({"SKIP": m}, {"r": m}) for m in range(1, 101)}
    assert window_sum(buckets, 100, 5).total == 96 + 97 + 98 + 99 + 100
    assert window_sum(buckets, 95, 5).total == 91 + 92 + 93 + 94 + 95
    assert window_sum(buckets, 100, 1).decisions == {"SKIP": 100}
    assert window_sum(buckets, 0, 5).total == 0  # no minute of it has a bucket
    assert summed(buckets[m] for m in (1, 2)).reasons == {"r": 3}
    assert buckets[1].decisions == {"SKIP": 1}  # the parts stay as they were


def test_missing_minutes_count_as_nothing() -> None:
    got = window_counts({990: Counts({"ERROR": 2}, {"exception": 2})}, 1000)
    assert got["1m"].total == got["5m"].total == 0
    assert got["15m"].decisions == got["1h"].decisions == {"ERROR": 2}


def test_parse_bucket_splits_symbol_fields_per_symbol() -> None:
    c = parse_bucket(
        {
            b"decision:SKIP": b"3",
            b"reason:no_position": b"2",
            b"reason:other": b"1",
            b"symbol_decision:BTCUSDT:SKIP": b"2",
            b"symbol_reason:BTCUSDT:no_position": b"2",
            b"symbol_decision:ETHUSDT:SKIP": b"1",
            b"symbol_reason:ETHUSDT:other": b"1",
            b"v": b"7",
            b"s:BTCUSDT": b"1",  # meta bookkeeping fields are ignored
        }
    )
    assert (c.decisions, c.reasons) == ({"SKIP": 3}, {"no_position": 2, "other": 1})
    assert {s: (x.decisions, x.reasons) for s, x in c.symbols.items()} == {
        "BTCUSDT": ({"SKIP": 2}, {"no_position": 2}),
        "ETHUSDT": ({"SKIP": 1}, {"other": 1}),
    }


def test_parse_bucket_reads_the_fields_keys_names() -> None:
    """The views ask for fields by keys.py's names (HMGET) and read them with parse_bucket:
    what one side names, the other reads back, the whole and each symbol's."""
    fields = {
        keys.decision_field("BLOCKED"): b"5",
        keys.reason_field("kill_switch_active"): b"4",
        keys.decision_field("BLOCKED", "BTCUSDT"): b"3",
        keys.reason_field("kill_switch_active", "BTCUSDT"): b"2",
    }
    assert list(fields) == [
        "decision:BLOCKED",
        "reason:kill_switch_active",
        "symbol_decision:BTCUSDT:BLOCKED",
        "symbol_reason:BTCUSDT:kill_switch_active",
    ]  # as lua/lib.lua writes them
    c = parse_bucket({f.encode(): v for f, v in fields.items()})
    assert (c.decisions, c.reasons) == ({"BLOCKED": 5}, {"kill_switch_active": 4})
    btc = c.symbols["BTCUSDT"]
    assert (btc.decisions, btc.reasons) == ({"BLOCKED": 3}, {"kill_switch_active": 2})


def test_per_symbol_windows_hold_only_symbols_seen_in_them() -> None:
    now = 5000
    btc = Counts({"EXECUTE": 1}, {"none": 1}, {"BTCUSDT": Counts({"EXECUTE": 1}, {"none": 1})})
    eth = Counts(
        {"BLOCKED": 2}, {"risk_paused": 2}, {"ETHUSDT": Counts({"BLOCKED": 2}, {"risk_paused": 2})}
    )
    got = window_counts({now: btc, now - 3: btc, now - 30: eth}, now)
    assert (
        set(got["1m"].symbols) == set(got["5m"].symbols) == set(got["15m"].symbols) == {"BTCUSDT"}
    )
    assert got["5m"].symbols["BTCUSDT"].decisions == {"EXECUTE": 2}
    assert got["1m"].symbols["BTCUSDT"].decisions == {"EXECUTE": 1}
    assert got["1h"].symbols["ETHUSDT"].reasons == {"risk_paused": 2}
    assert btc.symbols["BTCUSDT"].decisions == {"EXECUTE": 1}  # inputs left untouched


def test_top_breaks_ties_by_name() -> None:
    assert top({"b": 2, "a": 2, "c": 5, "d": 1}, 3) == [("c", 5), ("a", 2), ("b", 2)]


def test_only_ascii_digits_are_counts() -> None:
    """`int()` read " 7 ", "+7", "1_000" and Arabic-Indic "٣" as counts (issue 27 #14);
    a 5000-digit value raised instead. Redis's HINCRBY writes ASCII digits, nothing else:
    anything else is skipped, in a bucket, the status and a ZSET score alike."""
    from decision_intel.text import count

    bad = [b" 7 ", b"+7", b"1_000", "٣".encode(), b"-3", b"7.0", b"", b"9" * 5000, b"\xff"]
    fields = {b"decision:SKIP": b"7", **{f"reason:r{i}".encode(): v for i, v in enumerate(bad)}}
    assert parse_bucket(fields) == Counts({"SKIP": 7}, {})
    assert [count(v) for v in (" 7 ", "٣", "²", "12", 3.0, 2.5, float("inf"), None)] == [
        None, None, None, 12, 3, None, None, None,
    ]  # fmt: skip
