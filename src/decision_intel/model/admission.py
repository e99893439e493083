"""What lets an entry through to the classifier, and what it is counted as when not. Pure.

Producers are untrusted: an entry over the size limits (P35_MAX_ENTRY_FIELDS fields,
P35_MAX_ENTRY_BYTES bytes as a reply carries it, measured as lua/lib.lua's measure()
measures it), or delivered more than P35_MAX_DELIVERIES times without being counted, is
counted UNKNOWN without being classified. The consumer judges every entry it reads by
`refusal`; `p35 explain` and `p35 why`'s recent entries judge those they show by it, so
the three say the same of one entry.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import chain

from decision_intel.model.classify import NO_REASON, UNKNOWN, Classification

OVERSIZE, POISON = "oversize", "poison"
"""The reasons of entries refused."""
ENTRY_OVERHEAD = 100
"""Reply bytes of an entry beyond its names and values: its arrays and its ID (at most
41 characters), and a row in lua/read.lua's oversize list."""
PART_OVERHEAD_MAX = 14
"""Reply bytes around one name or value at most: `$`, a length of up to 9 digits, two CRLFs."""

Size = tuple[int, int]
"""An entry's (fields, bytes); bytes -1 when the field count alone was over the limit
and the bytes were not counted."""


def wire_size(parts: Iterable[bytes]) -> int:
    """An entry's size as a reply carries it (RESP), which is what a read's byte budget
    pays for: each name and value as a bulk string (`$<len>\r\n<bytes>\r\n`) plus
    ENTRY_OVERHEAD. Counted as lua/lib.lua's measure() counts it: 256 empty pairs are
    0 bytes of content but 3 KB of reply."""
    return ENTRY_OVERHEAD + sum(len(p) + 5 + len(str(len(p))) for p in parts)


def over_limits(
    n_fields: int, parts: Iterable[bytes], max_fields: int, max_bytes: int
) -> Size | None:
    """The size of an entry of `n_fields` fields whose names and values are `parts`, when
    it is over the limits (more than `max_fields` fields, or more than `max_bytes` bytes
    by `wire_size`); None when it is within them. The field count is checked first: it
    is free, and past it the bytes are not counted (-1)."""
    if n_fields > max_fields:
        return n_fields, -1
    size = wire_size(parts)
    return (n_fields, size) if size > max_bytes else None


def oversize(entry: Mapping[bytes, bytes], max_fields: int, max_bytes: int) -> Size | None:
    """`over_limits` of an entry read as a mapping, after a bound that costs no loop in
    Python: most entries are far within the limits."""
    if len(entry) <= max_fields:
        content = sum(map(len, entry)) + sum(map(len, entry.values()))
        if content + 2 * PART_OVERHEAD_MAX * len(entry) + ENTRY_OVERHEAD <= max_bytes:
            return None
    return over_limits(len(entry), chain(entry, entry.values()), max_fields, max_bytes)


def refusal(
    size: Size | None,
    max_fields: int,
    max_bytes: int,
    deliveries: int = 0,
    max_deliveries: int | None = None,
) -> Classification | None:
    """What an entry is counted as without being classified: UNKNOWN/oversize when it was
    measured over the limits (`size`, from `oversize` or lua/lib.lua's measure()),
    UNKNOWN/poison when it was delivered more than `max_deliveries` times; None when it
    goes to the classifier."""
    if size is not None:
        what = f"{size[0]} fields" + (f", {size[1]} bytes" if size[1] >= 0 else "")
        cause = f"oversize: {what} (limits {max_fields} fields, {max_bytes} bytes)"
        return Classification(UNKNOWN, OVERSIZE, None, cause)
    if max_deliveries is not None and deliveries > max_deliveries:
        cause = f"delivered {deliveries} times without being counted"
        return Classification(UNKNOWN, POISON, None, cause)
    return None


def unreadable(budget_bytes: int) -> Classification:
    """An entry whose reply passes the read's byte budget even alone: counted without its
    content, which no read may bring."""
    cause = f"oversize: its reply passed the read budget ({budget_bytes} bytes)"
    return Classification(UNKNOWN, OVERSIZE, None, cause)


def classifier_failed(exc: BaseException) -> Classification:
    """An entry the classifier raised on: counted, never allowed to stop the loop."""
    return Classification(UNKNOWN, NO_REASON, None, f"classifier error: {exc!r}")
