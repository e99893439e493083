"""The entries read but not yet flushed, and the increments they add up to. Pure: no I/O.

A flush must count exactly the entries this consumer still owns. When Redis says
some are no longer ours (claimed by another consumer, or already acknowledged by a
flush whose reply was lost), they are dropped and the increments recomputed, so
the increments are derived from the entries at flush time rather than kept
running.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from decision_intel.classify import Classification

RAW_VALUE_MAX = 1024
RAW_FIELDS_MAX = 64


class Item(NamedTuple):
    minute: int
    decision: str
    reason: str
    symbol: str | None
    invalid: tuple[str, str] | None
    """(cause, raw JSON copy) for entries that go to quantum:p35:invalid."""
    reclaimed: bool


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
    """Entries read (or reclaimed) and not yet flushed, keyed by stream ID."""

    def __init__(self, symbol_breakdown: bool = True) -> None:
        self.symbol_breakdown = symbol_breakdown
        self.items: dict[bytes, Item] = {}
        self.trimmed: list[bytes] = []
        """IDs delivered to us whose content is gone from the stream (trimmed while pending)."""

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
        invalid = (result.cause, raw_copy(entry)) if result.cause is not None else None
        symbol = result.symbol if self.symbol_breakdown else None
        self.items[entry_id] = Item(
            int(entry_id.partition(b"-")[0]) // 60_000,
            result.decision,
            result.reason,
            symbol,
            invalid,
            reclaimed,
        )

    def add_trimmed(self, entry_id: bytes) -> None:
        self.trimmed.append(entry_id)

    def discard(self, entry_ids: Iterable[bytes]) -> int:
        gone = 0
        for entry_id in entry_ids:
            if self.items.pop(entry_id, None) is not None:
                gone += 1
        return gone

    def id_range(self) -> tuple[bytes, bytes]:
        """Smallest and largest ID among the counted entries and trimmed IDs."""
        ids = [*self.items, *self.trimmed]
        parsed = sorted(ids, key=parse_id)
        return parsed[0], parsed[-1]

    def deltas(self) -> dict[int, BucketDelta]:
        """Increments per minute, from the entries currently held."""
        grouped: dict[tuple[int, str, str, str | None], int] = {}
        for item in self.items.values():
            key = (item.minute, item.decision, item.reason, item.symbol)
            grouped[key] = grouped.get(key, 0) + 1
        out: dict[int, BucketDelta] = {}
        for (minute, decision, reason, symbol), n in grouped.items():
            delta = out.get(minute)
            if delta is None:
                delta = out[minute] = BucketDelta()
            delta.decisions[decision] = delta.decisions.get(decision, 0) + n
            delta.reasons[reason] = delta.reasons.get(reason, 0) + n
            if symbol is not None:
                sd = delta.symbol_decisions.setdefault(symbol, {})
                sd[decision] = sd.get(decision, 0) + n
                sr = delta.symbol_reasons.setdefault(symbol, {})
                sr[reason] = sr.get(reason, 0) + n
        return out

    def reclaimed_count(self) -> int:
        return sum(1 for item in self.items.values() if item.reclaimed)

    def invalid_records(self) -> list[tuple[bytes, str, str]]:
        return [
            (entry_id, item.invalid[0], item.invalid[1])
            for entry_id, item in self.items.items()
            if item.invalid is not None
        ]
