"""`p35 report`: one UTC day's rollup against the same weekday a week before. Pure.

The CLI reads the two `quantum:p35:daily:YYYYMMDD` hashes into `Daily`s; `compare()`
builds the stable JSON (docs/dashboard.md), a `Report`, and `render()` the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypedDict

from decision_intel.model.classify import NO_REASON
from decision_intel.model.gate_shape import GateShare
from decision_intel.model.losses import CAUSE_WORDS
from decision_intel.model.windows import parse_bucket
from decision_intel.text import SHARE_DIGITS, count, percent, share


@dataclass(frozen=True)
class Daily:
    """One day's rollup as read."""

    decisions: dict[str, int]
    reasons: dict[str, int]
    symbols: dict[str, int]
    """Each symbol's decisions, summed (symbols without any left out)."""
    lost: dict[str, int]
    """cause -> the day's entries that left the group uncounted (causes without any left out)."""


def parse_daily(fields: Mapping[bytes, bytes]) -> Daily:
    """A daily rollup read as a bucket is (`windows.parse_bucket`: names escaped, counts
    that are not numbers skipped), with each symbol's decisions summed, and the entries of
    the day that left the group uncounted (`lost:<cause>`, written by the audit)."""
    counts = parse_bucket(fields)
    symbols = {s: n for s, c in counts.symbols.items() if (n := sum(c.decisions.values()))}
    lost = {
        cause: n for cause in CAUSE_WORDS if (n := count(fields.get(f"lost:{cause}".encode())) or 0)
    }
    return Daily(counts.decisions, counts.reasons, symbols, lost)


class DecisionChange(TypedDict):
    count: int
    share: float
    previous_share: float | None
    """None without a rollup a week before, as is `change_pp`."""
    change_pp: float | None


class SymbolCount(TypedDict):
    symbol: str
    count: int


class Lost(TypedDict):
    total: int
    causes: dict[str, int]


class Mover(TypedDict):
    reason: str
    change_pp: float


class Report(TypedDict):
    """`p35 report --json`; the comparison fields are None without a rollup a week before."""

    day: str
    partial: bool
    compared_with: str | None
    total: int
    previous_total: int | None
    decisions: dict[str, DecisionChange]
    top_gates: list[GateShare]
    top_symbols: list[SymbolCount]
    lost: Lost
    rose: list[Mover]
    fell: list[Mover]


def _ranked(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda x: (-x[1], x[0]))


def _shares(counts: Mapping[str, int], total: int) -> dict[str, float]:
    return {k: share(v, total, SHARE_DIGITS) for k, v in counts.items()} if total else {}


def compare(
    day: str,
    week_ago: str,
    now: Daily,
    before: Daily | None,
    movers: int = 5,
    *,
    partial: bool = False,
) -> Report:
    """`partial`: the day is today, so its rollup holds the day so far, less the minutes
    not rolled up yet (the current one and the one before, about)."""
    total = sum(now.decisions.values())
    prev_total = sum(before.decisions.values()) if before else 0
    shares = _shares(now.decisions, total)
    prev_shares = _shares(before.decisions, prev_total) if before else {}
    decisions: dict[str, DecisionChange] = {
        d: {
            "count": now.decisions.get(d, 0),
            "share": shares.get(d, 0.0),
            "previous_share": prev_shares.get(d) if before else None,
            "change_pp": round(100 * (shares.get(d, 0.0) - prev_shares.get(d, 0.0)), 2)
            if before
            else None,
        }
        for d in sorted(set(now.decisions) | set(prev_shares))
    }
    gates = {r: n for r, n in now.reasons.items() if r != NO_REASON}
    gate_shares = _shares(gates, total)
    out: Report = {
        "day": day,
        "partial": partial,
        "compared_with": week_ago if before else None,
        "total": total,
        "previous_total": prev_total if before else None,
        "decisions": decisions,
        "top_gates": [
            # No share without decisions to divide by (a rollup written by hand or by a
            # broken writer can hold reason counts and no decision counts).
            {"reason": r, "count": n, "share": gate_shares.get(r, 0.0)}
            for r, n in _ranked(gates)[:10]
        ],
        "top_symbols": [{"symbol": s, "count": n} for s, n in _ranked(now.symbols)[:10]],
        "lost": {"total": sum(now.lost.values()), "causes": now.lost},
        "rose": [],
        "fell": [],
    }
    if before:
        prev_gates = _shares(
            {r: n for r, n in before.reasons.items() if r != NO_REASON}, prev_total
        )
        change = {
            r: round(100 * (gate_shares.get(r, 0.0) - prev_gates.get(r, 0.0)), 2)
            for r in set(gate_shares) | set(prev_gates)
        }
        ranked = sorted(change.items(), key=lambda x: (-x[1], x[0]))
        out["rose"] = [Mover(reason=r, change_pp=c) for r, c in ranked if c > 0][:movers]
        out["fell"] = [Mover(reason=r, change_pp=c) for r, c in reversed(ranked) if c < 0][:movers]
    return out


def render(rep: Report) -> str:
    day = rep["day"]
    lost = _lost_line(rep)
    if not rep["total"]:
        return f"no decisions recorded for {day} (quantum:p35:daily:{day})" + lost
    so_far = " (today so far, the last minute or two not rolled up yet)" if rep["partial"] else ""
    lines = [f"{day}{so_far}: {rep['total']} decisions"]
    if rep["compared_with"] is None:
        lines[0] += " (no rollup for the same weekday a week before: no comparison)"
    else:
        lines[0] += f", against {rep['compared_with']} ({rep['previous_total']} decisions)"
    for d, row in rep["decisions"].items():
        change = "" if row["change_pp"] is None else f"  {row['change_pp']:+6.2f} pp"
        lines.append(f"  {d:8} {row['count']:9}  {percent(row['share'], 5, 1)}{change}")
    lines.append("top gates:")
    for g in rep["top_gates"]:
        lines.append(f"  {g['count']:9}  {percent(g['share'], 5, 1)}  {g['reason']}")
    if rep["top_symbols"]:
        lines.append("top symbols:")
        lines += [f"  {s['count']:9}  {s['symbol']}" for s in rep["top_symbols"]]
    for label, moved in (("rose", rep["rose"]), ("fell", rep["fell"])):
        if moved:
            lines.append(f"gates that {label}:")
            lines += [f"  {m['change_pp']:+6.2f} pp  {m['reason']}" for m in moved]
    return "\n".join(lines) + lost


def _lost_line(rep: Report) -> str:
    """The day's entries that left the group uncounted, as a last line ('' for none)."""
    lost = rep["lost"]
    if not lost["total"]:
        return ""
    causes = ", ".join(f"{cause} {n:,}" for cause, n in lost["causes"].items())
    return (
        f"\nincomplete: {lost['total']:,} entries of this day were never counted ({causes}); "
        "the figures above are short by them (docs/completeness.md)"
    )
