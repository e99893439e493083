"""`p35 check`: service health as seen from Redis, one line per check; exit 1 on any failure."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.model.diagnose import fresh, status_age
from decision_intel.model.losses import utc_of_id
from decision_intel.settings import Settings
from decision_intel.store.client import find_group
from decision_intel.store.reads import redis_now_ms, redis_now_s
from decision_intel.text import count, number, safe, safe_name, utc

ANSWER_WITHIN_S = 10.0
"""`p35 check` answers within this, whatever the service's settings (an NRPE or
systemd health probe gives up at 10 s)."""
FINAL_READS_S = 1.0
"""Kept from the wait for the reads that judge what it brought."""
STARTUP_S = 1.5
"""Kept for the `p35` process's own start (the interpreter and its imports), which the
probe's 10 s include."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


async def run_checks(
    settings: Settings, client: aioredis.Redis, *, max_age_s: float, max_pending: int
) -> list[Check]:
    started = time.monotonic()
    # The status before the clock: a heartbeat written between the two reads would date
    # it ahead of a clock read first, and "ahead" means written by another clock.
    raw_ts = await client.hget(keys.STATUS, "last_ts")
    now_s = await redis_now_s(client)
    out: list[Check] = []

    group = await find_group(client, settings.stream, settings.group)
    out.append(
        Check("group", group is not None, f"{settings.group} on {settings.stream}")
        if group is not None
        else Check("group", False, f"no group {settings.group} on {settings.stream}")
    )

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
    room_s = ANSWER_WITHIN_S - STARTUP_S - FINAL_READS_S - (time.monotonic() - started)
    out.append(await _windows(client, now_s, max(0.0, min(wait_s, room_s)), wait_s))

    pending = int(group.get("pending", 0)) if group else 0
    out.append(Check("pending", pending <= max_pending, f"{pending} pending (limit {max_pending})"))
    out.append(await completeness(client, int(now_s * 1000)))
    return out


UTC_FORMAT = "%Y-%m-%d %H:%M:%SZ"
LOSS_LOOKBACK_MS = 86_400_000
"""Losses this old or older no longer fail the check (they stay in the history)."""


async def completeness(client: aioredis.Redis, now_ms: int) -> Check:
    """Fails while a loss of the last 24 h, or a foreign consumer holding entries, is not
    acknowledged by the operator (`p35 check --ack-losses`; docs/completeness.md)."""
    ledger: Any = await client.hmget(keys.LEDGER, "acked_ms", "foreign", "acked_foreign")
    acked, foreign_raw, acked_foreign = ledger
    acked_ms = count(acked) or 0
    since_ms = max(acked_ms, now_ms - LOSS_LOOKBACK_MS)
    rows: Any = await client.xrange(keys.LOSSES, min=f"{since_ms + 1}-0", max="+", count=1000)
    lost = loss_summary(rows)
    holding = [
        name
        for name, held in foreign_consumers(foreign_raw)
        if held > 0 and name not in {n for n, _ in foreign_consumers(acked_foreign)}
    ]
    problems = []
    if lost:
        problems.append(lost)
    if holding:
        problems.append("foreign consumers hold entries: " + ", ".join(holding[:5]))
    if problems:
        hint = "; read docs/completeness.md, then p35 check --ack-losses"
        return Check("completeness", False, "; ".join(problems) + hint)
    if acked_ms:
        return Check(
            "completeness",
            True,
            f"no loss since the acknowledgement at {utc(acked_ms / 1000, UTC_FORMAT)}",
        )
    return Check("completeness", True, "no loss in the last 24 h")


def loss_summary(rows: list[tuple[bytes, dict[bytes, bytes]]]) -> str:
    """`lost N entries: trimmed N (from .. to ..), ...` for loss records; '' for none."""
    by_cause: dict[str, list[int]] = {}
    first: dict[str, str] = {}
    last: dict[str, str] = {}
    for _, f in rows:
        cause = safe(f.get(b"cause", b"?"))[:40]
        by_cause.setdefault(cause, []).append(count(f.get(b"count")) or 0)
        first.setdefault(cause, utc_of_id(safe(f.get(b"first_id", b""))))
        last[cause] = utc_of_id(safe(f.get(b"last_id", b"")))
    if not by_cause:
        return ""
    total = sum(sum(v) for v in by_cause.values())
    parts = [
        f"{cause} {sum(ns):,} (entries of {first[cause] or '?'} to {last[cause] or '?'})"
        for cause, ns in by_cause.items()
    ]
    return f"lost {total:,} entries unacknowledged: " + ", ".join(parts)


def foreign_consumers(raw: bytes | None) -> list[tuple[str, int]]:
    """The foreign consumers the last audit named (ledger `foreign`), names made safe."""
    if not raw:
        return []
    try:
        doc = json.loads(raw.decode(errors="replace"))
        flat = doc.get("names") if isinstance(doc, dict) else None
    except ValueError:
        return []
    if not isinstance(flat, list):
        return []
    return [
        (safe_name(str(flat[i])), count(str(flat[i + 1])) or 0) for i in range(0, len(flat) - 1, 2)
    ]


async def acknowledge_losses(client: aioredis.Redis) -> int:
    """Record, at Redis's time, that the operator has seen the losses so far and the
    foreign consumers now in the group; returns that time (ms). The history stays."""
    now_ms = await redis_now_ms(client)
    foreign = await client.hget(keys.LEDGER, "foreign")
    await client.hset(keys.LEDGER, mapping={"acked_ms": now_ms, "acked_foreign": foreign or b""})
    await client.hset(keys.STATUS, "losses_acked_ms", now_ms)
    return now_ms


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
