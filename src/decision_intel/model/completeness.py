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

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from decision_intel.keys import id_parts
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
from decision_intel.text import safe

LOSS_CAUSES = ("trimmed", "acked_elsewhere", "skipped")
WINDOW = "-"
"""These alerts belong to no window."""
FOREIGN_LISTED = 10
"""Foreign consumers a turn names (the rest are counted)."""
NAME_CHARS = 100


@dataclass(frozen=True)
class LossEvent:
    cause: str
    count: int
    first_id: str
    last_id: str


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


def utc_of_id(entry_id: str) -> str:
    """An entry ID's time, UTC, to the second ('' for an ID that is not one)."""
    try:
        ms = id_parts(entry_id)[0]
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
    except (ValueError, OverflowError, OSError):
        return ""


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
        if kind == FOREIGN_CONSUMER and audit.foreign_total > FOREIGN_LISTED:
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


CAUSE_WORDS = {
    "trimmed": "trimmed from the stream before they were read",
    "acked_elsewhere": "acknowledged by another client before p35 counted them",
    "skipped": "skipped by a move of the group",
}


def loss_record(fields: Mapping[bytes, bytes]) -> LossEvent | None:
    """A record of `quantum:p35:losses` as written by the audit; None if it is not one."""
    try:
        return LossEvent(
            safe(fields[b"cause"])[:40],
            int(fields[b"count"].decode("ascii")),
            fields[b"first_id"].decode("ascii"),
            fields[b"last_id"].decode("ascii"),
        )
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


def incomplete(
    losses: Iterable[LossEvent], since_s: float, until_s: float
) -> dict[str, Any] | None:
    """The losses whose entries' times overlap [since_s, until_s]: `p35 why --json`'s
    `incomplete` ({lost, causes, since, until}), or None when the window is complete."""
    causes: dict[str, int] = {}
    first_s: float | None = None
    last_s: float | None = None
    for e in losses:
        try:
            lo, hi = id_parts(e.first_id)[0] / 1000, id_parts(e.last_id)[0] / 1000
        except ValueError:
            continue
        if lo > until_s or hi < since_s:
            continue
        causes[e.cause] = causes.get(e.cause, 0) + e.count
        first_s = lo if first_s is None else min(first_s, lo)
        last_s = hi if last_s is None else max(last_s, hi)
    if not causes:
        return None
    return {"lost": sum(causes.values()), "causes": causes, "since": first_s, "until": last_s}


def incomplete_text(doc: Mapping[str, Any]) -> str:
    """`Incomplete: 3,669 entries trimmed from the stream before they were read between
    14:02 and 14:03 UTC.` (`at 14:02` when both ends fall in one minute)."""
    since, until = (time.strftime("%H:%M", time.gmtime(doc[k])) for k in ("since", "until"))
    span = f"at {since}" if since == until else f"between {since} and {until}"
    parts = [f"{n:,} entries {CAUSE_WORDS.get(cause, cause)}" for cause, n in doc["causes"].items()]
    return f"Incomplete: {'; '.join(parts)} {span} UTC."
