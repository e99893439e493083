"""`p35 top`: a live terminal view an operator can leave open (rich's Live).

`Reader.frame()` is the only code here that talks to Redis. Each refresh is a bounded
set of reads: the change counters of the last hour's meta hashes (and the contents
of the ones that changed), the status hash, the window's per-symbol snapshot keys,
a few fields per symbol for the heatmap's minutes that changed, and the last alerts.
`render()` turns a frame into what the screen shows; it is pure. `run()` owns the
terminal: cbreak mode for the keys, the alternate screen, signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import time
import tty
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import redis.asyncio as aioredis
from redis.exceptions import RedisError
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from decision_intel import keys
from decision_intel.model.classify import BLOCKED, DECISIONS, ERROR, EXECUTE, SKIP, UNKNOWN
from decision_intel.model.diagnose import (
    HEADLINES,
    Thresholds,
    fresh,
    gates,
    judge,
    status_age,
)
from decision_intel.model.gate_shape import onset
from decision_intel.model.losses import LossEvent, incomplete, incomplete_text, loss_record
from decision_intel.model.windows import Counts, parse_bucket, window_sum
from decision_intel.settings import Settings
from decision_intel.store.audit import LOSSES_READ
from decision_intel.store.client import connect
from decision_intel.store.reads import MinuteCache, redis_now_s
from decision_intel.text import count, number, percent, safe, safe_map, share, utc

WINDOW_CYCLE = ("5m", "15m", "1h")
HISTORY_MIN = 60
HEATMAP_MIN = 30
MAX_SYMBOLS = 20
HEATMAP_GATES = 5
"""The window's top gates a heatmap cell can name (as a letter, see the legend)."""
ALERTS_READ = 8
STYLE = {EXECUTE: "green", SKIP: "blue", BLOCKED: "red", ERROR: "magenta", UNKNOWN: "white"}
MONO = {EXECUTE: "E", SKIP: "s", BLOCKED: "B", ERROR: "x", UNKNOWN: "?"}
"""Without color (NO_COLOR), each decision has its own character."""
TREND_POINTS = 0.05
"""A gate's share must move this much against the previous window to get an arrow."""


@dataclass(frozen=True)
class AlertRow:
    """One alert event as the screen lists it (values made safe and cut)."""

    timestamp: str
    """The event's unix time as written (anyone's: shown `?` when it is no date)."""
    state: str
    severity: str
    type: str
    window: str
    subject: str
    """The gate, the symbol, or another subject."""

    @classmethod
    def of(cls, fields: Mapping[str, str]) -> AlertRow:
        """An alert event's fields (`safe_map`'ed) as a row."""
        return cls(
            timestamp=fields.get("timestamp", ""),
            state=fields.get("state", "?"),
            severity=fields.get("severity", ""),
            type=fields.get("type", ""),
            window=fields.get("window", ""),
            subject=fields.get("reason") or fields.get("symbol") or fields.get("subject", ""),
        )


class Rows(NamedTuple):
    """The rows each section of the screen takes."""

    chart: int
    gates: int
    heat: int
    alerts: int


CellsTag = tuple[bytes | None, tuple[str, ...], tuple[str, ...]]
"""What a minute's heatmap cells were read for: its change counter, symbols and gates."""


