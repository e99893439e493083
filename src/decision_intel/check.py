"""`p35 check`: service health as seen from Redis, one line per check; exit 1 on any failure."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.client import find_group
from decision_intel.settings import Settings


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

    last_ts = await client.hget(keys.STATUS, "last_ts")
    if last_ts is None:
        out.append(Check("heartbeat", False, "no status: the service has never run here"))
    else:
        age = now_s - float(last_ts)
        out.append(
            Check("heartbeat", age <= max_age_s, f"status is {age:.0f} s old (limit {max_age_s:g})")
        )

    out.append(await _windows(client, int(now_s) // 60))

    pending = int(group.get("pending", 0)) if group else 0
    out.append(Check("pending", pending <= max_pending, f"{pending} pending (limit {max_pending})"))
    return out


async def _windows(client: aioredis.Redis, minute: int) -> Check:
    """Every window whose closed minutes held traffic must have its snapshot key.

    The current minute is left out: its first entries may postdate the last snapshot.
    An empty window rightly has no key, so only absence where data exists fails.
    """
    first = minute - keys.LONGEST_WINDOW_MIN + 1
    async with client.pipeline(transaction=False) as pipe:
        for m in range(first, minute):
            pipe.exists(keys.bucket(m))
        busy = [m for m, hit in zip(range(first, minute), await pipe.execute(), strict=True) if hit]
    if not busy:
        return Check("windows", True, "no traffic in the last hour: no windows expected")
    missing = []
    for window, length in keys.WINDOWS.items():
        if any(m > minute - length for m in busy) and not await client.exists(
            keys.decision_counts(window)
        ):
            missing.append(window)
    detail = f"traffic in {len(busy)} of the last 60 minutes; " + (
        f"missing snapshots: {', '.join(missing)}" if missing else "snapshots present"
    )
    return Check("windows", not missing, detail)
