"""`p35 report`: a planted day against the same weekday a week before, text and JSON."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from tests.helpers import RawRedis, run_p35

pytestmark = pytest.mark.e2e

DAY, WEEK_AGO = "20261119", "20261112"


def report(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_p35(env, "report", *args)


def plant(r: RawRedis, day: str, fields: dict[str, int | str]) -> None:
    r.hset(f"quantum:p35:daily:{day}", mapping=fields)


def test_week_over_week_shares_and_movers(r: RawRedis, base_env: dict[str, str]) -> None:
    plant(
        r,
        DAY,
        {
            "decision:EXECUTE": 100,
            "decision:BLOCKED": 300,
            "decision:SKIP": 100,
            "reason:none": 150,
            "reason:risk_paused": 250,
            "reason:no_position": 50,
            "reason:p33_permit_denied": 50,
            "symbol_decision:BTCUSDT:BLOCKED": 200,
            "symbol_decision:ETHUSDT:SKIP": 100,
        },
    )
    plant(
        r,
        WEEK_AGO,
        {
            "decision:EXECUTE": 200,
            "decision:BLOCKED": 100,
            "decision:SKIP": 100,
            "reason:none": 250,
            "reason:risk_paused": 20,
            "reason:no_position": 50,
            "reason:p33_permit_denied": 80,
        },
    )
    out = report(base_env, "--day", DAY, "--json")
    assert out.returncode == 0, out.stderr
    rep = json.loads(out.stdout)
    assert (rep["total"], rep["previous_total"], rep["compared_with"]) == (500, 400, WEEK_AGO)
    assert rep["decisions"]["BLOCKED"] == {
        "count": 300,
        "share": 0.6,
        "previous_share": 0.25,
        "change_pp": 35.0,
    }
    assert rep["decisions"]["EXECUTE"]["change_pp"] == -30.0
    assert rep["top_gates"][0] == {"reason": "risk_paused", "count": 250, "share": 0.5}
    assert rep["rose"] == [{"reason": "risk_paused", "change_pp": 45.0}]  # 5 % -> 50 %
    assert rep["fell"] == [
        {"reason": "p33_permit_denied", "change_pp": -10.0},
        {"reason": "no_position", "change_pp": -2.5},
    ]
    assert all(g["reason"] != "none" for g in rep["top_gates"] + rep["rose"] + rep["fell"])
    assert rep["top_symbols"][0] == {"symbol": "BTCUSDT", "count": 200}
    assert rep["partial"] is False
    text = report(base_env, "--day", DAY).stdout
    assert f"{DAY}: 500 decisions, against {WEEK_AGO} (400 decisions)" in text
    assert "+45.00 pp  risk_paused" in text and "BLOCKED        300   60.0 %  +35.00 pp" in text
    symbols = text.split("top symbols:\n")[1].splitlines()
    assert [line.split() for line in symbols[:2]] == [["200", "BTCUSDT"], ["100", "ETHUSDT"]]


def test_today_is_said_to_be_the_day_so_far(r: RawRedis, base_env: dict[str, str]) -> None:
    today = time.strftime("%Y%m%d", time.gmtime())
    plant(r, today, {"decision:EXECUTE": 3, "reason:none": 3})
    rep = json.loads(report(base_env, "--json").stdout)
    text = report(base_env).stdout
    if time.strftime("%Y%m%d", time.gmtime()) != today:
        pytest.skip("UTC midnight passed during the test")
    assert (rep["day"], rep["partial"], rep["total"]) == (today, True, 3)
    assert text.startswith(f"{today} (today so far, the last minute or two not rolled up yet): 3")


def test_names_planted_in_a_rollup_reach_no_terminal_raw(
    r: RawRedis, base_env: dict[str, str]
) -> None:
    """Rollup field names carry reasons and symbols: anyone who can write the key can
    plant a title change, a screen clear, a C1 CSI, a bidi override or bytes that are not
    UTF-8. Both outputs print them escaped."""
    r.hset(
        f"quantum:p35:daily:{DAY}",
        mapping={
            "decision:BLOCKED": 9,
            "reason:gate\x1b]0;pwned\x07": 5,
            "reason:\u202eevil": 4,
            "symbol_decision:BTC\x9b2J:BLOCKED": 5,
            b"symbol_decision:ETH\xff:BLOCKED": 4,
        },
    )
    for args in (["--day", DAY], ["--day", DAY, "--json"]):
        out = report(base_env, *args)
        assert out.returncode == 0, out.stderr
        for raw in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert raw not in out.stdout + out.stderr, (args, out.stdout)
    text = report(base_env, "--day", DAY).stdout
    assert "gate\\x1b]0;pwned\\x07" in text and "BTC\\x9b2J" in text


def test_no_comparison_and_no_data_are_said_plainly(r: RawRedis, base_env: dict[str, str]) -> None:
    plant(r, DAY, {"decision:EXECUTE": 3, "reason:none": 3})
    rep = json.loads(report(base_env, "--day", DAY, "--json").stdout)
    assert rep["compared_with"] is None and rep["rose"] == [] and rep["fell"] == []
    assert "no comparison" in report(base_env, "--day", DAY).stdout
    assert "no decisions recorded for 20261118" in report(base_env, "--day", "20261118").stdout
    bad = report(base_env, "--day", "2026-11-18")
    assert bad.returncode == 64 and "YYYYMMDD" in bad.stderr


@pytest.mark.parametrize(
    "decisions",
    [
        {},
        {"decision:EXECUTE": "-3", "decision:SKIP": "3"},
        {"decision:EXECUTE": "2.5", "decision:BLOCKED": "x"},
        {"decision:EXECUTE": "0"},
    ],
)
def test_a_rollup_without_decision_counts_is_reported_not_a_crash(
    r: RawRedis, base_env: dict[str, str], decisions: dict[str, str]
) -> None:
    """Decision counts that are missing, negative, not whole or zero, beside reason
    counts that are integers, crashed `p35 report` with a KeyError (issue 27 #8)."""
    plant(r, DAY, {**decisions, "reason:risk_paused": 4, "reason:none": 1})
    plant(r, WEEK_AGO, {"decision:SKIP": "-1", "reason:risk_paused": 2})
    for args in ([], ["--json"]):
        out = report(base_env, "--day", DAY, *args)
        assert out.returncode == 0 and not out.stderr, out.stderr
    rep = json.loads(report(base_env, "--day", DAY, "--json").stdout)
    [gate] = rep["top_gates"]
    assert gate["reason"] == "risk_paused" and gate["count"] == 4
    assert gate["share"] == (0.0 if rep["total"] == 0 else round(4 / rep["total"], 4))
