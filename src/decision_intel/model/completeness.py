"""What the completeness audit found, and the alerts it raises. Pure: no I/O, no clock.

The audit (store/lua/audit.lua; docs/completeness.md) reports losses (entries that left
the group uncounted, with a cause), the stream's headroom and the consumers of the group
that are not p35. These rules turn one turn's findings into alert firings for the same
de-duplicating store as the window alerts (`lua/alert.lua`):

- `entries_lost` (HIGH, subject = cause): at every loss; open until the operator
  acknowledges the losses (`p35 check --ack-losses`).
- `foreign_consumer` (MEDIUM, subject = the consumer's name, made safe): while it is in
  the group.
- `headroom_low` (MEDIUM under the minimum headroom, HIGH under a tenth of it): while the
  stream is trimmed and its oldest entry is younger than that.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from decision_intel.model.alerts import (
    AUDIT_TYPES,
    ENTRIES_LOST,
    FOREIGN_CONSUMER,
    HEADROOM_LOW,
    HIGH,
    MEDIUM,
    SEVERITY_RANK,
    AlertKey,
    Evaluation,
    Firing,
)
from decision_intel.model.losses import LossEvent, utc_of_id
from decision_intel.text import safe

WINDOW = "-"
"""These alerts belong to no window."""
FOREIGN_LISTED = 10
"""Foreign consumers a turn names; the rest are one `foreign_consumer` alert, `others`."""
UNNAMED = "others"
NAME_CHARS = 100


@dataclass(frozen=True)
class Audit:
    """One audit turn: the stream's headroom (None: empty), whether it was ever trimmed,
    whether the accounting held exactly, when the last loss was reported and when the
    operator last acknowledged losses (Redis ms, 0: never), the foreign consumers (the
    first ten with what each holds, and how many in all) and the losses found."""

    headroom_s: float | None
    trimmed_ever: bool
    exact: bool
    last_loss_ms: int
    acked_ms: int
    foreign_total: int
    foreign: list[tuple[bytes, int]] = field(default_factory=list)
    losses: list[LossEvent] = field(default_factory=list)

    @property
    def losses_acknowledged(self) -> bool:
        return self.acked_ms >= self.last_loss_ms


def consumer_subject(name: bytes) -> str:
    """A foreign consumer's name as an alert subject: terminal-safe, cut, no `|`."""
    return safe(name)[:NAME_CHARS].replace("|", "/")


def evaluate(audit: Audit, open_keys: Iterable[str], min_headroom_s: float) -> Evaluation:
    """The completeness alerts that fire this turn, and the open ones it resolves."""
    firing: list[Firing] = []
    by_cause: dict[str, list[LossEvent]] = {}
    for e in audit.losses:
        by_cause.setdefault(e.cause, []).append(e)
    for cause, events in by_cause.items():
        first, last = events[0].first_id, events[-1].last_id
        fields = {
            "count": str(sum(e.count for e in events)),
            "first_id": first,
            "last_id": last,
            "since": utc_of_id(first),
            "until": utc_of_id(last),
            "exact": "1" if audit.exact else "0",
        }
        firing.append(Firing(ENTRIES_LOST, cause, WINDOW, HIGH, fields))
    for name, held in audit.foreign[:FOREIGN_LISTED]:
        subject = consumer_subject(name)
        firing.append(Firing(FOREIGN_CONSUMER, subject, WINDOW, MEDIUM, {"pending": str(held)}))
    unnamed = audit.foreign_total - len(audit.foreign[:FOREIGN_LISTED])
    if unnamed > 0:
        fields = {"count": str(unnamed)}
        firing.append(Firing(FOREIGN_CONSUMER, UNNAMED, WINDOW, MEDIUM, fields))
    low = headroom_severity(audit, min_headroom_s)
    if low is not None:
        fields = {"headroom_s": f"{audit.headroom_s:.0f}", "min_headroom_s": f"{min_headroom_s:g}"}
        firing.append(Firing(HEADROOM_LOW, "stream", WINDOW, low, fields))
    now = {f.key for f in firing}
    resolved = []
    for key in open_keys:
        kind = AlertKey.parse(key).type
        if kind not in AUDIT_TYPES or key in now:
            continue
        if kind == ENTRIES_LOST and not audit.losses_acknowledged:
            continue  # open until the operator acknowledges the losses
        unnamed = AlertKey.parse(key).subject == UNNAMED
        if kind == FOREIGN_CONSUMER and not unnamed and audit.foreign_total > FOREIGN_LISTED:
            continue  # not all named this turn: gone or not is unknown
        resolved.append(key)
    firing.sort(key=lambda f: -SEVERITY_RANK[f.severity])
    return Evaluation(firing, resolved)


def headroom_severity(audit: Audit, min_headroom_s: float) -> str | None:
    """MEDIUM under the minimum headroom, HIGH under a tenth of it; None above it, for an
    empty stream, or for one never trimmed (its oldest entry is simply its first)."""
    if audit.headroom_s is None or not audit.trimmed_ever or min_headroom_s <= 0:
        return None
    if audit.headroom_s < min_headroom_s / 10:
        return HIGH
    if audit.headroom_s < min_headroom_s:
        return MEDIUM
    return None
