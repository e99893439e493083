"""Reads every CLI view shares: Redis's clock and one window's snapshot.

Views of several commands need these; a command module importing another for them
would tie the commands together (import-linter's contracts in pyproject.toml).
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from decision_intel.text import count, safe_name


async def redis_now_s(client: aioredis.Redis) -> float:
    """Redis's clock: entry IDs, and so buckets, run on it (the CLI's host may not)."""
    sec, usec = await client.time()
    return sec + usec / 1e6


@dataclass(frozen=True)
class WindowSnapshot:
    """One window's snapshot as read: names safe to print, counts that are counts."""

    decisions: dict[str, int]
    reasons: list[tuple[str, int]]
    """The top reasons, as the ZSET ranks them (largest first)."""


async def read_window(
    client: aioredis.Redis, counts_key: str, top_key: str, n: int
) -> WindowSnapshot:
    """One snapshot: its decision counts and its top n reasons (every CLI view reads these)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(counts_key)
        pipe.zrevrange(top_key, 0, n - 1, withscores=True)
        counts, ranked = await pipe.execute()
    return WindowSnapshot(
        {safe_name(k): c for k, v in counts.items() if (c := count(v)) is not None},
        # A score is a float: a planted +inf, -inf or 2.5 is no count and is left out.
        [(safe_name(r), c) for r, s in ranked if (c := count(s)) is not None],
    )
