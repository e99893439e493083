"""The completeness audit's protocol (`lua/audit.lua`): one call per interval from each
daemon; the daemon that takes the turn walks the group and reports what left it uncounted.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.keys import id_parts
from decision_intel.model.completeness import Audit
from decision_intel.model.losses import LossEvent, loss_record
from decision_intel.settings import Settings
from decision_intel.store import scripts

MAX_STEPS = 2000
"""Entries and ranges one turn may walk; the rest waits for the next turn."""
MAX_UNREAD = 20_000
"""Unread entries the turn counts to place the group's position; past that it waits."""
LOSSES_MAXLEN = 1000
LOSSES_READ = 200
"""Loss records a view reads (newest first): more than a day's worth in any real case."""


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def parse(reply: list[Any]) -> Audit | None:
    """The script's reply; None when another daemon had the turn (or there is no group)."""
    if int(reply[0]) == 0:
        return None
    headroom = _text(reply[1])
    n_foreign, n_named = int(reply[6]), int(reply[7])
    pos = 8
    foreign = []
    for _ in range(n_named):
        name = reply[pos] if isinstance(reply[pos], bytes) else str(reply[pos]).encode()
        foreign.append((name, int(reply[pos + 1])))
        pos += 2
    losses = []
    for _ in range(int(reply[pos])):
        cause, count, first, last = reply[pos + 1 : pos + 5]
        losses.append(LossEvent(_text(cause), int(count), _text(first), _text(last)))
        pos += 4
    return Audit(
        headroom_s=float(headroom) / 1000 if headroom else None,
        trimmed_ever=int(reply[3]) == 1,
        exact=int(reply[2]) == 1,
        last_loss_ms=int(reply[4]),
        acked_ms=int(reply[5]),
        foreign_total=n_foreign,
        foreign=foreign,
        losses=losses,
    )


class Auditor:
    def __init__(self, settings: Settings, client: aioredis.Redis, token: str):
        self.s = settings
        self.client = client
        self.token = token
        self._script = scripts.load(client, "audit")

    async def run(self, read_hw: bytes | None, lock_ms: int) -> Audit | None:
        s = self.s
        reply = await self._script(
            keys=[
                keys.STATUS,
                keys.LEDGER,
                keys.SETTLED,
                keys.LOSSES,
                keys.AUDIT_LOCK,
                keys.CONSUMERS,
            ],
            args=[
                s.stream,
                s.group,
                s.consumer_name,
                read_hw or "",
                self.token,
                lock_ms,
                MAX_STEPS,
                LOSSES_MAXLEN,
                MAX_UNREAD,
            ],
        )
        return parse(reply)


async def add_to_days(client: aioredis.Redis, s: Settings, losses: list[LossEvent]) -> None:
    """Each loss into the daily rollup of its entries' day (`lost:<cause>`, by the last
    entry's time), so `p35 report` carries it. After the audit's own step: a crash in
    between leaves a day's figure short, never counted twice."""
    async with client.pipeline(transaction=False) as pipe:
        for e in losses:
            try:
                day = id_parts(e.last_id)[0] // 86_400_000
            except ValueError:
                continue
            pipe.hincrby(keys.daily(day), f"lost:{e.cause}", e.count)
            pipe.expireat(keys.daily(day), (day + 1 + s.daily_ttl_days) * 86_400, nx=True)
        await pipe.execute()


async def recent_losses(client: aioredis.Redis) -> list[LossEvent]:
    """The newest loss records (`quantum:p35:losses`) as the audit wrote them, oldest first."""
    rows: Any = await client.xrevrange(keys.LOSSES, count=LOSSES_READ)
    found = (loss_record(fields) for _, fields in reversed(rows))
    return [e for e in found if e is not None]
