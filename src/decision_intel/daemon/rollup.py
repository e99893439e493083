"""The daily roll-up: minute buckets into their day's rollup (`lua/roll.lua`), each once.

A flush counts into minute buckets only, and lists each new bucket in
`quantum:p35:unrolled`. Once a bucket is quiet (its minute closed, or nothing changed
in it since the last snapshot run) the roll-up adds its counts to the daily rollup and
marks it rolled; a late entry for a rolled minute is added to the rollup by its own
flush. The daemon that takes the snapshot turn rolls after each rebuild, and a daemon
that stops rolls everything still listed, so a stopped service leaves its rollups
complete. While a minute is unrolled its flushes also keep its counts in a roll copy
that outlives the bucket, so a minute whose bucket expires first (a daemon down past
`P35_BUCKET_TTL_SEC`) still reaches its day. The rollup's bounding (distinct reasons
and symbols of a day) runs once per minute, not in every flush.
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.model.classify import DECISIONS
from decision_intel.settings import Settings
from decision_intel.store import scripts
from decision_intel.store.flush import day_args

MINUTES_PER_SCRIPT = 60
"""Bounds one script's run (and so how long it holds Redis) on a long backlog."""


class Roller:
    def __init__(self, settings: Settings, client: aioredis.Redis):
        self.s = settings
        self.client = client
        self._script = scripts.load(client, "roll")
        self.left: int | None = None
        """Minutes the last run left listed (None: not run yet). With none left and
        nothing counted since, the next run would find nothing to do."""

    async def run(
        self, now_minute: int | None = None, quiet: Container[int] = (), everything: bool = False
    ) -> int:
        """Roll every listed minute before `now_minute` and those in `quiet` (all of them
        with `everything`). Returns how many buckets were rolled."""
        listed = await self.client.hkeys(keys.UNROLLED)
        minutes = sorted(int(m) for m in listed if m.isdigit())
        due = [
            m
            for m in minutes
            if everything or (now_minute is not None and m < now_minute) or m in quiet
        ]
        rolled = 0
        for i in range(0, len(due), MINUTES_PER_SCRIPT):
            chunk = due[i : i + MINUTES_PER_SCRIPT]
            args: list[Any] = [
                self.s.max_reasons_per_bucket,
                self.s.max_symbols_per_bucket,
                len(DECISIONS),
                *DECISIONS,
                len(chunk),
            ]
            for minute in chunk:
                args += [minute, keys.bucket(minute), keys.bucket_meta(minute)]
                args.append(keys.roll_copy(minute))
                args += day_args(self.s, minute)
            reply = await self._script(keys=[keys.UNROLLED], args=args)
            rolled += int(reply[0])
        self.left = len(minutes) - len(due)
        return rolled
