"""`p35 why`'s reasoning: from counts already read to a verdict and a paragraph. Pure.

why.py reads Redis and calls these in turn: `gates` picks the gates that matter in
the window, `onset` (gate_shape.py) dates each one by walking minute counts back,
`attribute` (gate_shape.py) finds the symbols that carry it, and `diagnose` puts the
verdict, the JSON document (docs/dashboard.md; a `Diagnosis`, its keys the JSON's) and
the text together. A gate's decision is the one its name gets from the vocabulary (SKIP,
ERROR, else BLOCKED): buckets count reasons and decisions apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypedDict

from decision_intel.keys import WINDOW_WORDS
from decision_intel.model import gates as gate_data
from decision_intel.model.classify import EXECUTE, NO_REASON
from decision_intel.model.gate_shape import GateShare, Onset, SymbolShare, attribute
from decision_intel.model.losses import Incomplete
from decision_intel.model.windows import Counts
from decision_intel.text import SHARE_DIGITS, count, number, percent, share

TRADING, DEGRADED, NOT_TRADING, UNKNOWN = "trading", "degraded", "not_trading", "unknown"
EXIT_CODES = {TRADING: 0, DEGRADED: 1, NOT_TRADING: 2, UNKNOWN: 3}
"""Nagios-style: what monitoring wrappers expect of a check."""
HEADLINES = {
    TRADING: "TRADING",
    DEGRADED: "DEGRADED",
    NOT_TRADING: "NOT TRADING",
    UNKNOWN: "UNKNOWN",
}
EXAMPLES = 3


@dataclass(frozen=True)
class Thresholds:
    not_trading_below: float = 0.05
    degraded_below: float = 0.20
    gate_dominant: float = 0.40
    gate_listed: float = 0.10
    min_decisions: int = 100
    stale_after_s: float = 15.0


@dataclass
class Baseline:
    total: int
    execute_share: float
    gate_shares: dict[str, float | None]
    source: str
    """`buckets` (the same minutes then) or `daily` (that whole UTC day's rollup)."""


@dataclass
class Evidence:
    """What why.py read, as plain data."""

    window: str
    symbol: str | None
    now_s: float
    counts: Counts
    """The window's counts (one symbol's, with --symbol); `symbols` filled for all."""
    onsets: dict[str, Onset]
    baselines: dict[str, Baseline | None]
    recent: list[tuple[str, str, str]]
    """(entry ID, reason, raw detail) of the newest stream entries in scope."""
    status: dict[str, str]
    gate_decision: Callable[[str], str]
    thresholds: Thresholds = field(default_factory=Thresholds)
    incomplete: Incomplete | None = None
    """Losses overlapping the window (model/losses.py `incomplete`), None if none."""
    incomplete_text: str = ""


def gates(counts: Counts, min_share: float) -> list[tuple[str, int]]:
    """Reasons other than `none` holding more than `min_share` of the window, largest first."""
    total = counts.total
    found = [
        (reason, n)
        for reason, n in counts.reasons.items()
        if reason != NO_REASON and total and n > min_share * total
    ]
    return sorted(found, key=lambda item: (-item[1], item[0]))


class Example(TypedDict):
    id: str
    """The newest entry with this detail."""
    detail: str
    count: int


def examples(recent: Sequence[tuple[str, str, str]], reason: str) -> list[Example]:
    """The most common raw details of a gate among the newest entries, with the newest ID
    of each."""
    seen: dict[str, Example] = {}
    for entry_id, r, detail in recent:
        if r != reason:
            continue
        row = seen.get(detail)
        if row is None:
            seen[detail] = {"id": entry_id, "detail": detail, "count": 1}
        else:
            row["count"] += 1
    return sorted(seen.values(), key=lambda e: -e["count"])[:EXAMPLES]


def fresh(age_s: float | None, stale_after_s: float) -> bool:
    """Whether the service's status is current: written at most `stale_after_s` ago by
    Redis's clock. The heartbeat dates itself by Redis's clock, so a status dated ahead
    of it (a negative age) was written by another clock and proves nothing: stale."""
    return age_s is not None and 0 <= age_s <= stale_after_s


def status_age(age_s: float | None) -> str:
    """A status's age in words, as every view says it."""
    if age_s is None:
        return "age unknown"
    return f"{age_s:.0f} s old" if age_s >= 0 else f"dated {-age_s:.0f} s ahead of Redis's clock"


def verdict(
    total: int, execute_share: float, top_gate_share: float, age_s: float | None, th: Thresholds
) -> tuple[str, str | None]:
    """The verdict, and for `unknown` the words saying why."""
    if age_s is None:
        return UNKNOWN, "no service status in Redis: the service has not run against it"
    if age_s < 0:
        return UNKNOWN, (
            f"the service's status is dated {-age_s:.0f} s ahead of Redis's clock, "
            "so it says nothing about the service now"
        )
    if not fresh(age_s, th.stale_after_s):
        return UNKNOWN, f"the service's status is {age_s:.0f} s old, so the counts may lag"
    if total < th.min_decisions:
        return UNKNOWN, f"only {total:,} decisions, fewer than the {th.min_decisions:,} needed"
    if execute_share < th.not_trading_below:
        return NOT_TRADING, None
    if top_gate_share >= th.gate_dominant or execute_share < th.degraded_below:
        return DEGRADED, None
    return TRADING, None


@dataclass(frozen=True)
class Judgement:
    """A window judged: the verdict and what it was judged on."""

    name: str
    why_unknown: str | None
    execute_share: float
    listed: list[tuple[str, int]]
    """The gates over `gate_listed`, largest first."""
    age_s: float | None
    """Age of the service's status, in seconds (None: no status)."""


def judge(counts: Counts, status: Mapping[str, str], now_s: float, th: Thresholds) -> Judgement:
    """The verdict on a window's counts and the service's status (`p35 why`, `p35 top`)."""
    total = counts.total
    execute_share = share(counts.decisions.get(EXECUTE, 0), total)
    listed = gates(counts, th.gate_listed)
    top_share = share(listed[0][1], total) if listed else 0.0
    last_ts = number(status.get("last_ts"))
    age_s = round(now_s - last_ts, 1) if last_ts else None
    name, why_unknown = verdict(total, execute_share, top_share, age_s, th)
    return Judgement(name, why_unknown, execute_share, listed, age_s)


class Action(TypedDict):
    """A gate's entry in gates.toml (docs/action-mapping.md)."""

    meaning: str
    todo: str
    diagnose: str
    doc: str
    """Its section in docs/action-mapping.md."""


class GateFinding(GateShare):
    decision: str
    since: int | None
    """Epoch second of the onset minute; None when the gate is not at its level now."""
    since_at_least: bool
    """The run reaches the oldest minute read: it may have started earlier."""
    share_before: float | None
    symbols: list[SymbolShare]
    """The symbols carrying it (none with --symbol)."""
    where: str
    examples: list[Example]
    action: Action | None
    """None for a gate without an entry in gates.toml."""


class BaselineShares(TypedDict):
    total: int
    execute_share: float
    gate_shares: dict[str, float | None]
    source: str
    """`buckets` or `daily` (`Baseline.source`)."""


class ServiceState(TypedDict):
    status_age_s: float | None
    lag: int | None
    pending: int | None


class Findings(TypedDict):
    """A `Diagnosis` without its text: what the text is written from."""

    verdict: str
    exit_code: int
    unknown_because: str | None
    window: str
    symbol: str | None
    total: int
    execute_share: float
    baseline: dict[str, BaselineShares | None]
    """`day_before` and `week_before`; None where nothing was counted then."""
    gates: list[GateFinding]
    incomplete: Incomplete | None
    service: ServiceState


class Diagnosis(Findings):
    """The `p35 why --json` document (docs/dashboard.md)."""

    text: str
    """The paragraph `p35 why` prints."""


def diagnose(ev: Evidence) -> Diagnosis:
    """The `p35 why --json` document; its `text` is the paragraph `p35 why` prints."""
    counts = ev.counts
    total = counts.total
    j = judge(counts, ev.status, ev.now_s, ev.thresholds)
    gate_docs: list[GateFinding] = []
    for reason, n in j.listed:
        found = ev.onsets.get(reason)
        symbols, where = attribute(counts, reason) if ev.symbol is None else ([], "")
        entry = gate_data.lookup(reason)
        gate_docs.append(
            {
                "reason": reason,
                "decision": ev.gate_decision(reason),
                "count": n,
                "share": share(n, total, SHARE_DIGITS),
                "since": None
                if found is None or found.since_minute is None
                else found.since_minute * 60,
                "since_at_least": bool(found and found.at_edge),
                "share_before": None
                if found is None or found.share_before is None
                else round(found.share_before, 4),
                "symbols": symbols,
                "where": where,
                "examples": examples(ev.recent, reason),
                "action": None
                if entry is None
                else {
                    "meaning": entry.meaning,
                    "todo": entry.todo,
                    "diagnose": entry.diagnose,
                    "doc": entry.link,
                },
            }
        )
    findings: Findings = {
        "verdict": j.name,
        "exit_code": EXIT_CODES[j.name],
        "unknown_because": j.why_unknown,
        "window": ev.window,
        "symbol": ev.symbol,
        "total": total,
        "execute_share": round(j.execute_share, 4),
        "baseline": {
            key: None
            if b is None
            else {
                "total": b.total,
                "execute_share": round(b.execute_share, 4),
                "gate_shares": {
                    g: None if s is None else round(s, 4) for g, s in b.gate_shares.items()
                },
                "source": b.source,
            }
            for key, b in ev.baselines.items()
        },
        "gates": gate_docs,
        "incomplete": ev.incomplete,
        "service": {
            "status_age_s": j.age_s,
            "lag": count(ev.status.get("lag")),
            "pending": count(ev.status.get("pending_estimate")),
        },
    }
    return {**findings, "text": text(findings, ev)}


def text(doc: Findings, ev: Evidence) -> str:
    """The paragraph an operator pastes into a chat."""
    words = WINDOW_WORDS.get(ev.window, ev.window)
    who = f"{ev.symbol}: " if ev.symbol else ""
    head = f"{who}{HEADLINES[doc['verdict']]} — "
    total = doc["total"]
    if doc["verdict"] == UNKNOWN:
        head += f"{doc['unknown_because']}. "
    if not total:
        return head + f"No decisions in the last {words}." + _incomplete(ev)
    parts = [
        head + f"{percent(doc['execute_share'])} of {total:,} decisions executed in the last "
        f"{words}{_baseline_words(doc['baseline'])}."
    ]
    for i, g in enumerate(doc["gates"]):
        sentence = f"{percent(g['share'])} {'were' if i == 0 else 'also'} {g['decision']} by "
        sentence += f"`{g['reason']}`"
        if g["since"] is not None:
            since = time.strftime("%H:%M UTC", time.gmtime(g["since"]))
            minutes = max(1, round((ev.now_s - g["since"]) / 60))
            if g["since_at_least"]:  # the run reaches the oldest minute read
                clause = f" since {since} or earlier ({_duration(minutes)} or more"
            else:
                clause = f" since {since} ({_duration(minutes)}"
                if g["share_before"] is not None:
                    clause += f"; {percent(g['share_before'])} before"
            sentence += clause + ")"
        if g["where"]:
            sentence += f", {g['where']}"
        parts.append(sentence + ".")
        if g["examples"] and i == 0:
            ex = g["examples"]
            seen = sum(e["count"] for e in ex)
            shown = "; ".join(
                f"`{e['detail']}` ({'all' if e['count'] == seen and len(ex) == 1 else e['count']})"
                for e in ex
            )
            parts.append(f"Recent detail: {shown}.")
    if doc["gates"]:
        top = doc["gates"][0]
        if top["action"] is not None:
            parts.append(f"What to do: {top['action']['todo']} ({top['action']['doc']}).")
        else:
            parts.append(
                f"What to do: `{top['reason']}` has no entry in {gate_data.DOC}; "
                f"run `p35 explain ID` on a recent entry to see where it comes from."
            )
    return " ".join(parts) + _incomplete(ev)


def _incomplete(ev: Evidence) -> str:
    return f" {ev.incomplete_text}" if ev.incomplete_text else ""


def _baseline_words(baseline: Mapping[str, BaselineShares | None]) -> str:
    said = []
    day, week = baseline.get("day_before"), baseline.get("week_before")
    if day is not None:
        said.append(f"{percent(day['execute_share'])} at this time yesterday")
    if week is not None:
        when = "a week ago" if week["source"] == "buckets" else "that day a week ago"
        said.append(f"{percent(week['execute_share'])} {when}")
    return f" ({', '.join(said)})" if said else ""


def _duration(minutes: int) -> str:
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"
