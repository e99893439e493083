"""A gate's shape: since when it has held its level (`onset`) and which symbols carry it
(`attribute`). Pure. `p35 why`'s diagnosis and the alerts' `since`/`top_symbols` fields
share it, so neither imports the other; every view's JSON shows a gate as a `GateShare`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypedDict

from decision_intel.model.windows import Counts
from decision_intel.text import percent, share

LOW_RUN = 2
"""Consecutive minutes under half a gate's level that end its run (one is noise)."""
LEVEL_MINUTES = 5
"""The minutes a gate's current level is measured over."""
CONCENTRATED = 0.9
"""The share of a gate that up to three symbols must carry to be named as its carriers."""
MOSTLY = 0.5
"""Otherwise, the share the top three must carry to be named with their shares."""
EVERYWHERE_LIFT = (2 / 3, 3 / 2)
EVERYWHERE_SHARE = 0.8
"""A gate is "on every symbol" when entries of symbols whose lift lies in this range
make up this share of the window's entries."""
TOP_SYMBOLS = 5


@dataclass(frozen=True)
class Onset:
    since_minute: int | None
    """The first minute of the gate's run at its level (None: not at its level now)."""
    share_before: float | None
    """The gate's share in the window-long span before the onset (None: no traffic)."""
    at_edge: bool
    """The run reaches the oldest minute read: it may have started earlier."""


class GateShare(TypedDict):
    """A gate in a view's JSON (`p35 why`, `dash`, `report`): its count and its share of
    the decisions counted over the same span, rounded to 4 decimals."""

    reason: str
    count: int
    share: float


class SymbolShare(TypedDict):
    """A symbol carrying a gate (`p35 why --json`'s `symbols`)."""

    symbol: str
    share_of_gate: float
    """The share of the gate's entries that are this symbol's."""
    lift: float
    """The gate's share of the symbol's decisions over its share of all decisions."""


def _points(series: Mapping[int, Counts], reason: str) -> dict[int, tuple[int, int]]:
    """minute -> (the gate's count, all decisions), for minutes with traffic."""
    out = {}
    for m, c in series.items():
        total = c.total
        if total:
            out[m] = (c.reasons.get(reason, 0), total)
    return out


def _share_over(points: Mapping[int, tuple[int, int]], minutes: range) -> float | None:
    hits = total = 0
    for m in minutes:
        p = points.get(m)
        if p is not None:
            hits += p[0]
            total += p[1]
    return hits / total if total else None


def onset(series: Mapping[int, Counts], reason: str, newest: int, oldest: int, span: int) -> Onset:
    """Since which minute the gate has held its level, its share over the last
    LEVEL_MINUTES minutes (a window's average understates a gate that began a few minutes
    into an hour): walk back from `newest` while minutes keep at least half of it;
    LOW_RUN minutes under it end the run, and a run that does not reach `newest` means
    the gate is not at its level now. A minute's share is taken over it and its two
    neighbours (noise at low rates blurs a change by at most a minute); minutes without
    traffic neither extend nor end a run.
    `span`: the minutes before the onset that `share_before` covers."""
    points = _points(series, reason)
    recent = _share_over(points, range(newest - LEVEL_MINUTES + 1, newest + 1))
    floor = (recent or 0.0) / 2
    if floor == 0:
        return Onset(None, None, False)
    since = None
    low = 0
    minute = newest
    while minute >= oldest:
        if minute in points:
            near = _share_over(points, range(max(oldest, minute - 1), min(newest, minute + 1) + 1))
            if near is not None and near >= floor:
                since, low = minute, 0
            else:
                low += 1
                if low >= LOW_RUN:
                    break
        minute -= 1
    if since is None:
        return Onset(None, None, False)
    before = _share_over(points, range(since - span, since))
    return Onset(since, before, minute < oldest)


def attribute(counts: Counts, reason: str) -> tuple[list[SymbolShare], str]:
    """The symbols carrying a gate (share of the gate, lift) and how to say where it is."""
    gate_n = counts.reasons.get(reason, 0)
    total = counts.total
    if not gate_n or not counts.symbols:
        return [], ""
    base = gate_n / total
    rows: list[tuple[str, int, float]] = []  # (symbol, hits, lift)
    near_one = 0
    for symbol, per in counts.symbols.items():
        n_s = per.total
        hits = per.reasons.get(reason, 0)
        lift = share(hits, n_s) / base if n_s else 0.0
        if n_s and EVERYWHERE_LIFT[0] <= lift <= EVERYWHERE_LIFT[1]:
            near_one += n_s
        if hits:
            rows.append((symbol, hits, lift))
    rows.sort(key=lambda r: (-r[1], r[0]))
    out = [
        SymbolShare(symbol=sym, share_of_gate=round(hits / gate_n, 4), lift=round(lift, 2))
        for sym, hits, lift in rows[:TOP_SYMBOLS]
    ]
    carried = 0
    for k, (_sym, hits, _lift) in enumerate(rows[:3], start=1):
        carried += hits
        if carried >= CONCENTRATED * gate_n:
            return out, "on " + _and([r[0] for r in rows[:k]])
    if len(counts.symbols) >= 3 and near_one >= EVERYWHERE_SHARE * total:
        return out, "on every symbol"
    if sum(hits for _, hits, _ in rows[:3]) >= MOSTLY * gate_n:
        named = ", ".join(f"{sym} ({percent(hits / gate_n)})" for sym, hits, _ in rows[:3])
        return out, f"mostly on {named}"
    return out, f"spread over {len(rows)} symbols"


def _and(names: Sequence[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
