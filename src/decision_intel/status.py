"""The status heartbeat: `quantum:p35:status` (group-wide) and a per-consumer hash.

Counters that must be exact (processed_total, invalid_total, reclaimed_total,
trimmed_total, last_id) are written by the flush script together with the XACK;
the heartbeat writes everything else and never touches them.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from decision_intel import __version__, keys

CONSUMER_STATUS_TTL_S = 30


@dataclass
class RateMeter:
    """Entries per second over a sliding window of recent samples."""

    window_s: float = 30.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def sample(self, now: float, total: int) -> float:
        self.samples.append((now, total))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        t0, n0 = self.samples[0]
        return (total - n0) / (now - t0) if now > t0 else 0.0


def group_fields(info: dict[str, Any] | None) -> dict[str, Any]:
    if info is None:
        return {"pending_estimate": 0, "lag": 0, "consumers": 0}
    lag = info.get("lag")
    return {
        "pending_estimate": info.get("pending", 0),
        # Redis reports no lag when it cannot tell (after deletions); say so rather than 0.
        "lag": "" if lag is None else lag,
        "consumers": info.get("consumers", 0),
        "last_delivered_id": _text(info.get("last-delivered-id", "")),
        "entries_read": "" if info.get("entries-read") is None else info["entries-read"],
    }


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def write_heartbeat(
    client: aioredis.Redis,
    *,
    consumer: str,
    start_ts: float,
    counted: int,
    rate: float,
    group: dict[str, Any],
    state: str,
) -> None:
    now = time.time()
    mine = {
        "consumer_name": consumer,
        "service_start_ts": f"{start_ts:.3f}",
        "last_ts": f"{now:.3f}",
        "rate": f"{rate:.1f}",
        "version": __version__,
        "state": state,
    }
    per_consumer = {
        **mine,
        "counted": counted,
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }
    async with client.pipeline(transaction=False) as pipe:
        pipe.hset(keys.STATUS, mapping={**group, **mine})
        pipe.hset(keys.consumer_status(consumer), mapping=per_consumer)
        pipe.expire(keys.consumer_status(consumer), CONSUMER_STATUS_TTL_S)
        await pipe.execute()
