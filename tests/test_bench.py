"""`make bench` keeps working: a small run of scripts/bench.py end to end (timings not judged)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.e2e
def test_a_small_benchmark_run_reports_every_part(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/bench.py"),
            "--entries",
            "3000",
            "--runs",
            "1",
            "--naive-sec",
            "1",
            "--latency-sec",
            "2",
            "--rate",
            "200",
            "--backlog",
            "4000",
            "--symbols",
            "20",
            "--reasons",
            "10",
            "--steady-sec",
            "1",
            "--idle-sec",
            "1",
            "--why-hours",
            "3",
            "--flushes",
            "3",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert run.returncode == 0, run.stderr
    results = json.loads(out.read_text())
    [drain] = results["drain"]
    assert drain["p35"]["counted"] == 3000  # the daemon counted every entry it drained
    assert drain["ceiling"]["entries"] == 3000
    # The raw reader drains just before p35 and just after; its rate is the mean of both.
    assert min(drain["ceiling"]["rate_before"], drain["ceiling"]["rate_after"]) > 0
    assert 0 < drain["naive"]["entries"] <= 3000
    assert results["backlog"]["counted"] == 4000
    assert results["latency"]["entries"] >= 350
    assert results["snapshot"]["fields_per_bucket"] == 1 + 10 + 20 * (4 + 5)
    steady = results["steady"]
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
    assert results["top"]["warm_redis_ms"] > 0
    for size in ("20", "200"):  # each flush counted its batch (the bench checks the reply)
        per_call = results["flush"][size]
        assert per_call["flush_us"] > 0 and per_call["xreadgroup_us_per_entry"] > 0
    assert results["why"]["gates"][0].startswith("kill_switch_active")  # planted 90 min ago
    for line in (
        "p35 top, one refresh",
        "p35 why --window 1h over 3 h",
        "| p35 |",
        "p35 / ceiling:",
        "latency at 200/s",
        "backlog of 4,000",
        "snapshots",
        "| 1,000/s |",
        "p35's Redis time by command",
        "200 entries: flush script",
    ):
        assert line in run.stdout
