"""`make bench` keeps working: each of scripts/bench.py's rounds on tiny sizes, in this
process, and its report naming every part (timings not judged). The rounds without the
daemon run in `make test-fast`; the ones that drain with a real `p35 run` are e2e."""

from __future__ import annotations

from typing import Any

import pytest

from scripts import bench


def report_lines(results: dict[str, Any], *argv: str) -> str:
    return bench.report(bench.parse_args(list(argv)), {"drain": {}, **results})


def test_flush_snapshot_top_and_why_rounds_on_tiny_sizes() -> None:
    flush = bench.flush_round([20, 200], 3)
    for size in ("20", "200"):  # each flush counted its batch (the bench checks the reply)
        per_call = flush[size]
        assert per_call["flush_us"] > 0 and per_call["xreadgroup_us_per_entry"] > 0
    snapshot = bench.snapshot_round(20, 10, 2)
    assert snapshot["fields_per_bucket"] == 1 + 10 + 20 * (4 + 5)
    top = bench.top_round(20, 10)
    assert top["warm_redis_ms"] > 0
    why = bench.why_round(20, 10, 3)
    assert why["gates"][0].startswith("kill_switch_active")  # planted 90 min ago
    text = report_lines(
        {"flush": flush, "snapshot": snapshot, "top": top, "why": why},
        *("--symbols", "20", "--reasons", "10", "--why-hours", "3"),
    )
    for line in (
        "p35 top, one refresh",
        "p35 why --window 1h over 3 h",
        "snapshots",
        "200 entries: flush script",
    ):
        assert line in text


@pytest.mark.e2e
def test_drain_latency_backlog_and_steady_rounds_with_the_real_daemon() -> None:
    drain = bench.drain_round(3000, 35, 1)
    bad = bench.drain_round(1000, 36, 1, bench.bad_day_entry)
    stall = bench.stall_round(20, 5, 500)
    assert set(stall) >= {"views_ms", "drain_ms", "over_100ms"}
    assert bad["p35"]["counted"] == 1000  # oversize and unparseable entries counted too
    assert drain["p35"]["counted"] == 3000  # the daemon counted every entry it drained
    assert drain["ceiling"]["entries"] == 3000
    # The raw reader drains just before p35 and just after; its rate is the mean of both.
    assert min(drain["ceiling"]["rate_before"], drain["ceiling"]["rate_after"]) > 0
    assert 0 < drain["naive"]["entries"] <= 3000
    backlog = bench.backlog_round(4000)
    assert backlog["counted"] == 4000
    latency = bench.latency_round(200, 2)
    assert latency["entries"] >= 350
    steady = {
        kind: bench.steady_round(kind, [0, 100, 1000], 0.5, 0.5, warmup_s=0.2)
        for kind in ("p35", "naive", "ceiling")
    }
    assert set(steady) == {"p35", "naive", "ceiling"} and set(steady["p35"]) == {"0", "100", "1000"}
    assert all(v["cpu_pct"] >= 0 for who in steady.values() for v in who.values())
    # Redis time is what each contender's own commands took: p35's flushes and reads show,
    # the commands its scripts ran are inside the script's time (not counted twice), and
    # the producer's XADDs are nobody's.
    live = steady["p35"]["1000"]["redis_parts_pct"]
    assert live["script:flush"] > 0 and live["xreadgroup"] > 0
    assert not {"hincrby", "xack", "xadd"} & set(live)
    assert steady["p35"]["1000"]["redis_pct"] == pytest.approx(sum(live.values()))
    assert set(steady["ceiling"]["1000"]["redis_parts_pct"]) == {"xreadgroup", "xack"}
    text = report_lines(
        {
            "drain": {"producers": [drain], "bad day": [bad]},
            "stall": stall,
            "latency": latency,
            "backlog": backlog,
            "steady": steady,
        },
        *("--entries", "3000", "--runs", "1", "--rate", "200", "--latency-sec", "2"),
        *("--backlog", "4000", "--steady-sec", "0.5", "--idle-sec", "0.5"),
    )
    for line in (
        "| p35 |",
        "p35 / ceiling:",
        "latency at 200/s",
        "backlog of 4,000",
        "| 1,000/s |",
        "p35's Redis time by command",
        "producers traffic:",
        "bad day traffic:",
        "as a multiple of its own XREADGROUP time",
        "event-loop stalls",
    ):
        assert line in text


def test_the_stall_round_reads_asyncio_debug_reports() -> None:
    """The lines asyncio's debug mode writes (base_events: 'Executing %s took %.3f
    seconds') are what the stall round reads, in the order they came."""
    log = (
        "Executing <Task pending name='tick' coro=<Service._tick_loop()>> took 0.594 seconds\n"
        "something else\n"
        "Executing <Handle Consumer._flush()> took 0.135 seconds\n"
    )
    assert bench._stalls(log) == [
        (594.0, "<Task pending name='tick' coro=<Service._tick_loop()>>"),
        (135.0, "<Handle Consumer._flush()>"),
    ]
