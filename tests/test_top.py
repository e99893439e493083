"""`p35 top` driven in a real terminal (tmux) against a real redis-server and daemon."""

from __future__ import annotations

import itertools
import os
import random
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from decision_intel.cli.top import Frame, incomplete_line, verdict_line
from decision_intel.devtools import producers
from decision_intel.model.classify import BLOCKED, EXECUTE
from decision_intel.model.diagnose import Thresholds
from decision_intel.model.losses import LossEvent
from decision_intel.model.windows import Counts
from tests.helpers import STREAM, Daemon, RawRedis, drained, p35_executable, run_p35, wait_for
from tests.traffic import Make, blocked, normal, now_minute, write_minutes

_ids = itertools.count()
COLOR_CODES = {str(c) for c in [*range(30, 38), 38, *range(40, 48), 48, *range(90, 98)]}


class Pane:
    """One tmux session (on a socket of its own) running `p35 top`."""

    def __init__(self, tmp_path: Path, env: dict[str, str], width: int, height: int, *args: str):
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail("tmux is not installed (apt-get install tmux)")
        # A socket per test process and pane: parallel workers never share a tmux server.
        self.tmux = [tmux, "-L", f"p35test{os.getpid()}_{next(_ids)}", "-f", "/dev/null"]
        self.exit_file = tmp_path / f"top_exit_{next(_ids)}"
        # The terminal's size is the pane's: no COLUMNS/LINES from the test's environment.
        env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES")}
        command = " ".join(
            ["env", "-u", "COLUMNS", "-u", "LINES"]
            + [*(shlex.quote(f"{k}={v}") for k, v in env.items()), p35_executable(), "top"]
            + [shlex.quote(a) for a in args]
        )
        script = f"{command}; echo $? > {self.exit_file}; sleep 60"
        subprocess.run(
            [
                *self.tmux,
                "new-session",
                "-d",
                "-s",
                "t",
                "-x",
                str(width),
                "-y",
                str(height),
                script,
            ],
            check=True,
        )

    def screen(self, escapes: bool = False) -> str:
        args = ["capture-pane", "-p", "-t", "t"] + (["-e"] if escapes else [])
        return subprocess.run([*self.tmux, *args], capture_output=True, text=True).stdout

    def wait(self, cond: Callable[[str], bool], what: str, timeout: float = 20) -> str:
        try:
            wait_for(lambda: cond(self.screen()), timeout, what, every=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen:\n{self.screen()}") from None
        return self.screen()

    def press(self, key: str) -> None:
        subprocess.run([*self.tmux, "send-keys", "-t", "t", key], check=True)

    def exit_status(self, timeout: float = 10) -> int:
        wait_for(self.exit_file.exists, timeout, "p35 top to exit")
        return int(self.exit_file.read_text().strip())

    def close(self) -> None:
        subprocess.run([*self.tmux, "kill-server"], capture_output=True)


@pytest.fixture
def panes() -> Iterator[list[Pane]]:
    opened: list[Pane] = []
    yield opened
    for p in opened:
        p.close()


@pytest.fixture
def kill_switch_counted(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """40 minutes of both producers' traffic, the last 10 with the kill switch at 70 %,
    counted by a running daemon."""
    now = now_minute(r)

    def pick(rng: random.Random, minute: int, _symbol: str) -> Make:
        if minute >= now - 10 and rng.random() < 0.7:
            return blocked("kill_switch_active")
        return normal

    total = write_minutes(r, range(now - 40, now), 60, pick, seed=4)
    daemons.append(Daemon(base_env, tmp_path / "d.log").start())
    wait_for(lambda: drained(r, total), 60, "the traffic counted")


@pytest.mark.e2e
@pytest.mark.tmux
def test_top_shows_verdict_gates_and_heatmap_follows_traffic_and_keys(
    r: RawRedis,
    base_env: dict[str, str],
    kill_switch_counted: None,
    panes: list[Pane],
    tmp_path: Path,
) -> None:
    pane = Pane(tmp_path, base_env, 120, 40, "--interval", "0.5")
    panes.append(pane)
    screen = pane.wait(
        lambda s: "kill_switch_active" in s and all(sym in s for sym in producers.SYMBOLS),
        "the verdict, the gate and every symbol's heatmap row",
    )
    first_line = screen.splitlines()[0]
    assert first_line.startswith(("NOT TRADING — ", "DEGRADED — ")), first_line
    assert "(5m)" in first_line and "kill_switch_active" in first_line and " since " in first_line
    heat_rows = [ln for ln in screen.splitlines() if ln[:8].strip() in producers.SYMBOLS]
    assert len(heat_rows) == len(producers.SYMBOLS)  # 7 symbols: a taller screen shows all
    assert any(" a a a" in row for row in heat_rows)  # the kill switch holds their minutes
    # New traffic: a gate nobody had appears on the screen by itself.
    for _ in range(400):
        r.xadd(STREAM, {"symbol": "SOLUSDT", "executed": "false", "error": "churn_global_freeze"})
    pane.wait(lambda s: "churn_global_freeze" in s, "the new gate on the screen")
    pane.press("w")
    pane.wait(lambda s: "(15m)" in s.splitlines()[0], "the 15m window after w")
    pane.press("q")
    assert pane.exit_status() == 0


@pytest.mark.e2e
@pytest.mark.tmux
def test_top_fits_80x24_honours_no_color_and_waits_out_redis_down(
    r: RawRedis,
    base_env: dict[str, str],
    kill_switch_counted: None,
    panes: list[Pane],
    tmp_path: Path,
) -> None:
    pane = Pane(tmp_path, dict(base_env, NO_COLOR="1", TERM="xterm-256color"), 80, 24)
    panes.append(pane)
    screen = pane.wait(lambda s: "recent alerts" in s and "kill_switch_active" in s, "80x24")
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(ln) <= 80 for ln in lines)
    assert lines[0].startswith(("NOT TRADING", "DEGRADED")) and lines[0].endswith("UTC")
    assert any(ln.startswith("  a=kill_switch_active") for ln in lines)
    sgr = re.findall(r"\x1b\[([0-9;]*)m", pane.screen(escapes=True))
    colors = {p for seq in sgr for p in seq.split(";") if p in COLOR_CODES}
    assert not colors, colors  # bold and resets, never a color
    assert any(ln.startswith("·") or "E" in ln for ln in lines[3:8])  # decisions by letter
    pane.press("C-c")  # Ctrl-C quits cleanly too
    assert pane.exit_status() == 0

    down = dict(base_env, P35_REDIS_URL="redis://127.0.0.1:1/0")
    pane = Pane(tmp_path, down, 80, 24, "--interval", "0.5")
    panes.append(pane)
    pane.wait(lambda s: "unreachable" in s and "retrying" in s, "the Redis-down screen")
    pane.wait(lambda s: "unreachable" in s, "still there after retries", timeout=3)
    pane.press("q")
    assert pane.exit_status() == 0


def test_top_refuses_a_non_terminal_with_a_hint(base_env: dict[str, str]) -> None:
    out = run_p35(base_env, "top")
    assert out.returncode == 64
    assert out.stderr.strip() == (
        "p35 top needs a terminal; for scripts use `p35 dash a` or `p35 why --json`"
    )


# -- the verdict line (pure) -------------------------------------------------------------------


def _minute(gate_n: int, execute_n: int) -> Counts:
    return Counts(
        decisions={BLOCKED: gate_n, EXECUTE: execute_n},
        reasons={"kill_switch_active": gate_n, "none": execute_n},
    )


def _line(minutes: dict[int, Counts], now_minute: int) -> str:
    frame = Frame("5m", now_s=now_minute * 60 + 30, minutes=minutes)
    return verdict_line(frame, Thresholds())[0]


def _hhmm(minute: int) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(minute * 60))


