"""Window sums over minute buckets. Pure: no I/O.

A window `w` is the w most recent minute buckets, the current (partial) minute
included; its decision counts and reason counts are the sums of those buckets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from decision_intel.keys import WINDOWS


@dataclass
class Counts:
    decisions: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.decisions.values())

    def add(self, other: Counts) -> None:
        for name, n in other.decisions.items():
            self.decisions[name] = self.decisions.get(name, 0) + n
        for name, n in other.reasons.items():
            self.reasons[name] = self.reasons.get(name, 0) + n


def parse_bucket(fields: Mapping[bytes, bytes]) -> Counts:
    """The decision and reason fields of a bucket hash (symbol fields are skipped)."""
    out = Counts()
    for raw_name, raw_value in fields.items():
        name = raw_name.decode("utf-8", "replace")
        kind, _, key = name.partition(":")
        if kind == "decision":
            out.decisions[key] = int(raw_value)
        elif kind == "reason":
            out.reasons[key] = int(raw_value)
    return out


def window_counts(buckets: Mapping[int, Counts], now_minute: int) -> dict[str, Counts]:
    """Counts for every window, ending at (and including) `now_minute`."""
    out: dict[str, Counts] = {}
    running = Counts()
    by_length = sorted(WINDOWS.items(), key=lambda item: item[1])
    covered = 0
    for name, length in by_length:
        for minute in range(now_minute - length + 1, now_minute - covered + 1):
            bucket = buckets.get(minute)
            if bucket is not None:
                running.add(bucket)
        covered = length
        out[name] = Counts(dict(running.decisions), dict(running.reasons))
    return out


def top(counts: Mapping[str, int], n: int) -> list[tuple[str, int]]:
    """The n largest entries, ties broken by name so the choice is stable."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]
