"""Alert rules over the window counts. Pure: no I/O, no clock.

After each snapshot the service evaluates these rules on the windows it just
built and hands the result to the store, whose script (`lua/alert.lua`) decides
atomically, from state kept in Redis, whether to emit: once per (type, subject,
window) per de-duplication interval, at once when the severity rises, and a
`resolved` event when the condition is gone. Thresholds are fixed here; which
windows and how many decisions are enough are settings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from decision_intel.keys import LONGEST_WINDOW_MIN, WINDOWS
from decision_intel.model.classify import BLOCKED, ERROR, EXECUTE, NO_REASON, SKIP, UNKNOWN
from decision_intel.model.gate_shape import attribute, onset
from decision_intel.model.windows import Counts
from decision_intel.text import share, share_text

GATE_EXPLOSION, STUCK, DECISION_MIX = "gate_explosion", "stuck", "decision_mix"
STREAM_CLOCK, SUPPRESSED, NEW_GATE = "stream_clock", "suppressed", "new_gate"
ENTRIES_LOST, FOREIGN_CONSUMER, HEADROOM_LOW = "entries_lost", "foreign_consumer", "headroom_low"
AUDIT_TYPES = (ENTRIES_LOST, FOREIGN_CONSUMER, HEADROOM_LOW)
"""The completeness audit's alert types (completeness.py): not resolved by the windows."""
"""SUPPRESSED: the one event that counts what an evaluation over the cap did not send."""
ALERT_TYPES = (
    GATE_EXPLOSION,
    STUCK,
    DECISION_MIX,
    NEW_GATE,
    STREAM_CLOCK,
    SUPPRESSED,
    *AUDIT_TYPES,
)
"""Every alert type p35 raises."""
MEDIUM, HIGH, CRITICAL = "MEDIUM", "HIGH", "CRITICAL"
SEVERITY_RANK = {MEDIUM: 1, HIGH: 2, CRITICAL: 3}

GATE_SHARES = ((0.80, CRITICAL), (0.60, HIGH), (0.40, MEDIUM))
"""A gate's share of all decisions in the window, highest first."""
GATE_SHARE_MIN = GATE_SHARES[-1][0]
"""The share from which a gate dominates the window: alerts, `p35 dash c` and `d`."""


class AlertKey(NamedTuple):
    """What tells alert episodes apart, stored as `type|window|subject` in Redis."""

    type: str
    window: str
    subject: str

    @property
    def text(self) -> str:
        return f"{self.type}|{self.window}|{self.subject}"

    @classmethod
    def parse(cls, text: str) -> AlertKey:
        alert_type, window, subject = text.split("|", 2)
        return cls(alert_type, window, subject)


STUCK_WINDOW = "15m"
UNKNOWN_HIGH = "unknown_high"
UNKNOWN_SHARES = ((0.20, HIGH), (0.05, MEDIUM))
"""UNKNOWN's share of the mix window, highest first: producers drifted from the contract."""
NEW_GATE_WINDOW = "15m"
NEW_GATE_SHARE = 0.05
NEW_GATE_DEDUP_MS = 86_400_000
"""A new gate is announced once per gate per UTC day."""
CLOCK_WINDOW = "15m"
CLOCK_WINDOW_MS = 15 * 60_000
"""A stream_clock alert holds while an entry ID ahead of Redis's clock came in this long ago."""

MIX_RULES: tuple[tuple[str, str, str, float, str], ...] = (
    # (subject, decision, "below"/"above", threshold, severity)
    ("execute_low", EXECUTE, "below", 0.20, HIGH),
    ("skip_high", SKIP, "above", 0.70, MEDIUM),
    ("blocked_high", BLOCKED, "above", GATE_SHARE_MIN, HIGH),
    ("error_high", ERROR, "above", 0.05, HIGH),
)


@dataclass(frozen=True)
class Firing:
    """A rule that holds now. `subject` tells episodes of one type and window apart."""

    type: str
    subject: str
    window: str
    severity: str
    fields: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return AlertKey(self.type, self.window, self.subject).text


def top_gate(reasons: Mapping[str, int]) -> tuple[str, int] | None:
    """The reason with the most decisions, `none` excluded (ties: by name)."""
    gates = [(n, name) for name, n in reasons.items() if name != NO_REASON and n > 0]
    if not gates:
        return None
    n, name = min(gates, key=lambda g: (-g[0], g[1]))
    return name, n


def gate_explosion(window: str, counts: Counts, min_decisions: int) -> Firing | None:
    """The top gate other than `none`, when it holds at least 40 % of the window's decisions."""
    total = counts.total
    gate = top_gate(counts.reasons)
    if total < min_decisions or gate is None:
        return None
    reason, n = gate
    severity = next((sev for level, sev in GATE_SHARES if n >= level * total), None)
    if severity is None:
        return None
    return Firing(
        GATE_EXPLOSION,
        reason,
        window,
        severity,
        {"reason": reason, "score": str(n), "total": str(total), "share": share_text(n, total)},
    )