def test_verdict_line_dates_a_gate_from_its_first_minute_of_traffic_not_an_hour_ago() -> None:
    now = 29_000_000
    # Traffic began two minutes ago: the gate has held since then, or earlier (unseen).
    line = _line({now - 1: _minute(95, 5), now: _minute(95, 5)}, now)
    assert f"kill_switch_active 95 % since {_hhmm(now - 1)} or earlier" in line
    assert "hour" not in line
    # Thirty minutes of trading before it: the onset is known exactly.
    minutes = {m: _minute(0, 100) for m in range(now - 39, now - 9)}
    minutes.update({m: _minute(95, 5) for m in range(now - 9, now + 1)})
    line = _line(minutes, now)
    assert line.endswith(f"kill_switch_active 95 % since {_hhmm(now - 9)}")


def test_a_status_dated_ahead_of_redis_clock_is_stale() -> None:
    """A negative age is no fresh heartbeat (issue 27 #3); nor is one past the limit."""
    from decision_intel.cli.top import health_line

    def line(last_ts: float) -> tuple[str, bool]:
        return health_line(Frame("5m", now_s=1000.0, status={"last_ts": str(last_ts)}), 15)

    assert line(995.0)[1] is False
    assert line(980.0)[1] is True
    text, stale = line(1100.0)
    assert stale and "dated 100 s ahead of Redis's clock (stale)" in text


def test_far_future_alert_timestamps_are_shown_as_unknown() -> None:
    """`p35 top` died on an alert dated 1e20 or 1e17 (issue 27 #7)."""
    from decision_intel.cli.top import AlertRow, alert_lines

    alerts = [
        AlertRow.of({"timestamp": ts, "state": "firing", "type": "stuck"})
        for ts in ("1e20", "1e17")
    ]
    lines = [t.plain for t in alert_lines(Frame("5m", alerts=alerts), 5)]
    assert len(lines) == 2 and all(line.startswith("  ?        firing") for line in lines), lines


def test_an_alert_row_names_its_subject_by_the_field_its_type_writes() -> None:
    """A gate explosion names its gate (`reason`), a stuck symbol its `symbol`, others
    their `subject`; a field the event lacks is blank (its state `?`)."""
    from decision_intel.cli.top import AlertRow, alert_lines

    gate = AlertRow.of({"reason": "kill_switch_active", "subject": "x", "state": "firing"})
    stuck = AlertRow.of({"symbol": "BTCUSDT", "subject": "x"})
    other = AlertRow.of({"subject": "execute_low"})
    assert [a.subject for a in (gate, stuck, other)] == [
        "kill_switch_active",
        "BTCUSDT",
        "execute_low",
    ]
    assert (other.state, other.severity, other.timestamp) == ("?", "", "")
    lines = alert_lines(Frame("5m", alerts=[gate, other]), 5)
    assert [(t.plain.split(), t.style) for t in lines] == [
        (["?", "firing", "kill_switch_active"], "red"),
        (["?", "?", "execute_low"], "dim"),
    ]


def test_a_window_a_loss_overlaps_is_shown_incomplete() -> None:
    """The 5-minute window over entries acknowledged elsewhere says so; an hour later, not."""
    loss = LossEvent("acked_elsewhere", 500, "1700000000000-0", "1700000030000-0")
    frame = Frame(window="5m", now_s=1_700_000_100.0, losses=[loss])
    assert incomplete_line(frame) == (
        "Incomplete: 500 entries acknowledged by another client before p35 counted them "
        "at 22:13 UTC."
    )
    assert incomplete_line(Frame(window="5m", now_s=1_700_003_600.0, losses=[loss])) == ""
