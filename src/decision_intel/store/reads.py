"""Reads more than one part of p35 shares: Redis's clock, minute buckets (cached by their
change counter), one window's snapshot, an entry read measured.

Views of several commands need these; a command module importing another for them
would tie the commands together (import-linter's contracts in pyproject.toml).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.model.admission import Size
from decision_intel.model.windows import Counts, parse_bucket
from decision_intel.text import count, safe_name


def time_s(reply: Sequence[Any]) -> float:
    """A `TIME` reply (seconds, microseconds: integers or their digits) in seconds."""
    sec, usec = reply
    return int(sec) + int(usec) / 1e6


def time_ms(reply: Sequence[Any]) -> int:
    """A `TIME` reply in whole milliseconds: the unit of entry IDs."""
    sec, usec = reply
    return int(sec) * 1000 + int(usec) // 1000


def measured_entry(row: Sequence[Any]) -> tuple[bytes, dict[bytes, bytes], Size | None]:
    """An entry as lua/entry.lua and lua/recent.lua return it, measured by lib.lua's
    measure(): its ID, its fields (cut down when over the limits) and, when it is over
    them, its size (fields, bytes) for `admission.refusal`."""
    flat = row[1]
    size = (int(row[2]), int(row[3])) if len(row) == 4 else None
    return row[0], dict(zip(flat[::2], flat[1::2], strict=True)), size


async def redis_now_s(client: aioredis.Redis) -> float:
    """Redis's clock: entry IDs, and so buckets, run on it (the CLI's host may not)."""
    return time_s(await client.time())


async def redis_now_ms(client: aioredis.Redis) -> int:
    """Redis's clock in milliseconds (`time_ms`)."""
    return time_ms(await client.time())


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


T = TypeVar("T")
_ARITHMETIC = ThreadPoolExecutor(max_workers=1, thread_name_prefix="p35-arithmetic")
"""One thread for the views' arithmetic, apart from the loop's default executor (which
resolves host names: a slow DNS answer must not hold a snapshot, nor the reverse)."""


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the arithmetic thread. Over an hour of 500 symbols, parsing the
    buckets and summing the windows takes most of a second; the daemon's event loop (the
    flush, the heartbeat, a stop) gets the interpreter back within its switch interval
    (5 ms) instead of after it."""
    return await asyncio.get_running_loop().run_in_executor(_ARITHMETIC, fn, *args)


async def read_minutes(
    client: aioredis.Redis, minutes: Iterable[int], source: Callable[[int], str] = keys.bucket_meta
) -> dict[int, Counts]:
    """Each minute's counts in one round trip, read whole from `source`: the meta hash's
    decision/reason copy, or the bucket itself (every field, the symbols' too). A minute
    without one is left out."""
    minutes = list(minutes)
    async with client.pipeline(transaction=False) as pipe:
        for m in minutes:
            pipe.hgetall(source(m))
        replies = await pipe.execute()
    parsed = await off_loop(lambda: [parse_bucket(f) if f else None for f in replies])
    return {m: c for m, c in zip(minutes, parsed, strict=True) if c is not None}


class MinuteCache:
    """Minute buckets read once, then again only when their change counter moves (the meta
    hash's `v`, which every flush that changes the bucket increments in the same step).
    The snapshotter and `p35 top` keep one from run to run."""

    def __init__(self, client: aioredis.Redis, source: Callable[[int], str] = keys.bucket_meta):
        self.client = client
        self.source = source
        """Where a minute's counts are read (`read_minutes`)."""
        self._cache: dict[int, tuple[bytes, Counts]] = {}
        self.changed: frozenset[int] = frozenset()
        """The minutes the last update read again: new ones, or their counter moved."""

    @property
    def cached(self) -> frozenset[int]:
        """The minutes held, as the last update saw them."""
        return frozenset(self._cache)

    @staticmethod
    def ask_versions(pipe: Any, minutes: Iterable[int]) -> None:
        """Queue the change counters of `minutes` on a pipeline (one reply each, for `update`)."""
        for m in minutes:
            pipe.hget(keys.bucket_meta(m), "v")

    async def update(self, versions: Mapping[int, bytes | None]) -> dict[int, Counts]:
        """The counts of every minute that has a counter, reading only those whose counter
        is not the one held; the others are forgotten."""
        stale = {
            m: v
            for m, v in versions.items()
            if v is not None and self._cache.get(m, (None,))[0] != v
        }
        if stale:
            # The counter was read before the content: at worst the cache holds newer
            # content under an older counter, and the next update reads it again.
            fresh = await read_minutes(self.client, stale, self.source)
            self._cache.update((m, (stale[m], c)) for m, c in fresh.items())
        self.changed = frozenset(stale)
        live = {
            m: self._cache[m][1] for m, v in versions.items() if v is not None and m in self._cache
        }
        self._cache = {m: self._cache[m] for m in live}
        return live

    async def load(self, minutes: Sequence[int]) -> tuple[dict[int, Counts], list[bytes | None]]:
        """`update` over `minutes`, their counters read first: the counts and the counters."""
        async with self.client.pipeline(transaction=False) as pipe:
            self.ask_versions(pipe, minutes)
            versions: list[bytes | None] = await pipe.execute()
        return await self.update(dict(zip(minutes, versions, strict=True))), versions
