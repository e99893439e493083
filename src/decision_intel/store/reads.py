"""Reads more than one part of p35 shares: Redis's clock and one window's snapshot.

Views of several commands need these; a command module importing another for them
would tie the commands together (import-linter's contracts in pyproject.toml).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from decision_intel.text import count, safe_name


def time_s(reply: Sequence[Any]) -> float:
    """A `TIME` reply (seconds, microseconds: integers or their digits) in seconds."""
    sec, usec = reply
    return int(sec) + int(usec) / 1e6


def time_ms(reply: Sequence[Any]) -> int:
    """A `TIME` reply in whole milliseconds: the unit of entry IDs."""
    sec, usec = reply
    return int(sec) * 1000 + int(usec) // 1000


async def redis_now_s(client: aioredis.Redis) -> float:
    """Redis's clock: entry IDs, and so buckets, run on it (the CLI's host may not)."""
    return time_s(await client.time())


async def redis_now_ms(client: aioredis.Redis) -> int:
    """Redis's clock in milliseconds (`time_ms`)."""
    return time_ms(await client.time())


async def read_window(
    client: aioredis.Redis, counts_key: str, top_key: str, n: int
) -> dict[str, Any]:
    """One snapshot: its decision counts and its top n reasons (every CLI view reads these)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(counts_key)
        pipe.zrevrange(top_key, 0, n - 1, withscores=True)
        counts, ranked = await pipe.execute()
    return {
        "decisions": {safe_name(k): c for k, v in counts.items() if (c := count(v)) is not None},
        # A score is a float: a planted +inf, -inf or 2.5 is no count and is left out.
        "reasons": [[safe_name(r), c] for r, s in ranked if (c := count(s)) is not None],
    }
