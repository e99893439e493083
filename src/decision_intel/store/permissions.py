"""The start-up permission check: every command the daemon sends, asked of `ACL DRYRUN`.

A missing permission is named before it bites mid-run; docs/security.md gives the
matching ACL line.
"""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import NoPermissionError, ResponseError

from decision_intel import keys
from decision_intel.settings import Settings
from decision_intel.store.backoff import Refusing


def probes(s: Settings, consumer: str) -> list[tuple[str, ...]]:
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
        ("HSET", keys.UNROLLED, "f", "1"),
        ("HKEYS", keys.UNROLLED),
        ("HDEL", keys.UNROLLED, "f"),
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
        # The completeness ledger (flush.lua, audit.lua, forget_departed.lua).
        ("ZADD", keys.SETTLED, "0", "m"),
        ("ZRANGEBYLEX", keys.SETTLED, "-", "+", "LIMIT", "0", "1"),
        ("ZREVRANGEBYLEX", keys.SETTLED, "+", "-", "LIMIT", "0", "1"),
        ("ZREM", keys.SETTLED, "m"),
        ("ZREMRANGEBYLEX", keys.SETTLED, "-", "(a"),
        ("SADD", keys.CONSUMERS, c),
        ("SISMEMBER", keys.CONSUMERS, c),
        ("SCARD", keys.CONSUMERS),
        ("SREM", keys.CONSUMERS, c),
        ("MULTI",),
        ("EXEC",),
        ("TIME",),
        ("PING",),
        ("CLIENT", "SETNAME", "x"),
    ]


async def denied(client: aioredis.Redis, s: Settings, consumer: str) -> list[str] | None:
    """Redis's reason for every needed command this user may not run ([] when none),
    or None when the check itself is not allowed (no +acl|whoami / +acl|dryrun)."""
    try:
        user = await client.execute_command("ACL", "WHOAMI")
        user = user.decode() if isinstance(user, bytes) else user
        async with client.pipeline(transaction=False) as pipe:
            for probe in probes(s, consumer):
                pipe.execute_command("ACL", "DRYRUN", user, *probe)
            replies = await pipe.execute(raise_on_error=False)
    except Refusing:
        raise
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
