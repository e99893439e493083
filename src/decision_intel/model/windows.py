"""Window sums over minute buckets. Pure: no I/O.

A window `w` is the w most recent minute buckets, the current (partial) minute
included; its decision counts and reason counts are the sums of those buckets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from decision_intel import keys
from decision_intel.keys import WINDOWS
from decision_intel.text import NAME_MAX, count, cut, printable_ascii, safe


@dataclass
class Counts:
    decisions: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    symbols: dict[str, Counts] = field(default_factory=dict)
    """Per-symbol decision and reason counts (their own `symbols` stay empty)."""

    @property
    def total(self) -> int:
        return sum(self.decisions.values())

    def add(self, other: Counts) -> None:
        _merge(self.decisions, other.decisions)
        _merge(self.reasons, other.reasons)
        for symbol, theirs in other.symbols.items():
            mine = self.symbols.get(symbol)
            if mine is None:
                mine = self.symbols[symbol] = Counts()
            _merge(mine.decisions, theirs.decisions)
            _merge(mine.reasons, theirs.reasons)


def _merge(into: dict[str, int], other: Mapping[str, int]) -> None:
    for name, n in other.items():
        into[name] = into.get(name, 0) + n


def parse_bucket(fields: Mapping[bytes, bytes]) -> Counts:
    """The decision, reason and symbol fields of a bucket hash (or of its meta copy).

    Symbols and reasons never contain ':', so `symbol_reason:<SYM>:<r>` splits cleanly.
    """
    out = Counts()
    plain = printable_ascii(fields)  # names reach terminals: escaped unless plainly printable
    for raw_name, raw_value in fields.items():
        kind, _, key = (raw_name.decode() if plain else safe(raw_name)).partition(":")
        if kind == keys.DECISION:
            target = out.decisions
        elif kind == keys.REASON:
            target = out.reasons
        elif kind in (keys.SYMBOL_DECISION, keys.SYMBOL_REASON):
            symbol, _, key = key.partition(":")
            symbol = cut(symbol) if len(symbol) > NAME_MAX else symbol
            counts = out.symbols.get(symbol)
            if counts is None:
                counts = out.symbols[symbol] = Counts()
            target = counts.decisions if kind == keys.SYMBOL_DECISION else counts.reasons
        else:
            continue
        if len(key) > NAME_MAX:  # not the daemon's writing: shown cut, not megabytes
            key = cut(key)
        n = count(raw_value)
        if n is not None:  # else not the daemon's writing (by hand, or a broken writer)
            target[key] = n
    return out


def summed(parts: Iterable[Counts]) -> Counts:
    """Counts added up (minutes, or days) into new ones: the parts stay as they were."""
    total = Counts()
    for part in parts:
        total.add(part)
    return total


def window_sum(buckets: Mapping[int, Counts], newest: int, length: int) -> Counts:
    """The sum of the `length` minutes ending at (and including) minute `newest`: one
    window's counts. A minute without a bucket counts as nothing."""
    return summed(buckets[m] for m in range(newest - length + 1, newest + 1) if m in buckets)


def window_counts(buckets: Mapping[int, Counts], now_minute: int) -> dict[str, Counts]:
    """Counts for every window, ending at (and including) `now_minute`."""
    return {name: window_sum(buckets, now_minute, length) for name, length in WINDOWS.items()}


def top(counts: Mapping[str, int], n: int) -> list[tuple[str, int]]:
    """The n largest entries, ties broken by name so the choice is stable."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:n]
