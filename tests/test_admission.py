"""model/admission.py: what lets an entry through to the classifier, at its boundaries;
and the Redis side (lua/lib.lua's measure(), through `p35 explain`'s entry.lua) drawing
the same line as the consumer's Python."""

from __future__ import annotations

import asyncio

import pytest

from decision_intel.devtools.testing import RedisServer
from decision_intel.model.admission import (
    OVERSIZE,
    POISON,
    over_limits,
    oversize,
    refusal,
    unreadable,
    wire_size,
)
from decision_intel.model.classify import UNKNOWN
from decision_intel.settings import load
from decision_intel.store import scripts
from decision_intel.store.client import connect
from decision_intel.store.reads import measured_entry
from tests.helpers import STREAM, RawRedis

MAX_FIELDS, MAX_BYTES = 8, 1024


def _of_bytes(n: int) -> dict[bytes, bytes]:
    """One field whose entry is exactly `n` bytes as a reply carries it."""
    # 100 for the entry, 7 for the name `k`; a value of L bytes takes L + 5 + digits(L).
    value_len = next(v for v in range(n) if 100 + 7 + v + 5 + len(str(v)) == n)
    entry = {b"k": b"x" * value_len}
    assert wire_size([b"k", entry[b"k"]]) == n
    return entry


def _of_fields(n: int) -> dict[bytes, bytes]:
    return {f"f{i}".encode(): b"" for i in range(n)}


def test_an_entry_at_the_limits_is_admitted_and_one_over_is_not() -> None:
    assert oversize(_of_fields(MAX_FIELDS), MAX_FIELDS, MAX_BYTES) is None
    assert oversize(_of_fields(MAX_FIELDS + 1), MAX_FIELDS, MAX_BYTES) == (MAX_FIELDS + 1, -1)
    assert oversize(_of_bytes(MAX_BYTES), MAX_FIELDS, MAX_BYTES) is None
    assert oversize(_of_bytes(MAX_BYTES + 1), MAX_FIELDS, MAX_BYTES) == (1, MAX_BYTES + 1)
    # The flat list the reply parser measures gives the same answer.
    flat = [p for kv in _of_bytes(MAX_BYTES + 1).items() for p in kv]
    assert over_limits(1, flat, MAX_FIELDS, MAX_BYTES) == (1, MAX_BYTES + 1)


def test_refusal_says_oversize_before_poison_and_nothing_within_the_limits() -> None:
    assert refusal(None, 256, 65_536) is None
    assert refusal(None, 256, 65_536, deliveries=10, max_deliveries=10) is None
    poison = refusal(None, 256, 65_536, deliveries=11, max_deliveries=10)
    assert poison is not None
    assert (poison.decision, poison.reason, poison.symbol) == (UNKNOWN, POISON, None)
    assert poison.cause == "delivered 11 times without being counted"
    wide = refusal((300, -1), 256, 65_536, deliveries=11, max_deliveries=10)
    assert wide is not None and (wide.decision, wide.reason) == (UNKNOWN, OVERSIZE)
    assert wide.cause == "oversize: 300 fields (limits 256 fields, 65536 bytes)"
    big = refusal((2, 80_134), 256, 65_536)
    assert big is not None
    assert big.cause == "oversize: 2 fields, 80134 bytes (limits 256 fields, 65536 bytes)"
    gone = unreadable(8 << 20)
    assert (gone.decision, gone.reason) == (UNKNOWN, OVERSIZE)
    assert gone.cause == "oversize: its reply passed the read budget (8388608 bytes)"


@pytest.mark.parametrize(
    ("entry", "over"),
    [
        (_of_fields(MAX_FIELDS), False),
        (_of_fields(MAX_FIELDS + 1), True),
        (_of_bytes(MAX_BYTES), False),
        (_of_bytes(MAX_BYTES + 1), True),
    ],
    ids=["fields at", "fields over", "bytes at", "bytes over"],
)
def test_redis_measures_an_entry_as_the_consumer_does(
    r: RawRedis, redis_server: RedisServer, entry: dict[bytes, bytes], over: bool
) -> None:
    """`p35 explain` reads an entry through entry.lua, which cuts it down and sizes it in
    Redis; `refusal` of that size is the consumer's `refusal` of the entry, on the line
    and one past it."""
    entry_id = r.xadd(STREAM, entry)

    async def go() -> list[object]:
        client = connect(load(redis_url=redis_server.url))
        try:
            load_entry = scripts.load(client, "entry")
            return list(await load_entry(args=[STREAM, entry_id, MAX_FIELDS, MAX_BYTES]))
        finally:
            await client.aclose()

    _id, _fields, size = measured_entry(asyncio.run(go()))
    consumer = refusal(oversize(entry, MAX_FIELDS, MAX_BYTES), MAX_FIELDS, MAX_BYTES)
    assert (size is not None) is over
    assert (consumer is not None) is over
    if over and len(entry) <= MAX_FIELDS:  # bytes over: both count them alike
        assert refusal(size, MAX_FIELDS, MAX_BYTES) == consumer
