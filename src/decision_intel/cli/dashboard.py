"""`p35 dash`: why are we not trading, answered from the snapshot keys in five seconds.

`collect()` is the only function here that talks to Redis: it reads the snapshot,
per-symbol and status keys (never a SCAN over buckets) into a `DashData`. The
`view_*` functions turn that into the stable JSON documented in docs/dashboard.md
(one TypedDict a mode, its keys the JSON's), and `render()` turns the views into
text. Both are pure.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from typing import TypedDict

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.keys import WINDOW_WORDS
from decision_intel.model.alerts import GATE_SHARE_MIN
from decision_intel.model.classify import NO_REASON, SKIP
from decision_intel.model.diagnose import fresh, status_age
from decision_intel.model.gate_shape import GateShare
from decision_intel.settings import Settings, StaleAfter
from decision_intel.store import scripts
from decision_intel.store.client import find_group
from decision_intel.store.reads import WindowSnapshot, read_window, redis_now_s
from decision_intel.text import SHARE_DIGITS, count, number, percent, safe_map, safe_name, share

MODES = ("a", "b", "c", "d", "e")
UNIT = "quantum-p35-decision-intelligence"
DEFAULT_SYMBOLS = ("BTCUSDT", "ETHUSDT")
MAX_NAME_CHARS = 80
"""Consumer names are anyone's to choose: shown escaped and cut to this."""
MAX_CONSUMERS_SHOWN = 20
MAX_UNITS_SHOWN = 20
"""Template instances (`UNIT@<name>`) are the operators' to start: at most this many."""
"""Consumers are anyone's to create: mode e lists the ones with the most pending (then
the least idle), and sums up the rest."""


# -- Redis -> data --------------------------------------------------------------------------


@dataclass(frozen=True)
class Consumer:
    name: str
    """Safe to print, cut to MAX_NAME_CHARS."""
    pending: int
    idle_ms: int


@dataclass(frozen=True)
class Group:
    lag: int | None
    """None where Redis cannot tell (an entry deleted or trimmed past the group)."""
    pending: int
    consumers: list[Consumer]
    """At most MAX_CONSUMERS_SHOWN: the most pending, then the least idle."""
    consumers_total: int


@dataclass(frozen=True)
class DashData:
    """What `collect()` read: everything any mode shows."""

    window: str
    now_s: float
    """Redis's clock, the one the heartbeat and the snapshots are dated by."""
    snapshot: WindowSnapshot
    """The window's counts over all symbols."""
    symbols: dict[str, WindowSnapshot]
    """The window's counts of each symbol asked for."""
    status: dict[str, str]
    group: Group | None
    """None when the stream or the group is missing."""
    systemd: dict[str, str] | None
    """unit -> its state (`_systemd_units`); None where systemctl cannot tell."""
    stale_after: StaleAfter
    """The settings' staleness limits for the status and the snapshots."""


async def collect(
    client: aioredis.Redis, settings: Settings, window: str, symbols: list[str]
) -> DashData:
    """Everything any mode shows, read in a few round trips. "Now" is Redis's clock, the
    one the heartbeat and the snapshots are dated by."""
    now_s = await redis_now_s(client)
    snapshot = await read_window(client, keys.decision_counts(window), keys.reason_top(window), 50)
    per_symbol = {
        s: await read_window(
            client, keys.symbol_decision_counts(s, window), keys.symbol_reason_top(s, window), 10
        )
        for s in symbols
    }
    status = await client.hgetall(keys.STATUS)
    found = await find_group(client, settings.stream, settings.group)
    group = None
    if found is not None:
        # Summed up inside Redis: the whole list can pass the read budget (issue 27 #5).
        reply = await scripts.load(client, "consumers")(
            keys=[], args=[settings.stream, settings.group, MAX_CONSUMERS_SHOWN, 4 * MAX_NAME_CHARS]
        )
        consumers = [
            Consumer(safe_name(name, MAX_NAME_CHARS, length=int(length)), int(pending), int(idle))
            for name, length, pending, idle in reply[1:]
        ]
        total = int(reply[0]) if reply else 0
        group = Group(found["lag"], found["pending"], consumers, total)
    return DashData(
        window=window,
        now_s=now_s,
        snapshot=snapshot,
        symbols=per_symbol,
        status=safe_map(status),
        group=group,
        systemd=_systemd_units(),
        stale_after=settings.stale_after(),
    )


