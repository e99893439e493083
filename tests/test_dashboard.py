"""`p35 dash` and its wrapper script on known data, empty data and a stale status."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from decision_intel import keys
from decision_intel.devtools.testing import RedisServer, free_port
from tests.helpers import STREAM, RawRedis, p35_executable, run_p35, snapshot

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent


def dash(env: dict[str, str], *args: str, script: bool = False) -> subprocess.CompletedProcess[str]:
    if not script:
        return run_p35(env, "dash", *args)
    env = {**env, "P35": p35_executable(), "P35_ENV_FILE": "/none"}
    return subprocess.run(
        [str(ROOT / "scripts/p35_dashboard_queries.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def plant_minute(r: RawRedis, minute: int) -> None:
    """100 decisions: BLOCKED 60 (risk_paused 50, p33_permit_denied 10), SKIP 30
    (no_position), EXECUTE 10; BTCUSDT has 70 of them and ETHUSDT 30."""
    fields = {
        "decision:BLOCKED": 60,
        "decision:SKIP": 30,
        "decision:EXECUTE": 10,
        "reason:risk_paused": 50,
        "reason:p33_permit_denied": 10,
        "reason:no_position": 30,
        "reason:none": 10,
        "symbol_decision:BTCUSDT:BLOCKED": 50,
        "symbol_decision:BTCUSDT:SKIP": 20,
        "symbol_reason:BTCUSDT:risk_paused": 50,
        "symbol_reason:BTCUSDT:no_position": 20,
        "symbol_decision:ETHUSDT:BLOCKED": 10,
        "symbol_decision:ETHUSDT:SKIP": 10,
        "symbol_decision:ETHUSDT:EXECUTE": 10,
        "symbol_reason:ETHUSDT:p33_permit_denied": 10,
        "symbol_reason:ETHUSDT:no_position": 10,
        "symbol_reason:ETHUSDT:none": 10,
    }
    r.hset(keys.bucket(minute), mapping=fields)
    r.hset(keys.bucket_meta(minute), mapping={**fields, "v": 1})


@pytest.fixture
def known(r: RawRedis, redis_server: RedisServer, base_env: dict[str, str]) -> dict[str, str]:
    sec = int(r.time()[0])
    plant_minute(r, sec // 60)
    snapshot(redis_server.url, sec * 1000)
    r.hset(
        keys.STATUS,
        mapping={"last_ts": f"{time.time() - 40:.3f}", "state": "running", "processed_total": 100},
    )
    r.xgroup_create("quantum:stream:apply.result", "p35_decision_intel", id="0", mkstream=True)
    r.xgroup_createconsumer("quantum:stream:apply.result", "p35_decision_intel", "host-1")
    return base_env


def test_status_text_and_json(known: dict[str, str]) -> None:
    """`p35 status --json` is an operator interface: the status hash and, per window, the
    decision counts and the top reasons as [reason, count] pairs; the text says the same."""
    out = run_p35(known, "status", "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc) == {"status", "windows"}
    assert doc["status"]["state"] == "running" and doc["status"]["processed_total"] == "100"
    assert set(doc["windows"]) == set(keys.WINDOWS)
    assert doc["windows"]["5m"] == {
        "decisions": {"BLOCKED": 60, "EXECUTE": 10, "SKIP": 30},
        "top_reasons": [  # ties as ZREVRANGE gives them
            ["risk_paused", 50],
            ["no_position", 30],
            ["p33_permit_denied", 10],
            ["none", 10],
        ],
    }
    text = run_p35(known, "status").stdout
    assert re.search(r"^status \(\d+ s old, written by \?\):$", text, re.M), text
    assert "\n  state              running\n" in text
    assert "\n5m: 100 decisions: BLOCKED 60 (60 %), EXECUTE 10 (10 %), SKIP 30 (30 %)\n" in text
    assert "\n        50  risk_paused\n" in text


def test_mode_a_text_and_json(known: dict[str, str]) -> None:
    out = dash(known, "a", "--json")
    assert out.returncode == 0, out.stderr
    a = json.loads(out.stdout)["a"]
    assert a["total"] == 100 and a["skip_rate"] == 0.3
    assert a["decisions"]["BLOCKED"] == {"count": 60, "share": 0.6}
    assert [r["reason"] for r in a["top_reasons"]] == [  # ties as ZREVRANGE gives them
        "risk_paused",
        "no_position",
        "p33_permit_denied",
        "none",
    ]
    text = dash(known, "a").stdout
    assert "skip rate  30.0 % of 100 decisions" in text
    assert "\033[" not in text  # no color when not on a terminal


def test_mode_b_reads_per_symbol_keys_and_says_when_a_symbol_is_quiet(
    known: dict[str, str],
) -> None:
    b = json.loads(dash(known, "b", "btcusdt", "SOLUSDT", "--json").stdout)["b"]["symbols"]
    assert b["BTCUSDT"]["total"] == 70
    assert b["BTCUSDT"]["top_gates"][0] == {
        "reason": "risk_paused",
        "count": 50,
        "share": round(50 / 70, 4),
    }
    assert b["SOLUSDT"]["total"] == 0
    text = dash(known, "b", "BTCUSDT", "SOLUSDT").stdout
    assert "SOLUSDT: no decisions in the last 5 minutes" in text
    default = json.loads(dash(known, "b", "--json").stdout)["b"]["symbols"]
    assert set(default) == {"BTCUSDT", "ETHUSDT"}
    assert default["ETHUSDT"]["skip_rate"] == round(10 / 30, 4)


def test_modes_c_and_d_flag_the_dominant_gate(known: dict[str, str]) -> None:
    c = json.loads(dash(known, "c", "--json").stdout)["c"]
    flagged = [g["reason"] for g in c["gates"] if g["dominant"]]
    assert flagged == ["risk_paused"]  # 50 %; no_position is 30 %
    assert "<- dominant" in dash(known, "c").stdout
    drift = dash(known, "d")
    assert drift.returncode == 2 and "DRIFT risk_paused: 50 of 100 (50.0 %)" in drift.stdout
    calm = dash(known, "d", "60")
    assert calm.returncode == 0 and "no gate over the threshold" in calm.stdout
    assert dash(known, "d", "0.25").returncode == 2  # a fraction works too: 50 % > 25 %


def test_mode_e_shows_a_stale_status_honestly(known: dict[str, str], r: RawRedis) -> None:
    """Stale by the views' limits (Settings.stale_after): the status after 15 s, the
    snapshots after three rebuilds missed and at least 60 s."""
    sec, _ = r.time()
    r.hset(keys.STATUS, "snapshot_ts", f"{sec - 70}.000")
    e = json.loads(dash(known, "e", "--json").stdout)["e"]
    assert 39 <= e["status_age_s"] <= 60
    assert (e["status_stale_after_s"], e["snapshot_stale_after_s"]) == (15.0, 60.0)
    assert e["consumers"][0]["name"] == "host-1"
    text = dash(known, "e").stdout
    assert "service status is 4" in text and "(stale)" in text
    assert re.search(r"last snapshot is 7\d s old \(stale\)", text), text
    slow = dash({**known, "P35_SNAPSHOT_INTERVAL_SEC": "30"}, "e").stdout  # limit 90 s
    assert re.search(r"last snapshot is 7\d s old\n", slow), slow


def test_all_modes_and_the_wrapper_script(known: dict[str, str]) -> None:
    both = json.loads(dash(known, "all", "--json").stdout)
    assert set(both) == {"a", "b", "c", "d", "e"}
    wrapped = dash(known, "a", script=True)
    assert wrapped.returncode == 0, wrapped.stderr
    assert wrapped.stdout == dash(known, "a").stdout


def test_empty_redis_gives_honest_empty_states(r: RawRedis, base_env: dict[str, str]) -> None:
    text = dash(base_env, "all", "--window", "15m").stdout
    assert "no decisions in the last 15 minutes" in text
    assert "no service status: the service has never run against this Redis" in text
    assert dash(base_env, "d").returncode == 0


def test_no_password_in_output_when_redis_is_unreachable(base_env: dict[str, str]) -> None:
    secret = "dash-s3cret-9f2"
    env = {**base_env, "P35_REDIS_URL": f"redis://p35:{secret}@127.0.0.1:{free_port()}/0"}
    out = dash(env, "a")
    assert out.returncode == 69
    assert secret not in out.stdout + out.stderr
    assert "p35:***@" in out.stderr
    # The views without an answer of their own for it: one line each, no traceback
    # (status, alerts and report printed one).
    for view in (["status"], ["status", "--json"], ["alerts"], ["report"]):
        out = run_p35(env, *view)
        assert out.returncode == 69, (view, out.stderr)
        assert out.stdout == "" and secret not in out.stderr
        assert out.stderr.startswith(f"p35 {view[0]}: Redis at redis://p35:***@127.0.0.1:")
        assert "ConnectionError" in out.stderr and len(out.stderr.splitlines()) == 1


def test_p35_explain_shows_the_rule_and_the_layers(r: RawRedis, base_env: dict[str, str]) -> None:
    """`p35 explain ID` classifies with the daemon's rules and the env's vocabulary, and says
    which rule decided and where each field came from; exit 1 for an ID not in the stream."""
    details = json.dumps({"decision": "DENIED", "error": "NOT_EXIT_OWNER:source=manual"})
    entry_id = r.xadd(
        "quantum:stream:apply.result",
        {"symbol": "ETHUSDT", "executed": "false", "details": details},
    ).decode()
    hold_id = r.xadd("quantum:stream:apply.result", {"decision": "HOLD"}).decode()
    out = run_p35(base_env, "explain", entry_id, "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    assert set(got) == {"id", "decision", "reason", "symbol", "rule", "cause", "fields"}
    assert (got["id"], got["decision"], got["reason"], got["symbol"], got["rule"]) == (
        entry_id,
        "BLOCKED",
        "not_exit_owner",
        "ETHUSDT",
        "decision",
    )
    assert got["fields"]["decision"] == {"value": "DENIED", "layer": "details"}
    text = run_p35(base_env, "explain", entry_id)
    assert "decided by the decision word" in text.stdout and "from details" in text.stdout
    unknown = json.loads(run_p35(base_env, "explain", hold_id, "--json").stdout)
    assert unknown["decision"] == "UNKNOWN" and "HOLD" in unknown["cause"]
    vocab = {**base_env, "P35_DECISION_WORDS": "HOLD=SKIP"}
    assert json.loads(run_p35(vocab, "explain", hold_id, "--json").stdout)["decision"] == "SKIP"
    assert run_p35(base_env, "explain", "1-1").returncode == 1
    # A value with a control character is escaped once: repr() of the escaped text
    # printed a second backslash, `'BTC\\x0aUSDT'`.
    odd_id = r.xadd(
        "quantum:stream:apply.result", {"decision": "BLOCKED", "symbol": "BTC\nUSDT"}
    ).decode()
    odd = run_p35(base_env, "explain", odd_id).stdout
    assert "  symbol    'BTC\\x0aUSDT' from top\n" in odd, odd


def test_usage_errors_exit_64_never_a_verdict(base_env: dict[str, str]) -> None:
    """argparse's own exit status, 2, is `p35 why`'s NOT TRADING and `p35 dash d`'s drift:
    a monitor running a mistyped check read a verdict. Arguments are checked before
    Redis is asked, and what was given is quoted escaped."""
    cases = [
        (["why", "--window", "2m"], "invalid choice: '2m'"),
        (["why", "--symbol", "\x1b[2J"], "not a symbol (2 to 30 letters and digits): '\\x1b[2J'"),
        (["dash", "d", "--window", "2h"], "invalid choice: '2h'"),
        (["dash", "b", "BTC\x07"], "not a symbol (2 to 30 letters and digits): 'BTC\\x07'"),
        (["explain", "garbage"], "not a stream entry ID (<ms>-<seq>): 'garbage'"),
        (["explain", f"{2**64}-0"], "not a stream entry ID"),
        (["report", "--day", "00010101"], "not a UTC day YYYYMMDD from 19700101"),
        (["alerts", "-n", "0"], "must be a number above 0: '0'"),
        (["top", "--interval", "-1"], "must be a number above 0: '-1'"),
    ]
    down = {**base_env, "P35_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    for args, said in cases:
        out = run_p35(down, *args)
        assert out.returncode == 64, (args, out.returncode, out.stderr)
        assert said in out.stderr and "\x1b" not in out.stderr and "\x07" not in out.stderr, (
            args,
            out.stderr,
        )


@pytest.mark.parametrize(
    "args", [["status"], ["status", "--json"], ["alerts"], ["why"], ["dash", "a"]]
)
def test_a_reader_that_left_is_no_redis_error(
    r: RawRedis, base_env: dict[str, str], args: list[str]
) -> None:
    """`p35 status | head -1`: status said `Redis at …: BrokenPipeError` and exited 69
    (Redis trouble) when the reader left; the others wrote Python's 'Exception ignored'
    message. Now the rest is dropped in silence and the exit is a SIGPIPE's (141), as
    for any tool in a pipe."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first write
    with os.fdopen(write_end, "wb") as stdout:
        out = subprocess.run(
            [p35_executable(), *args],
            env=base_env,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert (out.returncode, out.stderr) == (141, ""), (args, out.returncode, out.stderr)


def test_a_status_dated_ahead_of_redis_clock_is_stale_everywhere(
    r: RawRedis, known: dict[str, str]
) -> None:
    """A heartbeat dated an hour ahead of Redis's clock (an older daemon on a host whose
    clock runs fast, or a planted value) says nothing about the service now: `check`
    passed it as "status is -3580 s old", `why` gave a verdict on stale counts and `dash
    e` did not mark it (issue 27 #3). A negative age is stale in each of them."""
    sec, _ = r.time()
    r.hset(keys.STATUS, "last_ts", f"{sec + 3600}.000")
    check = run_p35(known, "check")
    assert check.returncode == 1, check.stdout
    ahead = r"dated 3[56]\d\d s ahead of Redis's clock"  # an hour, less the seconds passed
    assert re.search(f"FAIL heartbeat: status is {ahead}", check.stdout), check.stdout
    why = run_p35(known, "why", "--json")
    assert why.returncode == 3, why.stdout
    assert "ahead of Redis's clock" in json.loads(why.stdout)["unknown_because"]
    text = dash(known, "e").stdout
    assert re.search(f"service status is {ahead} \\(stale\\)", text), text
    assert re.search(ahead, run_p35(known, "status").stdout)


def test_infinite_scores_in_the_top_keys_break_no_view(r: RawRedis, known: dict[str, str]) -> None:
    """A ZSET score of +inf or -inf planted in `reason:top:<w>` or a per-symbol top key
    killed `status`, `status --json` and every `dash` mode with an OverflowError (issue 27
    #6). It is no count: left out, and the rest is shown."""
    for key in (keys.reason_top("5m"), keys.symbol_reason_top("BTCUSDT", "5m")):
        r.zadd(key, {"planted_up": float("inf"), "planted_down": float("-inf"), "half": 2.5})
    r.zadd(keys.symbol_reason_top("ETHUSDT", "5m"), {"p33_permit_denied": float("inf")})  # why
    for args in (["status"], ["status", "--json"], ["dash", "all"], ["dash", "all", "--json"]):
        out = run_p35(known, *args)
        assert out.returncode in (0, 2) and "Traceback" not in out.stderr, (args, out.stderr)
        assert "risk_paused" in out.stdout and "planted_" not in out.stdout, (args, out.stdout)
    why = run_p35(known, "why", "--json")
    assert why.returncode in (0, 1, 2, 3) and "Traceback" not in why.stderr, why.stderr


def test_far_future_alert_timestamps_break_no_view(r: RawRedis, base_env: dict[str, str]) -> None:
    """An alert dated 1e20 made `p35 alerts` exit 1 with a traceback, and 1e17 exit 69
    blaming Redis (gmtime's OverflowError and OSError; issue 27 #7). Such a time is shown
    as "?", and the rest of the line and the other alerts as usual."""
    for ts in ("1e20", "1e17", "-1e20"):
        r.xadd(keys.ALERTS, {"type": "stuck", "state": "firing", "subject": ts, "timestamp": ts})
    r.xadd(keys.ALERTS, {"type": "stuck", "state": "resolved", "subject": "ok", "timestamp": "0"})
    out = run_p35(base_env, "alerts")
    assert out.returncode == 0 and not out.stderr, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == 4 and lines[0].startswith("1970-01-01 00:00:00Z  resolved")
    assert all(line.startswith("?") and "firing" in line for line in lines[1:]), lines


def test_p35_explain_counts_an_entry_over_the_limits_as_the_daemon_does(
    r: RawRedis, base_env: dict[str, str]
) -> None:
    """An entry over the 8 MiB read budget made `p35 explain` exit 69 with "Redis at …:
    ReplyTooLarge" (issue 27 #11). It is read measured, like the daemon's reads, and
    explained as the daemon counts it: UNKNOWN/oversize, with its size and the limits
    (model/admission.py's `refusal`, the consumer's)."""
    huge = r.xadd(STREAM, {"decision": "SKIP", "details": "x" * (9 << 20)}).decode()
    wide = r.xadd(STREAM, {f"f{i}": "1" for i in range(300)}).decode()
    for entry_id, cause in ((huge, "oversize: 2 fields, 9437"), (wide, "oversize: 300 fields")):
        out = run_p35(base_env, "explain", entry_id, "--json")
        assert out.returncode == 0, out.stderr
        got = json.loads(out.stdout)
        assert (got["decision"], got["reason"]) == ("UNKNOWN", "oversize"), got
        assert cause in got["cause"], got["cause"]
        assert got["cause"].endswith(" (limits 256 fields, 65536 bytes)")  # the daemon's words
    text = run_p35(base_env, "explain", huge)
    assert text.returncode == 0 and "UNKNOWN, reason oversize" in text.stdout, text.stderr
    assert len(text.stdout) < 1000


@pytest.mark.parametrize(
    ("key", "views"),
    [
        (keys.STATUS, [["status"], ["status", "--json"], ["dash", "e"]]),
        (keys.reason_top("5m"), [["status"], ["dash", "a"], ["dash", "all", "--json"]]),
        (keys.symbol_reason_top("BTCUSDT", "5m"), [["dash", "b"]]),
        (keys.ALERTS, [["alerts"], ["alerts", "--json"]]),
        ("quantum:p35:daily:20261119", [["report", "--day", "20261119"]]),
    ],
)
def test_a_key_of_another_type_is_named_not_taken_for_redis_down(
    r: RawRedis, base_env: dict[str, str], key: str, views: list[list[str]]
) -> None:
    """A key planted with another type made status, dash, alerts and report exit 69
    with "Redis at URL: ResponseError WRONGTYPE", which reads as Redis down (issue 27
    #10). The view names the key and exits 1, as for other data it cannot use."""
    r.set(key, "planted")
    for args in views:
        out = run_p35(base_env, *args)
        assert out.returncode == 1, (args, out.returncode, out.stderr)
        assert f"{key} is a string, not a " in out.stderr, (args, out.stderr)
        assert "Redis at" not in out.stderr and "Traceback" not in out.stderr


def test_a_planted_megabyte_name_is_shown_cut_and_dash_e_sums_up_consumers(
    r: RawRedis, known: dict[str, str]
) -> None:
    """A 1 MB planted reason gave 2-4 MB of output from why, status, dash and report, and
    `dash e` listed every consumer (1.86 MB for 20,000; issue 27 #12). Names are cut,
    with their length, and `dash e` lists 20 consumers and says how many more there are."""
    big = "r" * (1 << 20)
    sec, _ = r.time()
    minute, day = int(sec) // 60, time.strftime("%Y%m%d", time.gmtime(int(sec)))
    for key in (keys.bucket(minute), keys.bucket_meta(minute), f"quantum:p35:daily:{day}"):
        r.hset(key, mapping={f"reason:{big}": 90, f"symbol_reason:BTCUSDT:{big}": 60})
    r.hset(f"quantum:p35:daily:{day}", "decision:BLOCKED", 90)
    r.zadd(keys.reason_top("5m"), {big: 90})
    r.hset(keys.STATUS, "consumer_name", big)
    for i in range(50):
        r.xgroup_createconsumer(STREAM, "p35_decision_intel", f"ghost-{i}")
    for args in (["why"], ["status"], ["status", "--json"], ["dash", "all"], ["report"]):
        out = run_p35(known, *args)
        assert out.returncode in (0, 1, 2, 3) and "Traceback" not in out.stderr, out.stderr
        assert len(out.stdout) + len(out.stderr) < 20_000, (args, len(out.stdout))
        assert f"...[{1 << 20} chars]" in out.stdout, (args, out.stdout[:300])
    e = dash(known, "e")
    assert "and 31 more consumers" in e.stdout, e.stdout  # host-1 and 50 ghosts
    assert json.loads(dash(known, "e", "--json").stdout)["e"]["consumers_total"] == 51


def test_mode_e_sums_up_a_consumer_list_larger_than_the_read_budget(
    known: dict[str, str], r: RawRedis
) -> None:
    """Issue 27 #5: with 60,000 long ghost names the XINFO CONSUMERS reply (15 MiB) passed
    the read budget and `dash e` exited 69 blaming Redis. The same at a tenth of the scale
    under a 1 MiB budget (1.5 MB of names): summed up inside Redis, the view lists the
    20 with the most pending, cut, and counts the rest."""
    pipe = r.pipeline(transaction=False)
    for i in range(6000):
        pipe.xgroup_createconsumer(STREAM, "p35_decision_intel", f"ghost-{'g' * 240}-{i:05d}")
        if len(pipe) >= 1000:
            pipe.execute()
    pipe.execute()
    r.xadd(STREAM, {"decision": "SKIP"})
    r.xadd(STREAM, {"decision": "SKIP"})
    r.xreadgroup("p35_decision_intel", f"ghost-{'g' * 240}-05999", {STREAM: ">"}, count=2)
    env = {**known, "P35_READ_BUDGET_BYTES": str(1 << 20)}
    e = dash(env, "e")
    assert e.returncode != 69 and "Traceback" not in e.stderr, e.stderr
    assert "and 5981 more consumers" in e.stdout, e.stdout  # host-1 and 6,000 ghosts
    assert len(e.stdout) < 20_000
    doc = json.loads(dash(env, "e", "--json").stdout)["e"]
    assert doc["consumers_total"] == 6001
    first = doc["consumers"][0]  # the most pending first
    assert first["pending"] == 2
    assert first["name"] == f"ghost-{'g' * 74}...[252 chars]"


def _fake_systemctl(tmp_path: Path, env: dict[str, str], units: str, rc: int = 0) -> dict[str, str]:
    """`systemctl` on PATH that prints `units` as `list-units --plain --no-legend` does and
    records its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "units").write_text(units)
    fake = bin_dir / "systemctl"
    fake.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\ncat {tmp_path}/units\nexit {rc}\n'
    )
    fake.chmod(0o755)
    return {**env, "PATH": f"{bin_dir}:{env.get('PATH', os.defpath)}"}


UNIT = "quantum-p35-decision-intelligence"
INSTANCES = (
    f"{UNIT}@a.service loaded active running P3.5 Decision Intelligence, consumer a\n"
    f"{UNIT}@b.service loaded failed failed P3.5 Decision Intelligence, consumer b\n"
)


def test_mode_e_reports_the_template_instances_state(known: dict[str, str], tmp_path: Path) -> None:
    """The service runs as `@a` and `@b`, the plain unit is not loaded: dash e names each
    instance's state and sums them up (`failed`, as `@b` failed), where it used to ask
    about the plain unit alone and say `inactive`."""
    env = _fake_systemctl(tmp_path, known, INSTANCES)
    e = json.loads(dash(env, "e", "--json").stdout)["e"]
    assert e["systemd_units"] == {UNIT: "inactive", f"{UNIT}@a": "active", f"{UNIT}@b": "failed"}
    assert e["systemd"] == "failed"
    args = (tmp_path / "args").read_text().split()
    assert args[0] == "list-units" and {f"{UNIT}.service", f"{UNIT}@*.service"} <= set(args)
    text = dash(env, "e").stdout
    assert f"systemd: {UNIT}@a is active" in text and f"systemd: {UNIT}@b is failed" in text


@pytest.mark.parametrize(
    ("units", "rc", "state"),
    [
        (f"{UNIT}@a.service loaded active a\n{UNIT}@b.service loaded active b\n", 0, "active"),
        (f"{UNIT}.service loaded active running P3.5 Decision Intelligence\n", 0, "active"),
        ("", 0, "inactive"),  # nothing loaded: neither the unit nor an instance runs
        ("System has not been booted with systemd\n", 1, None),  # systemctl cannot tell
    ],
)
def test_mode_e_sums_up_the_units_state(
    known: dict[str, str], tmp_path: Path, units: str, rc: int, state: str | None
) -> None:
    env = _fake_systemctl(tmp_path, known, units, rc)
    e = json.loads(dash(env, "e", "--json").stdout)["e"]
    assert e["systemd"] == state
    assert (e["systemd_units"] is None) == (state is None)
