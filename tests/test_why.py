"""`p35 why` against a real redis-server and a real `p35 run` that counted real-shaped
traffic: the onset, the attribution, the detail, the baselines and each exit status."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from decision_intel.devtools import producers
from tests.helpers import STREAM, Daemon, RawRedis, drained, run_p35, wait_for
from tests.traffic import Make, blocked, normal, now_minute, write_minutes

pytestmark = pytest.mark.e2e  # every test counts its traffic with a real `p35 run`


def count_and_why(
    r: RawRedis,
    env: dict[str, str],
    daemons: list[Daemon],
    tmp_path: Path,
    total: int,
    *args: str,
) -> tuple[dict[str, Any], int]:
    d = Daemon(env, tmp_path / "daemon.log").start()
    daemons.append(d)
    wait_for(lambda: drained(r, total), 60, "the traffic counted")
    # Attribution reads the per-symbol snapshot keys: wait for one built after the drain.
    sec, usec = r.time()
    counted_at = sec + usec / 1e6
    wait_for(
        lambda: float(r.hget("quantum:p35:status", "snapshot_ts") or 0) > counted_at,
        30,
        "a snapshot of the counted traffic",
    )
    out = run_p35(env, "why", "--json", *args)
    assert out.returncode in (0, 1, 2, 3), out.stderr
    doc = json.loads(out.stdout)
    assert doc["exit_code"] == out.returncode
    return doc, out.returncode


def test_a_kill_switch_is_dated_to_its_minute_found_on_every_symbol_with_what_to_do(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    now = now_minute(r)
    jump = now - 11

    def pick(rng: random.Random, minute: int, _symbol: str) -> Make:
        if minute >= jump and rng.random() < 0.75:
            return blocked("kill_switch_active")
        return normal

    total = write_minutes(r, range(now - 40, now), 120, pick)
    doc, rc = count_and_why(r, base_env, daemons, tmp_path, total, "--window", "15m")
    gate = doc["gates"][0]
    assert gate["reason"] == "kill_switch_active" and gate["decision"] == "BLOCKED"
    assert abs(gate["since"] - jump * 60) <= 120, (gate["since"] // 60, jump)
    assert gate["share_before"] < 0.05
    assert gate["where"] == "on every symbol"
    assert all(0.6 < s["lift"] < 1.5 for s in gate["symbols"])
    assert gate["examples"][0]["detail"] == "kill_switch_active"
    assert gate["action"]["doc"] == "docs/action-mapping.md#kill_switch_active"
    assert doc["verdict"] in ("not_trading", "degraded") and rc == {"not_trading": 2}.get(
        doc["verdict"], 1
    )
    assert doc["service"]["lag"] == 0 and doc["service"]["status_age_s"] < 15

    # The gate_explosion alert carries the same diagnosis: onset and top symbols.
    def explosion() -> dict[bytes, bytes] | None:
        for _id, fields in r.xrange("quantum:p35:alerts"):
            if fields[b"type"] == b"gate_explosion" and fields[b"state"] == b"firing":
                return fields
        return None

    wait_for(lambda: explosion() is not None, 30, "the gate_explosion alert")
    alert = explosion()
    assert alert is not None and alert[b"reason"] == b"kill_switch_active"
    assert abs(int(alert[b"since"]) - jump * 60) <= 120
    tops = dict(item.split(":") for item in alert[b"top_symbols"].decode().split(","))
    assert len(tops) == 5 and set(tops) <= set(producers.SYMBOLS)
    # The paragraph, as printed: the same verdict and exit status.
    text = run_p35(base_env, "why", "--window", "15m")
    assert text.returncode == rc
    assert "were BLOCKED by `kill_switch_active` since " in text.stdout
    assert "on every symbol" in text.stdout and "What to do: the global kill switch" in text.stdout


def test_a_gate_on_two_symbols_is_attributed_to_them_with_its_raw_detail(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    now = now_minute(r)
    detail = "churn_blacklist:flips=7 in 1h"

    def pick(_rng: random.Random, minute: int, symbol: str) -> Make:
        if minute >= now - 8 and symbol in ("ETHUSDT", "SOLUSDT"):
            return blocked(detail)
        return normal

    total = write_minutes(r, range(now - 20, now), 100, pick, seed=2)
    doc, _ = count_and_why(r, base_env, daemons, tmp_path, total)
    gate = next(g for g in doc["gates"] if g["reason"] == "churn_blacklist")
    assert gate["where"] in ("on ETHUSDT and SOLUSDT", "on SOLUSDT and ETHUSDT")
    assert {s["symbol"] for s in gate["symbols"][:2]} == {"ETHUSDT", "SOLUSDT"}
    assert all(s["lift"] > 2.5 for s in gate["symbols"][:2])
    assert gate["examples"][0]["detail"] == detail  # the parameter the reason drops
    one = run_p35(base_env, "why", "--symbol", "ethusdt")
    assert one.returncode == 2, one.stdout
    assert one.stdout.startswith("ETHUSDT: NOT TRADING — 0 % of ")
    assert f"`{detail}`" in one.stdout


def test_baselines_come_from_yesterdays_buckets_and_last_weeks_rollup(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    now = now_minute(r)

    def share(executed: float) -> Callable[[random.Random, int, str], Make]:
        def pick(rng: random.Random, _minute: int, _symbol: str) -> Make:
            if rng.random() < executed:
                return lambda g, s, ts: producers.apply_layer(g, s, f"{ts:.6f}", executed="true")
            return blocked("risk_paused:x")

        return pick

    week_ago = now - 7 * 1440
    n = write_minutes(r, range(week_ago - 30, week_ago - 20), 60, share(0.30), seed=5)
    n += write_minutes(r, range(now - 1440 - 5, now - 1440 + 1), 60, share(0.50), seed=4)
    n += write_minutes(r, range(now - 5, now), 60, share(0.10), seed=3)
    doc, _ = count_and_why(r, base_env, daemons, tmp_path, n)
    day, week = doc["baseline"]["day_before"], doc["baseline"]["week_before"]
    assert day["source"] == "buckets" and day["execute_share"] == pytest.approx(0.5, abs=0.08)
    assert week["source"] == "daily" and week["execute_share"] == pytest.approx(0.3, abs=0.08)
    assert doc["execute_share"] == pytest.approx(0.1, abs=0.06)
    assert "at this time yesterday" in doc["text"] and "a week ago" in doc["text"]


def test_trading_and_each_unknown_say_so_with_their_exit_status(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    now = now_minute(r)
    # No service status yet: unknown, in words.
    write_minutes(r, range(now - 3, now), 100, lambda rng, m, s: normal)
    before = run_p35(base_env, "why")
    assert before.returncode == 3 and before.stdout.startswith("UNKNOWN — no service status")
    r.flushall()
    # Few decisions: unknown.
    doc, rc = count_and_why(
        r, base_env, daemons, tmp_path, write_minutes(r, range(now - 2, now), 20, lambda *a: normal)
    )
    assert rc == 3 and "only 40 decisions" in doc["unknown_because"]
    # Enough, 40 % executed and no dominant gate: trading.
    more = write_minutes(r, range(now, now + 1), 150, lambda *a: normal, seed=9)
    wait_for(lambda: drained(r, 40 + more), 30, "more counted")
    out = run_p35(base_env, "why")
    assert out.returncode == 0 and out.stdout.startswith("TRADING — "), out.stdout
    # Redis unreachable: unknown, one line, no crash.
    down = dict(base_env, P35_REDIS_URL="redis://127.0.0.1:1/0")
    gone = run_p35(down, "why")
    assert gone.returncode == 3 and gone.stderr.startswith("UNKNOWN — cannot reach Redis")
    assert len(gone.stderr.strip().splitlines()) == 1


def test_hostile_newest_entries_are_read_bounded_and_shown_escaped(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """The newest entries are anyone's: details with terminal escapes, and 1 MB ones.
    The detail is short and cannot steer a terminal; an entry over the size limits is
    read cut down, and shown as the daemon counted it (UNKNOWN/oversize, its cause the
    one quantum:p35:invalid holds), not as the gate its first bytes name."""
    now = now_minute(r)
    total = write_minutes(r, range(now - 5, now), 60, lambda *a: blocked("risk_paused:ok"))
    evil = "risk_paused:\x1b[2J\x1b]0;pwned\x07" + "A" * 2000
    pipe = r.pipeline(transaction=False)
    for n in range(80):  # the last 60 over P35_MAX_ENTRY_BYTES: 16 % of the window
        error = evil + ("A" * (1 << 20) if n >= 20 else "")
        pipe.xadd(STREAM, {"symbol": "BTCUSDT", "executed": "false", "error": error})
    pipe.execute()
    doc, _ = count_and_why(r, base_env, daemons, tmp_path, total + 80)
    details = [e["detail"] for g in doc["gates"] for e in g["examples"]]
    assert details and all(len(d) <= 130 and "\x1b" not in d for d in details)
    examples = {g["reason"]: g["examples"] for g in doc["gates"]}
    assert any(e["detail"].startswith("risk_paused:\\x1b[2J") for e in examples["risk_paused"])
    invalid = {f[b"id"].decode(): f[b"cause"].decode() for _, f in r.xrange("quantum:p35:invalid")}
    assert [(e["detail"], e["count"]) for e in examples["oversize"]] == [
        (invalid[examples["oversize"][0]["id"]], 60)
    ]
    assert examples["oversize"][0]["detail"].startswith("oversize: 3 fields, 1050")
    text = run_p35(base_env, "why")
    assert "\x1b" not in text.stdout and "\x07" not in text.stdout
