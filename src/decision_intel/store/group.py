"""Redis I/O for the consumer: group, lease, reads, the atomic flush, departed consumers.

The consumer's Lua scripts (flush, read, lease, release, forget_departed) are loaded
through `scripts.py`; the flush script's arguments are laid out by `flush.py` (pure).
"""

from __future__ import annotations

import secrets
import time
from typing import Any, NamedTuple, cast

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from decision_intel import keys
from decision_intel.keys import id_parts
from decision_intel.model.batch import Batch
from decision_intel.settings import Settings
from decision_intel.store import permissions, scripts
from decision_intel.store.client import Entry, Read, find_group, group_row, parse_entries
from decision_intel.store.flush import (
    APPLIED,
    LEASE_LOST,
    REFUSED,
    REPLAYED,
    FlushResult,
    day_args,
    flush_args,
    flush_keys,
)
from decision_intel.store.reads import redis_now_ms
from decision_intel.text import safe

DEPARTED_NAMES_SHOWN = 3
"""How many of the names a removal of departed consumers returns, for its log line."""


class Departed(NamedTuple):
    """One removal of departed consumers: how many, whether more are left (it stopped at
    its bound), and the first few names."""

    removed: int
    more: bool
    names: list[bytes]


class LeaseLost(Exception):
    """Another live process holds this consumer name: this one must stop counting."""


class FlushRefused(Exception):
    """The flush script found an argument or a key a write would fail on; nothing was written.
    `wrong_type`: one of the daemon's keys holds another type (the message names it)."""

    def __init__(self, why: str, wrong_type: bool = False):
        super().__init__(why)
        self.wrong_type = wrong_type