def _systemd_units() -> dict[str, str] | None:
    """unit -> its state (`active`, `failed`, ...) for the plain unit and each template
    instance (`UNIT@a`) systemd has loaded; None where systemctl cannot tell. The service
    may run as either (docs/operations.md): asking about the plain unit alone called it
    `inactive` while `@a` and `@b` counted."""
    systemctl = shutil.which("systemctl")
    if systemctl is None:
        return None
    command = [systemctl, "list-units", "--all", "--plain", "--no-legend", "--no-pager"]
    try:
        out = subprocess.run(
            [*command, f"{UNIT}.service", f"{UNIT}@*.service"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:  # no systemd here (a container), or no bus to ask
        return None
    units = {UNIT: "inactive"}  # not loaded: what `systemctl is-active` says of it
    for line in out.stdout.splitlines():
        # UNIT LOAD ACTIVE SUB DESCRIPTION
        name, _, rest = line.strip().partition(".service ")
        fields = rest.split()
        if (name == UNIT or name.startswith(f"{UNIT}@")) and len(fields) >= 2:
            units[safe_name(name, MAX_NAME_CHARS)] = safe_name(fields[1], MAX_NAME_CHARS)
            if len(units) >= MAX_UNITS_SHOWN:
                break
    return units


def systemd_state(units: dict[str, str] | None) -> str | None:
    """The service's state in one word: of its instances when it runs as instances and
    the plain unit is inactive, else of every unit; `failed` when any failed, else
    `active` when any is, else the first unit's."""
    if units is None:
        return None
    instances = [state for name, state in units.items() if name != UNIT]
    states = instances if instances and units[UNIT] == "inactive" else list(units.values())
    for state in ("failed", "active"):
        if state in states:
            return state
    return states[0]


# -- data -> views (the JSON) ---------------------------------------------------------------


class DecisionShare(TypedDict):
    count: int
    share: float


class ReasonCount(TypedDict):
    reason: str
    count: int


class ViewA(TypedDict):
    """(a) why are we not trading."""

    window: str
    total: int
    decisions: dict[str, DecisionShare]
    top_reasons: list[ReasonCount]
    skip_rate: float


class SymbolView(TypedDict):
    total: int
    decisions: dict[str, int]
    skip_rate: float
    top_gates: list[GateShare]


class ViewB(TypedDict):
    """(b) top gates per symbol."""

    window: str
    symbols: dict[str, SymbolView]


class GateRow(GateShare):
    dominant: bool
    """Over the threshold (`none` never is)."""


class ViewC(TypedDict):
    """(c) gate share."""

    window: str
    total: int
    threshold: float
    gates: list[GateRow]


class ViewD(TypedDict):
    """(d) drift: the gates over the threshold."""

    window: str
    total: int
    threshold: float
    drift: list[GateShare]


class ConsumerView(TypedDict):
    name: str
    pending: int
    idle_s: float


class ViewE(TypedDict):
    """(e) service health; a field the service never wrote is None."""

    status_age_s: float | None
    snapshot_age_s: float | None
    state: str | None
    processed_total: int
    lag: int | None
    pending: int | None
    consumers: list[ConsumerView]
    consumers_total: int
    systemd: str | None
    systemd_units: dict[str, str] | None
    status_stale_after_s: float
    snapshot_stale_after_s: float


class Views(TypedDict, total=False):
    """`p35 dash --json`: a key per mode shown."""

    a: ViewA
    b: ViewB
    c: ViewC
    d: ViewD
    e: ViewE


def view_a(data: DashData) -> ViewA:
    counts = data.snapshot.decisions
    total = sum(counts.values())
    return {
        "window": data.window,
        "total": total,
        "decisions": {
            d: {"count": n, "share": share(n, total, SHARE_DIGITS)}
            for d, n in sorted(counts.items())
        },
        "top_reasons": [{"reason": r, "count": n} for r, n in data.snapshot.reasons[:15]],
        "skip_rate": share(counts.get(SKIP, 0), total, SHARE_DIGITS),
    }


def view_b(data: DashData) -> ViewB:
    out: dict[str, SymbolView] = {}
    for symbol, view in data.symbols.items():
        counts = view.decisions
        total = sum(counts.values())
        out[symbol] = {
            "total": total,
            "decisions": dict(sorted(counts.items())),
            "skip_rate": share(counts.get(SKIP, 0), total, SHARE_DIGITS),
            "top_gates": [
                {"reason": r, "count": n, "share": share(n, total, SHARE_DIGITS)}
                for r, n in view.reasons[:10]
            ],
        }
    return {"window": data.window, "symbols": out}


def view_c(data: DashData, threshold: float = GATE_SHARE_MIN) -> ViewC:
    total = sum(data.snapshot.decisions.values())
    rows: list[GateRow] = [
        {
            "reason": r,
            "count": n,
            "share": share(n, total, SHARE_DIGITS),
            "dominant": r != NO_REASON and total > 0 and n / total > threshold,
        }
        for r, n in data.snapshot.reasons[:10]
    ]
    return {"window": data.window, "total": total, "threshold": threshold, "gates": rows}


def view_d(data: DashData, threshold: float) -> ViewD:
    total = sum(data.snapshot.decisions.values())
    over: list[GateShare] = [
        {"reason": r, "count": n, "share": share(n, total, SHARE_DIGITS)}
        for r, n in data.snapshot.reasons
        if r != NO_REASON and total > 0 and n / total > threshold
    ]
    return {"window": data.window, "total": total, "threshold": threshold, "drift": over}


def view_e(data: DashData) -> ViewE:
    status, now, group = data.status, data.now_s, data.group
    last_ts, snap_ts = number(status.get("last_ts")), number(status.get("snapshot_ts"))
    return {
        "status_age_s": None if last_ts is None else round(now - last_ts, 1),
        "snapshot_age_s": None if snap_ts is None else round(now - snap_ts, 1),
        "state": status.get("state"),
        "processed_total": count(status.get("processed_total")) or 0,
        "lag": None if group is None else group.lag,
        "pending": None if group is None else group.pending,
        "consumers": [
            {"name": c.name, "pending": c.pending, "idle_s": round(c.idle_ms / 1000, 1)}
            for c in (group.consumers if group else [])
        ],
        "consumers_total": group.consumers_total if group else 0,
        "systemd": systemd_state(data.systemd),
        "systemd_units": data.systemd,
        "status_stale_after_s": data.stale_after.status_s,
        "snapshot_stale_after_s": data.stale_after.snapshot_s,
    }


def views(data: DashData, modes: list[str], threshold: float) -> Views:
    out: Views = {}
    if "a" in modes:
        out["a"] = view_a(data)
    if "b" in modes:
        out["b"] = view_b(data)
    if "c" in modes:
        out["c"] = view_c(data)
    if "d" in modes:
        out["d"] = view_d(data, threshold)
    if "e" in modes:
        out["e"] = view_e(data)
    return out


def drift_found(views_: Views) -> bool:
    return "d" in views_ and bool(views_["d"]["drift"])


# -- views -> text ----------------------------------------------------------------------------


class Style:
    def __init__(self, color: bool):
        self.color = color

    def _wrap(self, code: str, text: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def warn(self, text: str) -> str:
        return self._wrap("33;1", text)

    def bad(self, text: str) -> str:
        return self._wrap("31;1", text)


def _empty(window: str) -> str:
    return f"no decisions in the last {WINDOW_WORDS.get(window, window)}"


def render(v: Views, st: Style) -> str:
    parts = []
    if "a" in v:
        parts.append(_render_a(v["a"], st))
    if "b" in v:
        parts.append(_render_b(v["b"], st))
    if "c" in v:
        parts.append(_render_c(v["c"], st))
    if "d" in v:
        parts.append(_render_d(v["d"], st))
    if "e" in v:
        parts.append(_render_e(v["e"], st))
    return "\n\n".join(parts)


def _render_a(a: ViewA, st: Style) -> str:
    lines = [st.bold(f"(a) why are we not trading: last {WINDOW_WORDS[a['window']]}")]
    if not a["total"]:
        return "\n".join([*lines, f"  {_empty(a['window'])}"])
    for d, row in a["decisions"].items():
        lines.append(f"  {d:8} {row['count']:8}  {percent(row['share'], 5, 1)}")
    lines.append(f"  skip rate {percent(a['skip_rate'], 5, 1)} of {a['total']} decisions")
    lines.append("  top reasons:")
    lines += [f"  {r['count']:8}  {r['reason']}" for r in a["top_reasons"]]
    return "\n".join(lines)


def _render_b(b: ViewB, st: Style) -> str:
    lines = [st.bold(f"(b) top gates per symbol: last {WINDOW_WORDS[b['window']]}")]
    for symbol, s in b["symbols"].items():
        if not s["total"]:
            lines.append(f"  {symbol}: {_empty(b['window'])}")
            continue
        lines.append(
            f"  {symbol}: {s['total']} decisions, skip rate {percent(s['skip_rate'], 5, 1)}"
        )
        for g in s["top_gates"]:
            lines.append(f"    {g['count']:8} {percent(g['share'], 5, 1)}  {g['reason']}")
    return "\n".join(lines)


def _render_c(c: ViewC, st: Style) -> str:
    lines = [st.bold(f"(c) gate share: last {WINDOW_WORDS[c['window']]}")]
    if not c["total"]:
        lines.append(f"  {_empty(c['window'])}")
    for g in c["gates"]:
        row = f"  {g['count']:8} {percent(g['share'], 5, 1)}  {g['reason']}"
        lines.append(st.warn(row + "  <- dominant") if g["dominant"] else row)
    return "\n".join(lines)


def _render_d(d: ViewD, st: Style) -> str:
    head = f"(d) drift over {percent(d['threshold'], decimals=1)}: last {WINDOW_WORDS[d['window']]}"
    lines = [st.bold(head)]
    if not d["total"]:
        lines.append(f"  {_empty(d['window'])}")
    elif not d["drift"]:
        lines.append("  no gate over the threshold")
    for g in d["drift"]:
        pct = percent(g["share"], decimals=1)
        lines.append(st.bad(f"  DRIFT {g['reason']}: {g['count']} of {d['total']} ({pct})"))
    return "\n".join(lines)


def _age(seconds: float | None, what: str, st: Style, stale_after: float) -> str:
    if seconds is None:
        return st.bad(f"no {what}: the service has never run against this Redis")
    text = f"{what} is {status_age(seconds)}"
    return text if fresh(seconds, stale_after) else st.bad(text + " (stale)")


def _render_e(e: ViewE, st: Style) -> str:
    lines = [st.bold("(e) service health")]
    lines.append("  " + _age(e["status_age_s"], "service status", st, e["status_stale_after_s"]))
    lines.append("  " + _age(e["snapshot_age_s"], "last snapshot", st, e["snapshot_stale_after_s"]))
    lines.append(
        f"  state {e['state'] or '-'}, counted {e['processed_total']}, "
        f"lag {e['lag'] if e['lag'] is not None else '-'}, "
        f"pending {e['pending'] if e['pending'] is not None else '-'}"
    )
    if not e["consumers"]:
        lines.append("  no consumers in the group")
    for c in e["consumers"]:
        lines.append(f"  consumer {c['name']}: pending {c['pending']}, idle {c['idle_s']:.0f} s")
    more = e["consumers_total"] - len(e["consumers"])
    if more > 0:
        lines.append(f"  and {more} more consumers (fewer pending or longer idle)")
    for name, state in (e["systemd_units"] or {}).items():
        lines.append(f"  systemd: {name} is {state}")
    return "\n".join(lines)
