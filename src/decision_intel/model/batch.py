"""The entries read but not yet flushed, and the increments they add up to. Pure: no I/O.

A flush must count exactly the entries this consumer still owns. When Redis says
some are no longer ours (claimed by another consumer, or already acknowledged by a
flush whose reply was lost), they are dropped, and their increments with them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from decision_intel.keys import id_ms, id_parts
from decision_intel.model.classify import Classification

RAW_MAX = 2048
"""Bytes of one raw copy in quantum:p35:invalid (ASCII JSON, truncation marked)."""
RAW_VALUE_MAX = 256

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
    """A bounded copy of an entry for the invalid stream: a JSON object in ASCII (control,
    non-ASCII and bidi characters escaped), at most RAW_MAX bytes; what is left out is
    counted under the key "...". Values are cut to RAW_VALUE_MAX characters first."""
    parts: list[str] = []
    size = 2
    for i, (k, v) in enumerate(entry.items()):
        key = _cut(k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k))
        text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
        part = f"{json.dumps(key)}: {json.dumps(_cut(text))}"
        if size + len(part) + 2 > RAW_MAX - 48:
            parts.append(f'"...": "{len(entry) - i} more fields"')
            break
        parts.append(part)
        size += len(part) + 2
    return "{" + ", ".join(parts) + "}"


def _cut(text: str) -> str:
    return text if len(text) <= RAW_VALUE_MAX else f"{text[:RAW_VALUE_MAX]}...[{len(text)} chars]"


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
        self.replayed: list[bytes] = []
        """IDs settled before and delivered again (the group moved back): acknowledged only."""
        self._runs: list[list[bytes]] = []
        """[first, last] of each read of new entries: IDs the stream held contiguously."""
        self._runs_whole = True
        """No entry of a run was dropped since it was read (runs() may send the ranges)."""
        self._in_runs = 0
        self.future: set[bytes] = set()
        """Entries whose ID lay more than the skew ahead of Redis's clock (bucketed at the
        minute they were read)."""
        self.latest_ms: int | None = None
        self.read_ms = 0
        self.newest: bytes | None = None
        """The last new (not reclaimed) entry added: reads of new entries come in ID order."""
        self._oldest_new: bytes | None = None
        self._other_range: tuple[bytes, bytes] | None = None
        """Lowest and highest reclaimed or trimmed ID (those arrive out of order)."""

    def __len__(self) -> int:
        return len(self.items) + len(self.trimmed) + len(self.replayed)

    def start_run(self) -> None:
        """The entries added next come from one read of new entries (`>`): consecutive in
        the stream, so their IDs settle as one range."""
        self._runs.append([])

    def runs(self) -> list[tuple[bytes, bytes]]:
        """The IDs to count as (first, last) ranges the stream held contiguously: each
        read's run while no entry of it was dropped, and reclaimed entries one by one."""
        if self._runs_whole and self._in_runs + len(self.reclaimed) == len(self.items):
            ranges = [(r[0], r[-1]) for r in self._runs if r]
            return ranges + [(entry_id, entry_id) for entry_id in self.reclaimed]
        return [(entry_id, entry_id) for entry_id in self.items]

    def mark_replayed(self, entry_ids: Iterable[bytes]) -> int:
        """Entries settled before: acknowledge them, count nothing. Returns how many."""
        n = 0
        for entry_id in entry_ids:
            if self._forget(entry_id):
                self.replayed.append(entry_id)
                self._widen(entry_id)
                n += 1
        return n

    def clock(self, now_ms: int, skew_ms: int) -> None:
        """Redis's time of the read the next entries come from, and how far ahead of it an
        entry ID may lie. Past that, an ID's time is not believed: every later `*` ID
        inherits it, so those entries are counted at the minute they were read."""
        self.read_ms = now_ms
        self.latest_ms = now_ms + skew_ms

    def add(
        self,
        entry_id: bytes,
        entry: Mapping[bytes, bytes],
        result: Classification,
        *,
        reclaimed: bool = False,
    ) -> None:
        items = self.items
        if entry_id in items:
            self._forget(entry_id)
        ms = id_ms(entry_id)
        latest = self.latest_ms
        if latest is not None and ms > latest:
            ms = self.read_ms
            self.future.add(entry_id)
        decision, reason, symbol, cause = result  # one unpack: cheaper than four lookups
        key = (ms // 60_000, decision, reason, symbol if self.symbol_breakdown else None)
        items[entry_id] = key
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        if cause is not None:
            cause = cause[:RAW_VALUE_MAX].encode("ascii", "backslashreplace").decode()
            self.invalid[entry_id] = (cause, raw_copy(entry))
        if reclaimed:
            self.reclaimed.add(entry_id)
            self._widen(entry_id)
        else:
            self._in_runs += 1
            self.newest = entry_id
            if self._oldest_new is None:
                self._oldest_new = entry_id
            runs = self._runs
            if not runs:
                runs.append([])
            run = runs[-1]
            if len(run) < 2:
                run.append(entry_id)
            else:
                run[1] = entry_id

    def _widen(self, entry_id: bytes) -> None:
        if self._other_range is None:
            self._other_range = (entry_id, entry_id)
            return
        low, high = self._other_range
        if id_parts(entry_id) < id_parts(low):
            low = entry_id
        elif id_parts(entry_id) > id_parts(high):
            high = entry_id
        self._other_range = (low, high)

    def id_range(self) -> tuple[bytes, bytes]:
        """IDs bounding every entry held (a superset after discards); the batch is not empty."""
        ends = [e for e in (self._oldest_new, self.newest) if e is not None]
        if self._other_range is not None:
            ends += self._other_range
        return min(ends, key=id_parts), max(ends, key=id_parts)

    def add_trimmed(self, entry_id: bytes) -> None:
        self.trimmed.append(entry_id)
        self._widen(entry_id)

    def _forget(self, entry_id: bytes) -> bool:
        key = self.items.pop(entry_id, None)
        if key is None:
            return False
        self._runs_whole = False
        left = self.counts[key] - 1
        if left:
            self.counts[key] = left
        else:
            del self.counts[key]
        self.invalid.pop(entry_id, None)
        self.reclaimed.discard(entry_id)
        self.future.discard(entry_id)
        return True

    def discard(self, entry_ids: Iterable[bytes]) -> int:
        """Drop entries that are no longer ours; returns how many were held."""
        return sum(self._forget(entry_id) for entry_id in entry_ids)

    def clear(self) -> None:
        self.items.clear()
        self.counts.clear()
        self.invalid.clear()
        self.reclaimed.clear()
        self.future.clear()
        self.trimmed.clear()
        self.replayed.clear()
        self._runs.clear()
        self._runs_whole = True
        self._in_runs = 0
        self.newest = self._oldest_new = self._other_range = None

    def deltas(self) -> dict[int, BucketDelta]:
        """Increments per minute from the entries held."""
        out: dict[int, BucketDelta] = {}
        for (minute, decision, reason, symbol), n in self.counts.items():
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
        return len(self.reclaimed)

    def invalid_records(self) -> list[tuple[bytes, str, str]]:
        return [(entry_id, cause, raw) for entry_id, (cause, raw) in self.invalid.items()]
