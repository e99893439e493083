"""The entries read but not yet flushed, and the increments they add up to. Pure: no I/O.

A flush must count exactly the entries this consumer still owns. When Redis says
some are no longer ours (claimed by another consumer, or already acknowledged by a
flush whose reply was lost), they are dropped, and their increments with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from decision_intel.classify import Classification

RAW_VALUE_MAX = 1024
RAW_FIELDS_MAX = 64

AggKey = tuple[int, str, str, str | None]
"""(minute, decision, reason, symbol): what one entry adds 1 to."""


@dataclass
class BucketDelta:
    """What one flush adds to one minute bucket."""

    decisions: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, int] = field(default_factory=dict)
    symbol_decisions: dict[str, dict[str, int]] = field(default_factory=dict)
    symbol_reasons: dict[str, dict[str, int]] = field(default_factory=dict)


def raw_copy(entry: Mapping[bytes, bytes]) -> str:
    """A bounded JSON copy of an entry for the invalid stream (values and field count capped)."""
    out: dict[str, str] = {}
    for i, (k, v) in enumerate(entry.items()):
        if i >= RAW_FIELDS_MAX:
            out["..."] = f"{len(entry) - RAW_FIELDS_MAX} more fields"
            break
        key = k.decode("utf-8", "replace")[:RAW_VALUE_MAX]
        text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        if len(text) > RAW_VALUE_MAX:
            text = f"{text[:RAW_VALUE_MAX]}...[{len(text)} chars]"
        out[key] = text
    return json.dumps(out, ensure_ascii=False)


def parse_id(entry_id: bytes) -> tuple[int, int]:
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)


class Batch:
    """Entries read (or reclaimed) and not yet flushed, keyed by stream ID.

    Each entry is held as its aggregation key (minute, decision, reason, symbol), and
    the count per key is kept as entries come and go, so `deltas` costs the number of
    distinct keys, not the number of entries.
    """

    def __init__(self, symbol_breakdown: bool = True) -> None:
        self.symbol_breakdown = symbol_breakdown
        self.items: dict[bytes, AggKey] = {}
        self.counts: dict[AggKey, int] = {}
        self.invalid: dict[bytes, tuple[str, str]] = {}
        """(cause, raw JSON copy) of entries that go to quantum:p35:invalid."""
        self.reclaimed: set[bytes] = set()
        self.trimmed: list[bytes] = []
        """IDs delivered to us whose content is gone from the stream (trimmed while pending)."""
        self.newest: bytes | None = None
        """The last new (not reclaimed) entry added: reads of new entries come in ID order."""
        self._oldest_new: bytes | None = None
        self._other_range: tuple[bytes, bytes] | None = None
        """Lowest and highest reclaimed or trimmed ID (those arrive out of order)."""

    def __len__(self) -> int:
        return len(self.items) + len(self.trimmed)

    def add(
        self,
        entry_id: bytes,
        entry: Mapping[bytes, bytes],
        result: Classification,
        *,
        reclaimed: bool = False,
    ) -> None:
        if entry_id in self.items:
            self._forget(entry_id)
        key = (
            int(entry_id.partition(b"-")[0]) // 60_000,
            result.decision,
            result.reason,
            result.symbol if self.symbol_breakdown else None,
        )
        self.items[entry_id] = key
        self.counts[key] = self.counts.get(key, 0) + 1
        if result.cause is not None:
            self.invalid[entry_id] = (result.cause, raw_copy(entry))
        if reclaimed:
            self.reclaimed.add(entry_id)
            self._widen(entry_id)
        else:
            self.newest = entry_id
            if self._oldest_new is None:
                self._oldest_new = entry_id

    def _widen(self, entry_id: bytes) -> None:
        if self._other_range is None:
            self._other_range = (entry_id, entry_id)
            return
        low, high = self._other_range
        if parse_id(entry_id) < parse_id(low):
            low = entry_id
        elif parse_id(entry_id) > parse_id(high):
            high = entry_id
        self._other_range = (low, high)

    def id_range(self) -> tuple[bytes, bytes]:
        """IDs bounding every entry held (a superset after discards); the batch is not empty."""
        ends = [e for e in (self._oldest_new, self.newest) if e is not None]
        if self._other_range is not None:
            ends += self._other_range
        return min(ends, key=parse_id), max(ends, key=parse_id)

    def add_trimmed(self, entry_id: bytes) -> None:
        self.trimmed.append(entry_id)
        self._widen(entry_id)

    def _forget(self, entry_id: bytes) -> bool:
        key = self.items.pop(entry_id, None)
        if key is None:
            return False
        left = self.counts[key] - 1
        if left:
            self.counts[key] = left
        else:
            del self.counts[key]
        self.invalid.pop(entry_id, None)
        self.reclaimed.discard(entry_id)
        return True

    def discard(self, entry_ids: Iterable[bytes]) -> int:
        """Drop entries that are no longer ours; returns how many were held."""
        return sum(self._forget(entry_id) for entry_id in entry_ids)

    def clear(self) -> None:
        self.items.clear()
        self.counts.clear()
        self.invalid.clear()
        self.reclaimed.clear()
        self.trimmed.clear()
        self.newest = self._oldest_new = self._other_range = None

    def deltas(self, minutes_per_key: int = 1) -> dict[int, BucketDelta]:
        """Increments per minute (or per day, with minutes_per_key=1440) from the entries held."""
        out: dict[int, BucketDelta] = {}
        for (minute, decision, reason, symbol), n in self.counts.items():
            key = minute // minutes_per_key
            delta = out.get(key)
            if delta is None:
                delta = out[key] = BucketDelta()
            delta.decisions[decision] = delta.decisions.get(decision, 0) + n
            delta.reasons[reason] = delta.reasons.get(reason, 0) + n
            if symbol is not None:
                sd = delta.symbol_decisions.setdefault(symbol, {})
                sd[decision] = sd.get(decision, 0) + n
                sr = delta.symbol_reasons.setdefault(symbol, {})
                sr[reason] = sr.get(reason, 0) + n
        return out

    def reclaimed_count(self) -> int:
        return len(self.reclaimed)

    def invalid_records(self) -> list[tuple[bytes, str, str]]:
        return [(entry_id, cause, raw) for entry_id, (cause, raw) in self.invalid.items()]