def gate_resolved(counts: Counts, reason: str, min_decisions: int) -> bool:
    """An exploded gate is over when, with enough decisions, its share is under 40 %."""
    total = counts.total
    return total >= min_decisions and counts.reasons.get(reason, 0) < GATE_SHARE_MIN * total


def stuck_symbols(counts: Counts, min_decisions: int) -> list[Firing]:
    """Symbols with at least `min_decisions` in the window and not one EXECUTE."""
    out = []
    for symbol, per in sorted(counts.symbols.items()):
        total = per.total
        if total >= min_decisions and per.decisions.get(EXECUTE, 0) == 0:
            gate = top_gate(per.reasons)
            reason, n = gate if gate else (NO_REASON, per.reasons.get(NO_REASON, 0))
            out.append(
                Firing(
                    STUCK,
                    symbol,
                    STUCK_WINDOW,
                    HIGH,
                    {
                        "symbol": symbol,
                        "reason": reason,
                        "score": str(n),
                        "total": str(total),
                        "share": share_text(n, total),
                    },
                )
            )
    return out


def diagnosis_fields(
    firing: Firing,
    windows: Mapping[str, Counts],
    minutes: Mapping[int, Counts],
    now_minute: int,
    memo: dict[tuple[str, str], str] | None = None,
) -> None:
    """Add `p35 why`'s diagnosis to a gate explosion or a stuck symbol: `since` (epoch
    seconds of the minute the gate reached its level, within the hour the snapshots
    read; "" when older or not found) and `top_symbols` (`SYMBOL:share_of_gate`...)."""
    if firing.type not in (GATE_EXPLOSION, STUCK):
        return
    reason = firing.fields.get("reason", "")
    window = windows[firing.window]
    length = WINDOWS[firing.window]
    if firing.type == STUCK:
        symbol = firing.subject
        series = {m: c.symbols[symbol] for m, c in minutes.items() if symbol in c.symbols}
    else:
        series = dict(minutes)
    found = onset(series, reason, now_minute, now_minute - LONGEST_WINDOW_MIN + 1, length)
    firing.fields["since"] = (
        str(found.since_minute * 60) if found.since_minute is not None and not found.at_edge else ""
    )
    memo = {} if memo is None else memo  # stuck symbols share a few gates: attribute once
    key = (firing.window, reason)
    if key not in memo:
        symbols, _where = attribute(window, reason)
        memo[key] = ",".join(f"{s['symbol']}:{s['share_of_gate']:.2f}" for s in symbols)
    firing.fields["top_symbols"] = memo[key]


def stuck_resolved(counts: Counts, symbol: str) -> bool:
    """A stuck symbol is over once it executes again, or once it has left the window."""
    per = counts.symbols.get(symbol)
    return per is None or per.decisions.get(EXECUTE, 0) > 0


@dataclass(frozen=True)
class StreamClock:
    """Entry IDs that lay too far ahead of Redis's clock (from the status hash)."""

    future_total: int = 0
    last_ms: int | None = None
    """Redis time of the last flush that held such an entry."""
    now_ms: int = 0

    @property
    def recent(self) -> bool:
        return self.last_ms is not None and self.now_ms - self.last_ms < CLOCK_WINDOW_MS


def stream_clock(clock: StreamClock) -> Firing | None:
    """The input stream's IDs run ahead of Redis's clock: a producer set explicit IDs (or
    one did once, and every later `*` ID inherited its time). Entries are still counted,
    at the minute they were read, but their IDs no longer tell when they happened."""
    if not clock.recent:
        return None
    return Firing(
        STREAM_CLOCK,
        "future_ids",
        CLOCK_WINDOW,
        HIGH,
        {
            "future_ids_total": str(clock.future_total),
            "last_seen": f"{(clock.last_ms or 0) / 1000:.3f}",
            "detail": "entry IDs ahead of Redis's clock; counted at read time",
        },
    )


def _mix_holds(counts: Counts, decision: str, side: str, threshold: float) -> bool:
    fraction = share(counts.decisions.get(decision, 0), counts.total)
    return fraction < threshold if side == "below" else fraction > threshold


def decision_mix(window: str, counts: Counts, min_decisions: int) -> list[Firing]:
    total = counts.total
    if total < min_decisions:
        return []
    out = []
    for subject, decision, side, threshold, severity in MIX_RULES:
        if _mix_holds(counts, decision, side, threshold):
            n = counts.decisions.get(decision, 0)
            out.append(
                Firing(
                    DECISION_MIX,
                    subject,
                    window,
                    severity,
                    {
                        "decision": decision,
                        "score": str(n),
                        "total": str(total),
                        "share": share_text(n, total),
                        "threshold": f"{side} {threshold:.2f}",
                    },
                )
            )
    unknown = counts.decisions.get(UNKNOWN, 0)
    if unknown >= UNKNOWN_SHARES[-1][0] * total:  # producers drifted from the contract
        severity = next(sev for level, sev in UNKNOWN_SHARES if unknown >= level * total)
        out.append(
            Firing(
                DECISION_MIX,
                UNKNOWN_HIGH,
                window,
                severity,
                {
                    "decision": UNKNOWN,
                    "score": str(unknown),
                    "total": str(total),
                    "share": share_text(unknown, total),
                    "threshold": f"above {UNKNOWN_SHARES[-1][0]:.2f}",
                },
            )
        )
    return out


