"""Redis I/O for the consumer: group, lease, reads, and the atomic flush.

The consumer's Lua scripts (flush, read, lease, release, forget_consumer) live in
`lua/`; clients and the script loader are in `client.py`.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from decision_intel import keys
from decision_intel.batch import Batch, BucketDelta
from decision_intel.client import Entry, find_group, lua_source, parse_entries
from decision_intel.settings import Settings


class FlushRefused(Exception):
    """The flush script found an argument or a key a write would fail on; nothing was written."""


def _pairs(args: list[Any], counts: dict[str, int]) -> None:
    args.append(len(counts))
    for name, n in counts.items():
        args += [name, n]


def _delta_args(args: list[Any], d: BucketDelta, *, symbol_reasons: bool) -> None:
    """One bucket's (or day's) increments in the flush script's layout."""
    _pairs(args, d.decisions)
    _pairs(args, d.reasons)
    args.append(len(d.symbol_decisions))
    for symbol, by_decision in d.symbol_decisions.items():
        args.append(symbol)
        _pairs(args, by_decision)
        if symbol_reasons:
            _pairs(args, d.symbol_reasons[symbol])


def permission_probes(s: Settings, consumer: str) -> list[tuple[str, ...]]:
    """Every command the daemon sends (directly or from its scripts), on the keys it uses.

    Checked with ACL DRYRUN at start, so a missing permission is named before it
    bites mid-run. docs/security.md gives the matching ACL line.
    """
    st, g, c, p = s.stream, s.group, consumer, keys.PREFIX
    bucket, meta, lease = f"{p}:bucket:x", f"{p}:bucketmeta:x", keys.lease(c)
    return [
        ("XGROUP", "CREATE", st, g, "0", "MKSTREAM"),
        ("XREADGROUP", "GROUP", g, c, "COUNT", "1", "STREAMS", st, ">"),
        ("XAUTOCLAIM", st, g, c, "1000", "0-0", "COUNT", "1"),
        ("XPENDING", st, g, "-", "+", "1", c),
        ("XACK", st, g, "0-1"),
        ("XINFO", "GROUPS", st),
        ("XINFO", "STREAM", st),
        ("XINFO", "CONSUMERS", st, g),
        ("XGROUP", "DELCONSUMER", st, g, c),
        ("XADD", keys.INVALID, "MAXLEN", "~", "1", "*", "f", "v"),
        ("EVALSHA", "0" * 40, "1", keys.STATUS),
        ("SCRIPT", "LOAD", "return 1"),
        ("TYPE", keys.STATUS),
        ("HINCRBY", bucket, "f", "1"),
        ("HINCRBY", meta, "f", "1"),
        ("HEXISTS", meta, "f"),
        ("HMGET", meta, "f"),
        ("HSET", meta, "f", "1"),
        ("HGET", meta, "f"),
        ("HGETALL", meta),
        ("HKEYS", keys.ALERT_STATE),
        ("HDEL", keys.ALERT_STATE, "f"),
        ("XADD", keys.ALERTS, "MAXLEN", "~", "1", "*", "f", "v"),
        ("XREVRANGE", keys.ALERTS, "+", "-", "COUNT", "1"),
        ("EXPIREAT", bucket, "1"),
        ("HSET", keys.STATUS, "f", "1"),
        ("HINCRBY", keys.STATUS, "f", "1"),
        ("HSET", keys.consumer_status(c), "f", "1"),
        ("EXPIRE", keys.consumer_status(c), "1"),
        ("GET", lease),
        ("SET", lease, "v", "NX", "PX", "1"),
        ("EXISTS", lease),
        ("DEL", lease),
        ("SET", keys.SNAPSHOT_LOCK, "v", "NX", "PX", "1"),
        ("DEL", keys.decision_counts("1m"), keys.reason_top("1m")),
        ("HSET", keys.decision_counts("1m"), "f", "1"),
        ("ZADD", keys.reason_top("1m"), "1", "m"),
        ("SMEMBERS", keys.symbols_in("1m")),
        ("SADD", keys.symbols_in("1m"), "m"),
        ("HSET", keys.symbol_decision_counts("X", "1m"), "f", "1"),
        ("EXPIRE", keys.reason_top("1m"), "1"),
        ("MULTI",),
        ("EXEC",),
        ("TIME",),
        ("PING",),
        ("CLIENT", "SETNAME", "x"),
    ]


