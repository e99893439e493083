"""store/reads.py: the reads more than one part of p35 shares."""

from __future__ import annotations

import asyncio

from decision_intel.devtools.testing import RedisServer
from decision_intel.settings import load
from decision_intel.store.client import connect
from decision_intel.store.reads import redis_now_ms, redis_now_s, time_ms, time_s
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