class Store:
    """The consumer's view of Redis: one consumer name in one group of one stream."""

    def __init__(self, settings: Settings, client: aioredis.Redis, reader: aioredis.Redis):
        self.s = settings
        self.client = client
        self.reader = reader
        self.consumer = settings.consumer_name
        self.token = secrets.token_hex(16)
        self.lease_ms = int(settings.lease_sec * 1000)
        self._flush = scripts.load(client, "flush")
        self._lease = scripts.load(client, "lease")
        self._release = scripts.load(client, "release")
        self._forget = scripts.load(client, "forget_departed")
        self._read = scripts.load(client, "read")
        self._heartbeat = scripts.load(client, "heartbeat")
        self._group_start = scripts.load(client, "group_start")
        self.clock_offset_ms = 0
        """Redis's clock minus ours, as of the last `server_time_ms()`."""

    async def denied_permissions(self) -> list[str] | None:
        """What this user may not do of what the daemon needs (permissions.py)."""
        return await permissions.denied(self.client, self.s, self.consumer)

    async def ensure_group(self) -> str | None:
        """Create the group (and the stream) when missing; return the ID it starts after
        (None: it was there). From the stream's beginning, unless this Redis holds counts
        already: the group was removed (XGROUP DESTROY, or with its stream) and the status
        names the newest entry counted. The group then starts after that entry, so
        nothing is counted twice. Only when the stream has no such entry (it was deleted
        and begins anew) does it start from the beginning again."""
        reply = await self._group_start(keys=[keys.STATUS], args=[self.s.stream, self.s.group])
        if not reply:
            return None
        start = reply.decode() if isinstance(reply, bytes) else str(reply)
        try:
            await self.client.xgroup_create(self.s.stream, self.s.group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return None
        return start

    async def register(self) -> None:
        """Name this consumer as p35's: only p35's departed consumers are ever removed."""
        await self.client.sadd(keys.CONSUMERS, self.consumer)

    async def take_lease(self) -> bool:
        ok = await self._lease(keys=[keys.lease(self.consumer)], args=[self.token, self.lease_ms])
        return bool(ok)

    async def release_lease(self) -> None:
        await self._release(keys=[keys.lease(self.consumer)], args=[self.token])

    async def read_new(self, count: int, block_ms: int | None) -> Read:
        """New entries, measured against the size limits as they are parsed (client.py)."""
        entries: Any = await self.reader.xreadgroup(
            self.s.group, self.consumer, {self.s.stream: ">"}, count=count, block=block_ms
        )
        return cast(Read, entries)

    async def read_bounded(self, after: bytes | str, count: int) -> Read:
        """A read whose reply stays within the byte budget whatever the entries hold
        (`lua/read.lua`): new entries (`after` = '>') or this consumer's pending ones after
        an ID. The script measured every entry: those it cut down are in `oversize`, with
        (fields, bytes) as written."""
        s = self.s
        reply = await self._read(
            keys=[],
            args=[
                s.stream,
                s.group,
                self.consumer,
                after,
                count,
                s.max_entry_fields,
                s.max_entry_bytes,
                s.read_budget_bytes // 2,
            ],
        )
        oversize = {row[0]: (int(row[1]), int(row[2])) for row in reply[1]}
        return Read(parse_entries([[s.stream, reply[0]]]), oversize)

    async def next_pending(self, after: bytes) -> bytes | None:
        """The ID of this consumer's first pending entry after `after` (b"0": the first)."""
        low = "-" if after in (b"0", "0") else b"(" + after
        rows: Any = await self.client.xpending_range(
            self.s.stream, self.s.group, low, "+", 1, consumername=self.consumer
        )
        return rows[0]["message_id"] if rows else None

    def now_ms(self) -> int:
        """Redis's clock, estimated from ours and the last measured offset."""
        return int(time.time() * 1000) + self.clock_offset_ms

    async def autoclaim(self, start: bytes, count: int) -> tuple[bytes, list[Entry], list[bytes]]:
        """Claim entries idle past the claim time from any consumer: (next, entries, deleted)."""
        reply = await self.client.xautoclaim(
            self.s.stream,
            self.s.group,
            self.consumer,
            int(self.s.claim_min_idle_sec * 1000),
            start_id=start,
            count=count,
        )
        deleted = reply[2] if len(reply) > 2 else []
        return reply[0], reply[1], deleted

    async def delivery_counts(self, low: bytes, high: bytes, count: int) -> dict[bytes, int]:
        rows: Any = await self.client.xpending_range(
            self.s.stream, self.s.group, low, high, count, consumername=self.consumer
        )
        return {row["message_id"]: row["times_delivered"] for row in rows}

    async def add_trimmed(self, n: int) -> None:
        """XAUTOCLAIM already dropped these deleted IDs from the PEL; report them."""
        await self.client.hincrby(keys.STATUS, "trimmed_total", n)

    def start_keys(self) -> dict[str, str]:
        """The daemon's own keys start-up reads or writes, with the type each must have."""
        return {
            keys.STATUS: "hash",
            keys.lease(self.consumer): "string",
            keys.consumer_status(self.consumer): "hash",
        }

    def _flush_key_types(self, minutes: set[int]) -> dict[str, str]:
        """The keys a flush of these minutes writes, with the type each must have."""
        want = {keys.STATUS: "hash", keys.UNROLLED: "hash", keys.INVALID: "stream"}
        for minute in minutes:
            daily, daily_meta, _ = day_args(self.s, minute)
            for key in (keys.bucket(minute), keys.bucket_meta(minute), daily, daily_meta):
                want[key] = "hash"
        return want

    async def wrong_types(self, want: dict[str, str]) -> list[str]:
        return await wrong_types(self.client, want)

    async def flush(self, batch: Batch, now_ms: int) -> FlushResult:
        """Count and acknowledge the batch atomically; drop IDs that are no longer ours.

        Safe to repeat after a lost reply: a second run finds the IDs acknowledged,
        drops them, and counts nothing twice.
        """
        excluded = 0
        replay_range: tuple[bytes, bytes] | None = None
        while len(batch):
            reply = await self._flush(
                keys=flush_keys(self.consumer),
                args=flush_args(
                    self.s,
                    batch,
                    consumer=self.consumer,
                    token=self.token,
                    lease_ms=self.lease_ms,
                    now_ms=now_ms,
                ),
            )
            code = int(reply[0])
            if code == REFUSED:
                why = reply[1].decode(errors="replace")
                wrong: list[str] = []
                if "wrong type" in why or "WRONGTYPE" in why:  # Redis does not say which key
                    minutes = {minute for minute, *_ in batch.counts}
                    wrong = await self.wrong_types(self._flush_key_types(minutes))
                raise FlushRefused("; ".join(wrong) or why, wrong_type=bool(wrong))
            if code == APPLIED:
                decisions: dict[str, int] = {}
                for (_minute, decision, _reason, _symbol), n in batch.counts.items():
                    decisions[decision] = decisions.get(decision, 0) + n
                result = FlushResult(
                    len(batch.items),
                    excluded,
                    decisions=decisions,
                    invalid=len(batch.invalid),
                    reclaimed=len(batch.reclaimed),
                    trimmed=int(reply[2]),
                    replayed=int(reply[3]),
                    replay_range=replay_range,
                )
                batch.clear()
                return result
            if code == LEASE_LOST:
                return FlushResult(0, excluded, lease_lost=True)
            if code == REPLAYED:  # counted before: acknowledge them only, flush the rest
                batch.mark_replayed(reply[1:])
                ids = sorted((*reply[1:], *(replay_range or ())), key=id_parts)
                replay_range = (ids[0], ids[-1])
                continue
            excluded += batch.discard(reply[1:])  # NOT_OURS: drop those, flush the rest
        return FlushResult(0, excluded)

    async def forget_departed(self, min_idle_ms: int, max_removed: int) -> Departed:
        """Remove up to `max_removed` of p35's departed consumers in one script, which walks
        the group's consumers inside Redis (their list may pass the read budget). A name
        may be any bytes (anyone may create a consumer): log it through `text.safe`."""
        reply: Any = await self._forget(
            keys=[keys.CONSUMERS],
            args=[
                self.s.stream,
                self.s.group,
                self.consumer,
                min_idle_ms,
                max_removed,
                keys.lease_of(b""),
                DEPARTED_NAMES_SHOWN,
            ],
        )
        return Departed(int(reply[0]), bool(int(reply[1])), [_name(n) for n in reply[2:]])

    async def heartbeat(
        self, mine: dict[str, str], own: dict[str, str], ttl_s: int
    ) -> dict[str, Any] | None:
        """Renew the lease, read the group's state, write both status hashes: one round
        trip (`lua/heartbeat.lua`). Returns the group's state as `find_group` gives it (None:
        no group); raises LeaseLost when another process holds the name."""
        args: list[Any] = [self.s.stream, self.s.group, self.token, self.lease_ms, ttl_s]
        for fields in (mine, own):
            args.append(len(fields))
            for name, value in fields.items():
                args += [name, value]
        reply: Any = await self._heartbeat(
            keys=[keys.STATUS, keys.consumer_status(self.consumer), keys.lease(self.consumer)],
            args=args,
        )
        if int(reply[0]) == 0:
            raise LeaseLost(self.consumer)
        if len(reply) == 1:
            return None
        info = group_row(reply[1:8])
        info["oldest_pending_age_s"] = float(reply[8])
        return info

    async def group_info(self) -> dict[str, Any] | None:
        return await find_group(self.client, self.s.stream, self.s.group)

    async def server_time_ms(self) -> int:
        now_ms = await redis_now_ms(self.client)
        self.observe_clock(now_ms)
        return now_ms

    def observe_clock(self, redis_now_ms: int) -> None:
        """Remember how far Redis's clock is from ours (`now_ms()` adds it)."""
        self.clock_offset_ms = redis_now_ms - int(time.time() * 1000)


def _name(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


async def wrong_types(client: aioredis.Redis, want: dict[str, str]) -> list[str]:
    """Which of these keys hold another type than p35 writes there (after a WRONGTYPE,
    which does not name its key), as `key is a T, not a W`."""
    async with client.pipeline(transaction=False) as pipe:
        for key in want:
            pipe.type(key)
        got = [t.decode() if isinstance(t, bytes) else str(t) for t in await pipe.execute()]
    return [
        f"{safe(key)} is a {t}, not a {w}"
        for (key, w), t in zip(want.items(), got, strict=True)
        if t not in ("none", w)
    ]
