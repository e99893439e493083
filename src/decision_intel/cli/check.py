"""`p35 check`: service health as seen from Redis, one line per check; exit 1 on any failure."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.model.diagnose import fresh, status_age
from decision_intel.settings import Settings
from decision_intel.store.client import find_group
from decision_intel.text import number, safe


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def run_checks(
    settings: Settings, client: aioredis.Redis, *, max_age_s: float, max_pending: int
) -> list[Check]:
    sec, usec = await client.time()
    now_s = int(sec) + int(usec) / 1e6
    out: list[Check] = []

    group = await find_group(client, settings.stream, settings.group)
    out.append(
        Check("group", group is not None, f"{settings.group} on {settings.stream}")
        if group is not None
        else Check("group", False, f"no group {settings.group} on {settings.stream}")
    )

    raw_ts = await client.hget(keys.STATUS, "last_ts")
    last_ts = number(raw_ts)
    alive = False
    if raw_ts is None:
        out.append(Check("heartbeat", False, "no status: the service has never run here"))
    elif last_ts is None:
        out.append(Check("heartbeat", False, f"status last_ts is not a time: {safe(raw_ts)[:40]}"))
    else:
        age = now_s - last_ts
        alive = fresh(age, max_age_s)
        out.append(Check("heartbeat", alive, f"status is {status_age(age)} (limit {max_age_s:g})"))

    # A snapshot key can be missing only because the traffic is newer than the last
    # rebuild; a live service gets one more rebuild to show it (see `_windows`).
    wait_s = settings.snapshot_interval_sec + 3 if alive else 0.0
    out.append(await _windows(client, now_s, wait_s))

    pending = int(group.get("pending", 0)) if group else 0
    out.append(Check("pending", pending <= max_pending, f"{pending} pending (limit {max_pending})"))
    return out


async def _windows(client: aioredis.Redis, now_s: float, wait_s: float) -> Check:
    """Every window whose closed minutes held traffic must have its snapshot key.

    The current minute is left out: its first entries may postdate the last snapshot.
    An empty window rightly has no key, so only absence where data exists fails. Closed
    minutes can be new too (a first entry seconds ago, a backlog being drained): when a
    key is missing, the check waits up to `wait_s` for a rebuild that began after it
    looked (`snapshot_ts` past `now_s`), which has read every bucket seen here.
    """
    missing, busy = await _missing_windows(client, int(now_s) // 60)
    deadline = time.monotonic() + wait_s
    while missing and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        snapshot_ts = number(await client.hget(keys.STATUS, "snapshot_ts"))
        if snapshot_ts is not None and snapshot_ts > now_s:
            missing, busy = await _missing_windows(client, int(now_s) // 60)
            break
    if not busy:
        return Check("windows", True, "no traffic in the last hour: no windows expected")
    detail = f"traffic in {len(busy)} of the last 60 minutes; " + (
        f"missing snapshots: {', '.join(missing)}" if missing else "snapshots present"
    )
    return Check("windows", not missing, detail)


async def _missing_windows(client: aioredis.Redis, minute: int) -> tuple[list[str], list[int]]:
    """The windows with traffic in their closed minutes but no key, and those minutes."""
    first = minute - keys.LONGEST_WINDOW_MIN + 1
    async with client.pipeline(transaction=False) as pipe:
        for m in range(first, minute):
            pipe.exists(keys.bucket(m))
        busy = [m for m, hit in zip(range(first, minute), await pipe.execute(), strict=True) if hit]
    missing = []
    for window, length in keys.WINDOWS.items():
        if any(m > minute - length for m in busy) and not await client.exists(
            keys.decision_counts(window)
        ):
            missing.append(window)
    return missing, busy
