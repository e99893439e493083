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

from decision_intel import __version__
from decision_intel.daemon.metrics import Metrics
from decision_intel.settings import Settings
from decision_intel.store.group import Store

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


class Heartbeat:
    """One daemon's periodic status work: renew the lease on its name, read the group's
    state, write both status hashes (one script, one round trip), and say how a backlog
    drains."""

    def __init__(self, settings: Settings, store: Store, metrics: Metrics):
        self.s = settings
        self.store = store
        self.metrics = metrics
        self.start_ts = time.time()
        self.meter = RateMeter()
        self.rate = 0.0
        self.group: dict[str, Any] = {}

    async def beat(self, counted: int, state: str = "running") -> None:
        """Raises LeaseLost when another process holds this consumer name. The script
        writes `last_ts` from Redis's clock, which every reader compares it with."""
        now = time.time()
        self.rate = self.meter.sample(time.monotonic(), counted)
        mine = {
            "consumer_name": self.s.consumer_name,
            "service_start_ts": f"{self.start_ts:.3f}",
            "rate": f"{self.rate:.1f}",
            "version": __version__,
            "state": state,
        }
        own = {"counted": str(counted), "host": socket.gethostname(), "pid": str(os.getpid())}
        info = await self.store.heartbeat(mine, own, CONSUMER_STATUS_TTL_S)
        self.group = group_fields(info)
        self.group["oldest_pending_age_s"] = info["oldest_pending_age_s"] if info else 0
        self.metrics.group(
            lag=self.group["lag"] if isinstance(self.group["lag"], int) else None,
            pending=int(self.group["pending_estimate"]),
            oldest_pending_age_s=self.group["oldest_pending_age_s"],
        )
        self.metrics.heartbeat(now)

    async def progress(self, counted: int, caught_up: bool) -> dict[str, Any] | None:
        """While a backlog drains (the last read came back full), the fields of a progress
        line (fresh rate, lag, ETA). Caught up, there is no backlog and nothing is read:
        the group's lag is then only what arrived since the last read (about a linger's
        worth under live traffic), and a line for it every interval would be noise."""
        if caught_up:
            return None
        self.group.update(group_fields(await self.store.group_info()))
        self.rate = self.meter.sample(time.monotonic(), counted)
        lag = self.group.get("lag")
        if not isinstance(lag, int):
            return None
        return {
            "rate": round(self.rate, 1),
            "lag": lag,
            "pending": self.group.get("pending_estimate"),
            "eta_s": round(lag / self.rate) if self.rate > 0 else None,
            "counted": counted,
        }

    def status_line(self, counted: int) -> str:
        """The STATUS= line systemctl shows."""
        return (
            f"STATUS=counted {counted}, lag {self.group.get('lag', '?')}, "
            f"pending {self.group.get('pending_estimate', '?')}, {self.rate:.0f}/s"
        )
