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

ANSWER_WITHIN_S = 10.0
"""`p35 check` answers within this, whatever the service's settings (an NRPE or
systemd health probe gives up at 10 s)."""
FINAL_READS_S = 1.0
"""Kept from the wait for the reads that judge what it brought."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def run_checks(
    settings: Settings, client: aioredis.Redis, *, max_age_s: float, max_pending: int
) -> list[Check]:
    started = time.monotonic()
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
    # rebuild; a live service gets one more rebuild to show it (see `_windows`), as far
    # as the check's own bound allows.
    wait_s = settings.snapshot_interval_sec + 3 if alive else 0.0
    room_s = ANSWER_WITHIN_S - FINAL_READS_S - (time.monotonic() - started)
    out.append(await _windows(client, now_s, max(0.0, min(wait_s, room_s)), wait_s))

    pending = int(group.get("pending", 0)) if group else 0
    out.append(Check("pending", pending <= max_pending, f"{pending} pending (limit {max_pending})"))
    return out


async def _windows(client: aioredis.Redis, now_s: float, wait_s: float, rebuild_s: float) -> Check:
    """Every window whose closed minutes held traffic must have its snapshot key.

    The current minute is left out: its first entries may postdate the last snapshot.
    An empty window rightly has no key, so only absence where data exists fails. Closed
    minutes can be new too (a first entry seconds ago, a backlog being drained): when a
    key is missing, the check waits up to `wait_s` for a rebuild that began after it
    looked (`snapshot_ts` past `now_s`), which has read every bucket seen here. A
    rebuild can take up to `rebuild_s` (P35_SNAPSHOT_INTERVAL_SEC + 3 s) to come; when
    that is longer than the wait, a key still missing fails, saying so.
    """
    missing, busy = await _missing_windows(client, int(now_s) // 60)
    deadline = time.monotonic() + wait_s
    rebuilt = False
    while missing and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        snapshot_ts = number(await client.hget(keys.STATUS, "snapshot_ts"))
        if snapshot_ts is not None and snapshot_ts > now_s:
            missing, busy = await _missing_windows(client, int(now_s) // 60)
            rebuilt = True
            break
    if not busy:
        return Check("windows", True, "no traffic in the last hour: no windows expected")
    detail = f"traffic in {len(busy)} of the last 60 minutes; " + (
        f"missing snapshots: {', '.join(missing)}" if missing else "snapshots present"
    )
    if missing and not rebuilt and rebuild_s > wait_s:
        detail += f" (no rebuild within the {wait_s:.0f} s this check waits; one is due every "
        detail += f"{rebuild_s - 3:g} s)"
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