@dataclass
class Frame:
    """What one refresh read: the whole of what `render()` draws, from `Reader.frame()`."""

    window: str
    now_s: float = 0.0
    minutes: dict[int, Counts] = field(default_factory=dict)
    """Decisions and reasons per minute (the meta copies), the last hour or two windows."""
    status: dict[str, str] = field(default_factory=dict)
    """The status hash (`quantum:p35:status`), names and values made safe."""
    symbols: list[tuple[str, int]] = field(default_factory=list)
    """The window's busiest symbols and their decisions, busiest first."""
    heat_gates: list[str] = field(default_factory=list)
    cells: dict[tuple[str, int], Counts] = field(default_factory=dict)
    alerts: list[AlertRow] = field(default_factory=list)
    losses: list[LossEvent] = field(default_factory=list)
    """The newest loss records: a window they overlap is incomplete."""
    error: str | None = None
    """Why Redis could not be read, when it could not."""

    def counts(self, back: int = 0) -> Counts:
        """The window's counts, or (back=1) those of the window before it."""
        length = keys.WINDOWS[self.window]
        return window_sum(self.minutes, int(self.now_s // 60) - back * length, length)


# -- Redis -> frame -------------------------------------------------------------------------


class Reader:
    """Reads frames, keeping each minute's contents until its change counter moves."""

    def __init__(self, client: aioredis.Redis, settings: Settings):
        self.client = client
        self.s = settings
        self._minutes = MinuteCache(client)
        self._cells: dict[int, tuple[CellsTag, dict[tuple[str, int], Counts]]] = {}

    async def frame(self, window: str) -> Frame:
        now_s = await redis_now_s(self.client)
        now_minute = int(now_s // 60)
        span = max(HISTORY_MIN, 2 * keys.WINDOWS[window])
        minutes = range(now_minute - span + 1, now_minute + 1)
        async with self.client.pipeline(transaction=False) as pipe:
            MinuteCache.ask_versions(pipe, minutes)
            pipe.hgetall(keys.STATUS)
            pipe.smembers(keys.symbols_in(window))
            pipe.xrevrange(keys.ALERTS, "+", "-", count=ALERTS_READ)
            pipe.xrevrange(keys.LOSSES, "+", "-", count=LOSSES_READ)
            replies = await pipe.execute()
        versions = dict(zip(minutes, replies[: len(minutes)], strict=True))
        status, members, alerts, losses = replies[len(minutes) :]
        frame = Frame(
            window=window,
            now_s=now_s,
            minutes=await self._minutes.update(versions),
            status=safe_map(status),
            alerts=[AlertRow.of(safe_map(fields)) for _id, fields in alerts],
            losses=[e for _id, f in reversed(losses) if (e := loss_record(f)) is not None],
        )
        frame.symbols = await self._busiest(window, sorted(safe(m) for m in members))
        counts = frame.counts()
        frame.heat_gates = [g for g, _ in gates(counts, 0.0)][:HEATMAP_GATES]
        heat = {m: versions[m] for m in range(now_minute - HEATMAP_MIN + 1, now_minute + 1)}
        frame.cells = await self._read_cells(heat, [s for s, _ in frame.symbols], frame.heat_gates)
        return frame

    async def _busiest(self, window: str, names: list[str]) -> list[tuple[str, int]]:
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.hgetall(keys.symbol_decision_counts(name, window))
            replies = await pipe.execute()
        totals = [
            (n, sum(count(v) or 0 for v in r.values())) for n, r in zip(names, replies, strict=True)
        ]
        totals = [t for t in totals if t[1] > 0]
        return sorted(totals, key=lambda t: (-t[1], t[0]))[:MAX_SYMBOLS]

    async def _read_cells(
        self, versions: Mapping[int, bytes | None], symbols: list[str], heat_gates: list[str]
    ) -> dict[tuple[str, int], Counts]:
        """Each symbol's decisions and its counts of the heatmap's gates, per minute."""
        fields = [keys.decision_field(d, s).encode() for s in symbols for d in DECISIONS]
        fields += [keys.reason_field(g, s).encode() for s in symbols for g in heat_gates]
        want: dict[int, CellsTag] = {
            m: (v, tuple(symbols), tuple(heat_gates)) for m, v in versions.items() if v
        }
        stale = [m for m, tag in want.items() if self._cells.get(m, (None,))[0] != tag]
        if stale and fields:
            async with self.client.pipeline(transaction=False) as pipe:
                for m in stale:
                    pipe.hmget(keys.bucket(m), fields)
                replies = await pipe.execute()
            for m, values in zip(stale, replies, strict=True):
                got = {f: v for f, v in zip(fields, values, strict=True) if v is not None}
                per_symbol = parse_bucket(got).symbols  # read as a bucket is
                self._cells[m] = (want[m], {(s, m): c for s, c in per_symbol.items()})
        self._cells = {m: self._cells[m] for m in want if m in self._cells}
        return {k: c for _, cells in self._cells.values() for k, c in cells.items()}


# -- frame -> screen (pure) ------------------------------------------------------------------


def verdict_line(frame: Frame, th: Thresholds) -> tuple[str, str]:
    """`p35 why`'s verdict in one line (onsets within the hour read), and its style."""
    counts = frame.counts()
    total = counts.total
    j = judge(counts, frame.status, frame.now_s, th)
    name = j.name
    line = f"{HEADLINES[name]} — {percent(j.execute_share)} of {total:,} executed ({frame.window})"
    if j.why_unknown:
        line = f"{HEADLINES[name]} — {j.why_unknown}"
    if j.listed:
        gate, n = j.listed[0]
        now_minute = int(frame.now_s // 60)
        found = onset(frame.minutes, gate, now_minute, now_minute - HISTORY_MIN + 1, 5)
        since = ""
        if found.since_minute is not None:
            stamp = time.strftime("%H:%M UTC", time.gmtime(found.since_minute * 60))
            # At the edge, the run reaches the oldest minute read: it began then or
            # before (or traffic did), which is not the same as an hour ago.
            since = f" since {stamp}" + (" or earlier" if found.at_edge else "")
        line += f" · {gate} {percent(share(n, total))}{since}"
    style = {"trading": "green", "degraded": "yellow", "not_trading": "bold red"}.get(name, "")
    return line, style


def health_line(frame: Frame, stale_after_s: float) -> tuple[str, bool]:
    st = frame.status
    if not st:
        return "no service status: the service has not run against this Redis", True
    last_ts = number(st.get("last_ts"))
    age_s = None if last_ts is None else frame.now_s - last_ts
    stale = not fresh(age_s, stale_after_s)
    age = status_age(age_s)
    parts = [
        f"status {age}" + (" (stale)" if stale else ""),
        f"lag {st.get('lag', '?') or '?'}",
        f"pending {st.get('pending_estimate', '?')}",
        f"{st.get('rate', '?')}/s",
        f"{st.get('consumers', '?')} consumer(s)",
        f"state {st.get('state', '?')}",
    ]
    return " · ".join(parts), stale


def _decision_at(counts: Counts, level: float) -> str | None:
    """Which decision a stacked column shows at `level` (0 = bottom, 1 = top)."""
    total = counts.total
    acc = 0.0
    for d in DECISIONS:
        acc += counts.decisions.get(d, 0) / total
        if level < acc:
            return d
    return None


def mix_chart(frame: Frame, rows: int, color: bool) -> list[Text]:
    """One column per minute of the last hour, stacked by decision, oldest left."""
    now_minute = int(frame.now_s // 60)
    columns = [frame.minutes.get(m) for m in range(now_minute - HISTORY_MIN + 1, now_minute + 1)]
    lines = []
    for row in range(rows - 1, -1, -1):
        line = Text()
        for c in columns:
            if c is None or not c.total:
                line.append("·" if row == 0 else " ")
                continue
            d = _decision_at(c, (row + 0.5) / rows)
            if d is None:
                line.append(" ")
            elif color:
                line.append("█", style=STYLE[d])
            else:
                line.append(MONO[d])
        lines.append(line)
    return lines


def totals_lines(counts: Counts, color: bool, with_counts: bool) -> list[Text]:
    total = counts.total
    out = []
    for d in DECISIONS:
        n = counts.decisions.get(d, 0)
        part = percent(share(n, total), 3) if total else "  - "
        mark = Text("█ " if color else f"{MONO[d]} ", style=STYLE[d] if color else "")
        out.append(mark + Text(f"{d:<8}{part}" + (f" {n:>8,}" if with_counts else "")))
    return out


def gate_lines(frame: Frame, n: int, width: int) -> list[Text]:
    now, before = frame.counts(), frame.counts(back=1)
    total, total_before = now.total, before.total
    out = []
    for gate, n_gate in gates(now, 0.0)[:n]:
        part = share(n_gate, total)
        if total_before and gate in before.reasons:
            change = part - share(before.reasons[gate], total_before)
            arrow = "↑" if change > TREND_POINTS else "↓" if change < -TREND_POINTS else "→"
        else:
            arrow = "new" if total_before else ""
        name = gate[: max(10, width - 30)]
        out.append(
            Text(f"  {name:<{max(10, width - 30)}} {n_gate:>8,} {percent(part, 4)}  {arrow}")
        )
    if not out:
        out.append(Text("  no gates in this window" if total else "  no decisions in this window"))
    return out


def heatmap_lines(frame: Frame, rows: int, color: bool) -> list[Text]:
    """The busiest symbols x the last 30 minutes: a cell is the minute's EXECUTE share in
    tenths (0-9), or the letter of a gate holding over half of it."""
    now_minute = int(frame.now_s // 60)
    minutes = range(now_minute - HEATMAP_MIN + 1, now_minute + 1)
    letters = {g: chr(ord("a") + i) for i, g in enumerate(frame.heat_gates)}
    out = []
    for symbol, _total in frame.symbols[:rows]:
        line = Text(f"{symbol[:11]:<12}")
        for m in minutes:
            c = frame.cells.get((symbol, m))
            total = c.total if c is not None else 0
            if not total:
                line.append(" ·")
                continue
            top = max(c.reasons.items(), key=lambda kv: kv[1], default=("", 0))  # type: ignore[union-attr]
            if top[1] * 2 > total and top[0] in letters:
                line.append(f" {letters[top[0]]}", style="bold red" if color else "")
                continue
            tenths = min(9, int(c.decisions.get(EXECUTE, 0) * 10 / total))  # type: ignore[union-attr]
            line.append(f" {tenths}", style=("green" if tenths >= 2 else "yellow") if color else "")
        out.append(line)
    if not out:
        out.append(Text("  no per-symbol data for this window yet"))
    return out


def alert_lines(frame: Frame, n: int) -> list[Text]:
    out = []
    for a in frame.alerts[:n]:
        when = utc(a.timestamp, "%H:%M:%S")
        line = f"  {when:8} {a.state:<8} {a.severity:<8} {a.type} {a.window} {a.subject}"
        out.append(Text(line, style="red" if a.state == "firing" else "dim"))
    return out or [Text("  none")]


def layout(height: int, symbols: int) -> Rows:
    """Rows per section: the 80x24 minimum, then what a taller terminal adds."""
    rows = {"chart": 5, "gates": 3, "heat": min(5, max(1, symbols)), "alerts": 2}
    extra = max(0, height - 24)
    for part, most in (("heat", MAX_SYMBOLS), ("chart", 10), ("gates", 8), ("alerts", 5)):
        room = (min(most, symbols) if part == "heat" else most) - rows[part]
        add = max(0, min(extra, room))
        rows[part] += add
        extra -= add
    return Rows(**rows)


def incomplete_line(frame: Frame) -> str:
    """What the window is missing, when losses overlap it ('' when it is complete)."""
    since_s = (int(frame.now_s // 60) - keys.WINDOWS[frame.window] + 1) * 60
    gap = incomplete(frame.losses, since_s, frame.now_s)
    return incomplete_text(gap) if gap else ""


def render(frame: Frame, width: int, height: int, color: bool, th: Thresholds) -> Group:
    w = max(60, width)
    if frame.error is not None:
        return Group(
            Text(f"p35 top — {frame.error}", style="bold red"),
            Text("retrying every refresh; q quits"),
        )
    line, style = verdict_line(frame, th)
    health, stale = health_line(frame, th.stale_after_s)
    rows = layout(height, len(frame.symbols))
    chart = mix_chart(frame, rows.chart, color)
    totals = totals_lines(frame.counts(), color, with_counts=w >= HISTORY_MIN + 30)
    body: list[Text] = [
        Text(line[:w], style=style if color else ""),
        Text(health[:w], style=("bold red" if stale else "dim") if color else ""),
    ]
    gap = incomplete_line(frame)
    if gap:
        body.append(Text(gap[:w], style="bold red" if color else ""))
    body += [
        Text(f"decision mix, last hour (a column a minute) · totals {frame.window}", style="bold"),
    ]
    for i, chart_line in enumerate(chart):
        side = totals[i] if i < len(totals) else Text("")
        body.append(chart_line + Text("  ") + side)
    body.append(
        Text(
            f"top gates, last {keys.WINDOW_WORDS[frame.window]} (trend against the window before)",
            style="bold",
        )
    )
    body += gate_lines(frame, rows.gates, w)
    legend = ""
    for i, g in enumerate(frame.heat_gates):  # the letters that fit, whole
        item = f"{' ' if legend else ''}{chr(ord('a') + i)}={g}"
        if len(legend) + len(item) + 2 > w:
            break
        legend += item
    body.append(
        Text("symbols, last 30 min: EXECUTE share in tenths, or a gate over half", style="bold")
    )
    body += heatmap_lines(frame, rows.heat, color)
    body.append(Text(f"  {legend}", style="dim" if color else ""))
    body.append(Text("recent alerts · q quit · w window", style="bold"))
    body += alert_lines(frame, rows.alerts)
    return Group(*body)


# -- the terminal ------------------------------------------------------------------------------


async def run(settings: Settings, window: str, interval: float) -> int:
    console = Console()  # honours NO_COLOR, and the terminal's size on every refresh
    color = console.color_system is not None and not console.no_color
    th = settings.why_thresholds()
    client = connect(settings)
    reader = Reader(client, settings)
    loop = asyncio.get_running_loop()
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    wake = asyncio.Event()
    pressed: list[bytes] = []
    stop = False

    def on_key() -> None:
        pressed.append(os.read(fd, 64))
        wake.set()

    def on_signal() -> None:
        nonlocal stop
        stop = True
        wake.set()

    tty.setcbreak(fd)
    loop.add_reader(fd, on_key)
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    loop.add_signal_handler(signal.SIGWINCH, wake.set)
    try:
        with Live(console=console, screen=True, auto_refresh=False) as live:
            while not stop:
                try:
                    async with asyncio.timeout(max(5.0, interval * 2)):
                        frame = await reader.frame(window)
                except (RedisError, OSError, TimeoutError) as exc:
                    frame = Frame(
                        window,
                        error=f"Redis at {settings.redacted_url} unreachable "
                        f"({type(exc).__name__})",
                    )
                size = console.size
                live.update(render(frame, size.width, size.height, color, th), refresh=True)
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), interval)
                keys_in = b"".join(pressed)
                pressed.clear()
                if b"q" in keys_in or b"Q" in keys_in:
                    break
                if b"w" in keys_in or b"W" in keys_in:
                    window = WINDOW_CYCLE[(WINDOW_CYCLE.index(window) + 1) % len(WINDOW_CYCLE)]
    finally:
        loop.remove_reader(fd)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGWINCH):
            loop.remove_signal_handler(sig)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        await client.aclose()
    return 0
