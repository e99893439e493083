"""store/reads.py: the reads more than one part of p35 shares."""

from __future__ import annotations

import asyncio

from decision_intel import keys
from decision_intel.devtools.testing import RedisServer
from decision_intel.model.windows import Counts
from decision_intel.settings import load
from decision_intel.store.client import connect
from decision_intel.store.reads import (
    MinuteCache,
    read_minutes,
    redis_now_ms,
    redis_now_s,
    time_ms,
    time_s,
)
from tests.helpers import RawRedis


def test_a_time_reply_is_read_in_seconds_and_in_whole_milliseconds() -> None:
    """Microseconds are cut, never rounded up into the next millisecond (an entry ID's
    millisecond); digits as bytes read like integers (a pipeline may hand either)."""
    assert time_ms((1_700_000_000, 999_999)) == 1_700_000_000_999
    assert time_ms((b"1700000000", b"000999")) == 1_700_000_000_000
    assert time_s((1_700_000_000, 500_000)) == 1_700_000_000.5
    assert time_s((b"5", b"250000")) == 5.25


def test_redis_now_is_redis_clock(r: RawRedis, redis_server: RedisServer) -> None:
    async def go() -> tuple[float, int]:
        client = connect(load(redis_url=redis_server.url))
        try:
            return await redis_now_s(client), await redis_now_ms(client)
        finally:
            await client.aclose()

    before = time_ms(r.time())
    now_s, now_ms = asyncio.run(go())
    after = time_ms(r.time())
    assert before <= now_s * 1000 <= after + 1 and before <= now_ms <= after


def test_the_minute_cache_reads_a_minute_again_only_when_its_counter_moves(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """A minute's content is read again when its change counter moves, and only then: a
    copy changed under the same counter stays as first read (so it was not read again).
    A minute whose meta hash is gone is forgotten."""
    m = 29_000_000

    def plant(minute: int, skip: int, version: int) -> None:
        r.hset(keys.bucket_meta(minute), mapping={"decision:SKIP": skip, "v": version})

    plant(m, 1, 1)
    plant(m + 1, 2, 1)

    async def go() -> list[tuple[dict[int, int], frozenset[int]]]:
        client = connect(load(redis_url=redis_server.url))
        cache = MinuteCache(client)
        seen = []

        async def step() -> None:
            live, _versions = await cache.load(range(m, m + 3))
            seen.append(({k: c.total for k, c in live.items()}, cache.changed))

        try:
            await step()  # both read
            plant(m, 10, 1)  # a new content under the same counter: not read again
            await step()
            plant(m, 10, 2)  # the counter moved: read again
            await step()
            r.delete(keys.bucket_meta(m + 1))
            await step()
            assert cache.cached == {m}
            assert await read_minutes(client, range(m, m + 3)) == {m: Counts({"SKIP": 10})}
        finally:
            await client.aclose()
        return seen

    assert asyncio.run(go()) == [
        ({m: 1, m + 1: 2}, {m, m + 1}),
        ({m: 1, m + 1: 2}, frozenset()),
        ({m: 10, m + 1: 2}, {m}),
        ({m: 10}, frozenset()),
    ]