@dataclass(frozen=True)
class GateHistory:
    """What the new-gate rule needs beyond the windows: today's UTC day label, and which
    of today's candidate gates a daily rollup of the 7 days before holds."""

    today: str
    known: frozenset[str]
    """Candidates seen in any rollup of the 7 days before today."""
    any_history: bool
    """Whether any rollup of those days exists (a fresh install has none: no alert)."""


def new_gates(counts: Counts, min_decisions: int, history: GateHistory) -> list[Firing]:
    """Gates holding at least 5 % of the window that no rollup of the last 7 days holds."""
    total = counts.total
    if total < min_decisions or not history.any_history:
        return []
    return [
        Firing(
            NEW_GATE,
            reason,
            history.today,
            MEDIUM,
            {
                "reason": reason,
                "score": str(n),
                "total": str(total),
                "share": share_text(n, total),
                "measured_over": NEW_GATE_WINDOW,
            },
        )
        for reason, n in sorted(counts.reasons.items())
        if reason not in (NO_REASON, "other")
        and n >= NEW_GATE_SHARE * total
        and reason not in history.known
    ]


def new_gate_candidates(counts: Counts, min_decisions: int) -> list[str]:
    """The gates whose history the store must look up (those big enough to count)."""
    total = counts.total
    if total < min_decisions:
        return []
    return sorted(
        r
        for r, n in counts.reasons.items()
        if r not in (NO_REASON, "other") and n >= NEW_GATE_SHARE * total
    )


def mix_resolved(counts: Counts, subject: str, min_decisions: int) -> bool:
    if counts.total < min_decisions:
        return False
    rule = next((r for r in MIX_RULES if r[0] == subject), None)
    return rule is None or not _mix_holds(counts, rule[1], rule[2], rule[3])


@dataclass
class Evaluation:
    firing: list[Firing]
    resolved: list[str]
    """Keys of open alerts whose condition is gone."""


def evaluate(
    windows: Mapping[str, Counts],
    open_keys: Iterable[str],
    *,
    alert_windows: Iterable[str],
    mix_window: str,
    min_decisions: int,
    stuck_min_decisions: int,
    clock: StreamClock | None = None,
    history: GateHistory | None = None,
) -> Evaluation:
    """Every rule that holds now, and which open alerts (by key) are resolved."""
    firing: list[Firing] = []
    for window in alert_windows:
        hit = gate_explosion(window, windows[window], min_decisions)
        if hit is not None:
            firing.append(hit)
    firing += stuck_symbols(windows[STUCK_WINDOW], stuck_min_decisions)
    firing += decision_mix(mix_window, windows[mix_window], min_decisions)
    if history is not None:
        firing += new_gates(windows[NEW_GATE_WINDOW], min_decisions, history)
    clock_hit = stream_clock(clock) if clock is not None else None
    if clock_hit is not None:
        firing.append(clock_hit)
    now = {f.key for f in firing}
    resolved = []
    for key in open_keys:
        if key in now:
            continue
        if key.startswith(f"{STREAM_CLOCK}|"):
            if clock is not None:  # known, and not firing
                resolved.append(key)
        elif key.startswith(f"{NEW_GATE}|"):
            # Open for its whole day (once per gate per day), closed when the day is over.
            if history is not None and AlertKey.parse(key).window != history.today:
                resolved.append(key)
        elif _over(key, windows, min_decisions):
            resolved.append(key)
    # Highest severity first: when one evaluation has more events than the store sends,
    # these go out and the rest are summed up (lua/alert.lua).
    firing.sort(key=lambda f: -SEVERITY_RANK[f.severity])
    return Evaluation(firing, resolved)


def _over(key: str, windows: Mapping[str, Counts], min_decisions: int) -> bool:
    """Whether the open alert `key` (type|window|subject) no longer holds."""
    alert_type, window, subject = AlertKey.parse(key)
    if alert_type in AUDIT_TYPES:
        return False  # raised and resolved by the completeness audit (completeness.py)
    counts = windows.get(window)
    if counts is None:
        return True  # a window that no longer exists
    if alert_type == GATE_EXPLOSION:
        return gate_resolved(counts, subject, min_decisions)
    if alert_type == STUCK:
        return stuck_resolved(counts, subject)
    if alert_type == DECISION_MIX:
        return mix_resolved(counts, subject, min_decisions)
    return True  # a type this version no longer raises