@dataclass(frozen=True)
class FlushResult:
    counted: int
    excluded: int
    lease_lost: bool = False
    decisions: dict[str, int] = field(default_factory=dict)
    invalid: int = 0
    reclaimed: int = 0
    trimmed: int = 0


class Store:
    """The consumer's view of Redis: one consumer name in one group of one stream."""

    def __init__(self, settings: Settings, client: aioredis.Redis, reader: aioredis.Redis):
        self.s = settings
        self.client = client
        self.reader = reader
        self.consumer = settings.consumer_name
        self.token = secrets.token_hex(16)
        self.lease_ms = int(settings.lease_sec * 1000)
        self._flush = client.register_script(lua_source("flush"))
        self._lease = client.register_script(lua_source("lease"))
        self._release = client.register_script(lua_source("release"))
        self._forget = client.register_script(lua_source("forget_consumer"))
        self._read = client.register_script(lua_source("read"))
        self.clock_offset_ms = 0
        """Redis's clock minus ours, as of the last `server_time_ms()`."""

    async def denied_permissions(self) -> list[str] | None:
        """Redis's reason for every needed command this user may not run ([] when none),
        or None when the check itself is not allowed (no +acl|whoami / +acl|dryrun)."""
        try:
            user = await self.client.execute_command("ACL", "WHOAMI")
            user = user.decode() if isinstance(user, bytes) else user
            async with self.client.pipeline(transaction=False) as pipe:
                for probe in permission_probes(self.s, self.consumer):
                    pipe.execute_command("ACL", "DRYRUN", user, *probe)
                replies = await pipe.execute(raise_on_error=False)
        except (NoPermissionError, ResponseError):
            return None
        denied = []
        for reply in replies:
            if isinstance(reply, NoPermissionError):
                return None  # DRYRUN itself is not allowed
            text = reply.decode() if isinstance(reply, bytes) else str(reply)
            if text != "OK":
                denied.append(text)
        return denied

    async def ensure_group(self) -> bool:
        """Create the group (and the stream) when missing, from the stream's beginning."""
        try:
            await self.client.xgroup_create(self.s.stream, self.s.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False
        return True

    async def take_lease(self) -> bool:
        ok = await self._lease(keys=[keys.lease(self.consumer)], args=[self.token, self.lease_ms])
        return bool(ok)

    async def release_lease(self) -> None:
        await self._release(keys=[keys.lease(self.consumer)], args=[self.token])

    async def read_new(self, count: int, block_ms: int | None) -> list[Entry]:
        return await self.reader.xreadgroup(  # type: ignore[no-any-return]
            self.s.group, self.consumer, {self.s.stream: ">"}, count=count, block=block_ms
        )

    async def read_bounded(
        self, after: bytes | str, count: int
    ) -> tuple[list[Entry], dict[bytes, tuple[int, int]]]:
        """A read whose reply stays within the byte budget whatever the entries hold
        (`lua/read.lua`): new entries (`after` = '>') or this consumer's pending ones after
        an ID. Returns the entries and, for those cut down, (fields, bytes) as written."""
        s = self.s
        reply = await self._read(
            keys=[],
            args=[s.stream, s.group, self.consumer, after, count, s.max_entry_fields,
                  s.max_entry_bytes, s.read_budget_bytes // 2],
        )  # fmt: skip
        entries = parse_entries([[s.stream, reply[0]]])
        oversize = {row[0]: (int(row[1]), int(row[2])) for row in reply[1]}
        return entries, oversize

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
        rows = await self.client.xpending_range(
            self.s.stream, self.s.group, low, high, count, consumername=self.consumer
        )
        return {row["message_id"]: row["times_delivered"] for row in rows}

    async def add_trimmed(self, n: int) -> None:
        """XAUTOCLAIM already dropped these deleted IDs from the PEL; report them."""
        await self.client.hincrby(keys.STATUS, "trimmed_total", n)

    async def flush(self, batch: Batch, now_ms: int) -> FlushResult:
        """Count and acknowledge the batch atomically; drop IDs that are no longer ours.

        Safe to repeat after a lost reply: a second run finds the IDs acknowledged,
        drops them, and counts nothing twice.
        """
        excluded = 0
        while len(batch):
            reply = await self._flush(
                keys=[keys.STATUS, keys.lease(self.consumer), keys.INVALID],
                args=self._flush_args(batch, now_ms),
            )
            code = int(reply[0])
            if code == 3:
                raise FlushRefused(reply[1].decode(errors="replace"))
            if code == 0:
                decisions: dict[str, int] = {}
                for (_minute, decision, _reason, _symbol), n in batch.counts.items():
                    decisions[decision] = decisions.get(decision, 0) + n
                result = FlushResult(
                    len(batch.items), excluded, decisions=decisions, invalid=len(batch.invalid),
                    reclaimed=len(batch.reclaimed), trimmed=int(reply[2]),
                )  # fmt: skip
                batch.clear()
                return result
            if code == 2:
                return FlushResult(0, excluded, lease_lost=True)
            excluded += batch.discard(reply[1:])
        return FlushResult(0, excluded)

    def _flush_args(self, batch: Batch, now_ms: int) -> list[Any]:
        low, high = batch.id_range()
        ids = list(batch.items)
        args: list[Any] = [
            self.s.stream,
            self.s.group,
            self.consumer,
            self.token,
            self.lease_ms,
            self.s.max_reasons_per_bucket,
            self.s.max_symbols_per_bucket,
            self.s.invalid_maxlen,
            low,
            high,
            batch.newest or "",
            now_ms,
            batch.reclaimed_count(),
            len(batch.future),
            len(ids),
            *ids,
            len(batch.trimmed),
            *batch.trimmed,
        ]
        deltas = batch.deltas()
        args.append(len(deltas))
        for minute, d in deltas.items():
            args += [keys.bucket(minute), keys.bucket_meta(minute)]
            args.append(minute * 60 + self.s.bucket_ttl_sec)
            _delta_args(args, d, symbol_reasons=True)
        days = batch.deltas(minutes_per_key=1440)
        args.append(len(days))
        for day, d in days.items():
            args += [keys.daily(day), keys.daily_meta(day)]
            args.append((day + 1 + self.s.daily_ttl_days) * 86_400)
            _delta_args(args, d, symbol_reasons=False)
        records = batch.invalid_records()
        args.append(len(records))
        for entry_id, cause, raw in records:
            args += [entry_id, cause, raw]
        return args

    async def departed_consumers(self, min_idle_ms: int) -> list[bytes]:
        """Names as Redis has them: anyone may create a consumer, so a name may be any
        bytes (not UTF-8, control characters); log it through `text.safe`."""
        rows = await self.client.xinfo_consumers(self.s.stream, self.s.group)
        return [
            row["name"] if isinstance(row["name"], bytes) else str(row["name"]).encode()
            for row in rows
            if row["pending"] == 0 and row["idle"] >= min_idle_ms
        ]

    async def forget_consumer(self, name: bytes) -> bool:
        if name == self.consumer.encode():
            return False
        done = await self._forget(
            keys=[keys.lease_of(name)], args=[self.s.stream, self.s.group, name]
        )
        return bool(done)

    async def group_info(self) -> dict[str, Any] | None:
        return await find_group(self.client, self.s.stream, self.s.group)

    async def server_time_ms(self) -> int:
        sec, usec = await self.client.time()
        now_ms = int(sec) * 1000 + int(usec) // 1000
        self.clock_offset_ms = now_ms - int(time.time() * 1000)
        return now_ms
