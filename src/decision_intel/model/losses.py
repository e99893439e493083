"""Entries that left the group uncounted, as the completeness audit records them
(`quantum:p35:losses`; docs/completeness.md), and what a window they overlap says. Pure.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypedDict

from decision_intel.keys import id_parts
from decision_intel.text import safe

LOSS_CAUSES = ("trimmed", "acked_elsewhere", "skipped")


@dataclass(frozen=True)
class LossEvent:
    cause: str
    count: int
    first_id: str
    last_id: str


def utc_of_id(entry_id: str) -> str:
    """An entry ID's time, UTC, to the second ('' for an ID that is not one)."""
    try:
        ms = id_parts(entry_id)[0]
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))
    except (ValueError, OverflowError, OSError):
        return ""


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


class Incomplete(TypedDict):
    """The losses overlapping a window (`p35 why --json`'s `incomplete`)."""

    lost: int
    causes: dict[str, int]
    """cause -> entries lost"""
    since: float
    """Epoch seconds of the oldest lost entry's ID, as is `until` of the newest."""
    until: float


def incomplete(losses: Iterable[LossEvent], since_s: float, until_s: float) -> Incomplete | None:
    """The losses whose entries' times overlap [since_s, until_s], or None when the window
    is complete."""
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
    if first_s is None or last_s is None:  # no loss overlaps
        return None
    return {"lost": sum(causes.values()), "causes": causes, "since": first_s, "until": last_s}


def incomplete_text(doc: Incomplete) -> str:
    """`Incomplete: 3,669 entries trimmed from the stream before they were read between
    14:02 and 14:03 UTC.` (`at 14:02` when both ends fall in one minute)."""
    since, until = (time.strftime("%H:%M", time.gmtime(doc[k])) for k in ("since", "until"))
    span = f"at {since}" if since == until else f"between {since} and {until}"
    parts = [f"{n:,} entries {CAUSE_WORDS.get(cause, cause)}" for cause, n in doc["causes"].items()]
    return f"Incomplete: {'; '.join(parts)} {span} UTC."
