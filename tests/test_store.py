"""The flush script against a real redis-server: ownership, idempotence, lease, bounds."""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import structlog

from decision_intel import keys
from decision_intel.daemon.consumer import Consumer
from decision_intel.daemon.rollup import Roller
from decision_intel.devtools.testing import RedisServer
from decision_intel.settings import Settings
from decision_intel.store import client as client_module
from decision_intel.store import permissions
from decision_intel.store.backoff import Refusing
from decision_intel.store.client import ReplyTooLarge, connect, find_group
from decision_intel.store.group import Departed, LeaseLost, Store
from tests.helpers import GROUP, RawRedis
from tests.traffic import STREAM

T = TypeVar("T")


def run(fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(fn())  # type: ignore[arg-type]


def make(server: RedisServer, name: str, **overrides: object) -> tuple[Store, Consumer]:
    s = Settings(redis_url=server.url, consumer=name, **overrides)  # type: ignore[arg-type]
    store = Store(s, connect(s), connect(s, blocking=True))
    return store, Consumer(s, store, structlog.get_logger())


async def ready(server: RedisServer, name: str, **overrides: object) -> tuple[Store, Consumer]:
    """A consumer that has joined the group and holds the lease on its name."""
    store, consumer = make(server, name, **overrides)
    await store.ensure_group()
    assert await store.take_lease()
    return store, consumer


async def close(*stores: Store) -> None:
    for st in stores:
        await st.client.aclose()
        await st.reader.aclose()


def count_all(server: RedisServer, **overrides: object) -> None:
    """One consumer reads everything in the stream (up to 100 entries) and flushes it."""

    async def go() -> None:
        store, c = await ready(server, "A", **overrides)
        c.ingest(await store.read_new(100, None))
        await c.flush()
        await close(store)

    run(go)


def add(r: RawRedis, n: int, **fields: str) -> list[bytes]:
    body = fields or {"symbol": "BTCUSDT", "executed": "false", "error": "risk_paused:x"}
    return [r.xadd(STREAM, body) for _ in range(n)]


def bucket_total(r: RawRedis, prefix: str = "decision:") -> int:
    total = 0
    for key in r.scan_iter("quantum:p35:bucket:*"):
        total += sum(int(v) for f, v in r.hgetall(key).items() if f.decode().startswith(prefix))
    return total


def test_entries_claimed_away_are_counted_by_the_claimer_only(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """A reads 10; B claims 4 of them; A's flush counts 6, B's counts 4: 10 in all, once each."""
    add(r, 10)

    async def go() -> tuple[int, int, int]:
        a_store, a = make(redis_server, "A")
        b_store, b = make(redis_server, "B")
        await a_store.ensure_group()
        assert await a_store.take_lease() and await b_store.take_lease()
        a.ingest(await a_store.read_new(100, None))
        stolen = list(a.batch.items)[3:7]
        claimed: Any = await b_store.client.xclaim(STREAM, GROUP, "B", 0, [*stolen])
        b.ingest(claimed, reclaimed=True)
        await a.flush()
        await b.flush()
        await close(a_store, b_store)
        return a.counted, b.counted, a.excluded

    a_counted, b_counted, a_excluded = run(go)
    assert (a_counted, b_counted, a_excluded) == (6, 4, 4)
    assert bucket_total(r) == 10
    assert bucket_total(r, "reason:") == 10
    assert int(r.hget(keys.STATUS, "processed_total")) == 10
    assert r.xpending(STREAM, GROUP)["pending"] == 0


def test_a_flush_repeated_after_a_lost_reply_counts_nothing_twice(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """Re-running the same flush (as after a dropped connection) adds nothing."""
    add(r, 25)

    async def go() -> int:
        store, c = await ready(redis_server, "A")
        c.ingest(await store.read_new(100, None))
        held = copy.deepcopy(c.batch)
        await c.flush()
        c.batch = held  # the reply was "lost": the caller still holds the batch
        await c.flush()
        await close(store)
        return c.excluded

    assert run(go) == 25
    assert bucket_total(r) == 25
    assert int(r.hget(keys.STATUS, "processed_total")) == 25


def test_a_process_that_lost_its_name_lease_counts_and_acks_nothing(
    r: RawRedis, redis_server: RedisServer
) -> None:
    add(r, 5)

    async def go() -> None:
        store, c = await ready(redis_server, "A")
        c.ingest(await store.read_new(100, None))
        await store.client.set(keys.lease("A"), "another-process")
        with pytest.raises(LeaseLost):
            await c.flush()
        await close(store)

    run(go)
    assert bucket_total(r) == 0
    assert r.xpending(STREAM, GROUP)["pending"] == 5


def test_reasons_beyond_the_bucket_bound_fold_into_other(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """With a bound of 5, 12 distinct reasons leave 4 named + `other`; the sums still hold."""
    ids = [
        r.xadd(STREAM, {"symbol": "BTCUSDT", "executed": "false", "error": f"gate_{chr(97 + i)}"})
        for i in range(12)
    ]
    assert len({i.split(b"-")[0][:-4] for i in ids}) >= 1

    async def go() -> None:
        store, c = await ready(redis_server, "A", max_reasons_per_bucket=5)
        # two flushes, so the bound also holds across flushes
        c.ingest(await store.read_new(6, None))
        await c.flush()
        c.ingest(await store.read_new(100, None))
        await c.flush()
        await Roller(store.s, store.client).run(everything=True)  # the daily rollups too
        await close(store)

    run(go)
    widest = 0
    for key in r.scan_iter("quantum:p35:bucket:*"):
        fields = {k.decode(): int(v) for k, v in r.hgetall(key).items()}
        reasons = {f for f in fields if f.startswith("reason:")}
        assert len(reasons) <= 5
        if len(reasons) == 5:
            assert "reason:other" in reasons
        widest = max(widest, len(reasons))
        sym_reasons = {f.split(":")[-1] for f in fields if f.startswith("symbol_reason:")}
        assert sym_reasons <= {f.split(":", 1)[1] for f in reasons}
        # The meta copy has the same reason fields, and both keys got their expiry.
        meta_key = key.replace(b":bucket:", b":bucketmeta:")
        meta = {k.decode(): int(v) for k, v in r.hgetall(meta_key).items()}
        assert {f: n for f, n in meta.items() if f.startswith("reason:")} == {
            f: fields[f] for f in reasons
        }
        assert r.ttl(key) > 0 and r.ttl(meta_key) > 0
    days = list(r.scan_iter("quantum:p35:daily*"))
    assert days and all(r.ttl(k) > 0 for k in days)  # each rollup and its meta
    for day in r.scan_iter("quantum:p35:daily:*"):
        reasons = {f for f in r.hkeys(day) if f.startswith(b"reason:")}
        assert len(reasons) <= 5 and (len(reasons) < 5 or b"reason:other" in reasons)
    assert widest == 5  # 12 reasons in at most two buckets: one of them reached the bound
    assert bucket_total(r, "reason:") == 12
    assert bucket_total(r, "symbol_reason:") == 12


def test_symbols_beyond_the_bucket_bound_get_no_symbol_fields(
    r: RawRedis, redis_server: RedisServer
) -> None:
    for i in range(8):
        r.xadd(STREAM, {"symbol": f"SYM{i}USDT", "executed": "true"})

    count_all(redis_server, max_symbols_per_bucket=3)
    symbols = set()
    for key in r.scan_iter("quantum:p35:bucket:*"):
        for f in r.hgetall(key):
            if f.startswith(b"symbol_decision:"):
                symbols.add(f.split(b":")[1])
    assert 0 < len(symbols) <= 3
    assert bucket_total(r) == 8


def test_entries_trimmed_while_pending_are_acked_and_reported(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """Read 10, stream trimmed to 3, restart re-reads own pending: 7 trimmed, 3 counted."""
    add(r, 10)

    async def go() -> int:
        store, _ = await ready(redis_server, "A")
        await store.read_new(100, None)  # delivered, never flushed: the process "died"
        await store.client.xtrim(STREAM, maxlen=3, approximate=False)
        fresh_store, fresh = make(redis_server, "A")
        fresh_store.token = store.token
        recovered = await fresh.recover_own()
        await close(store, fresh_store)
        return recovered

    assert run(go) == 10
    assert r.xpending(STREAM, GROUP)["pending"] == 0
    assert int(r.hget(keys.STATUS, "trimmed_total")) == 7
    assert int(r.hget(keys.STATUS, "processed_total")) == 3
    assert bucket_total(r) == 3


def test_unknown_entries_are_counted_and_copied_to_the_invalid_stream(
    r: RawRedis, redis_server: RedisServer
) -> None:
    big = "x" * 50_000  # large, but under P35_MAX_ENTRY_BYTES
    add(r, 1, plan_id="no-decision", blob=big)
    add(r, 1, decision="PERHAPS", symbol="ETHUSDT")

    count_all(redis_server)
    rows = r.xrange(keys.INVALID)
    assert [row[1][b"cause"] for row in rows] == [
        b"no decision and no executed field",
        b"unrecognized decision 'PERHAPS' and no executed field",
    ]
    assert len(rows[0][1][b"raw"]) < 2_000, "the invalid copy must be bounded"
    assert int(r.hget(keys.STATUS, "invalid_total")) == 2
    assert bucket_total(r) == 2


def test_a_read_measures_its_entries_as_redis_sent_them(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """Entries over the size limits are found while the reply is parsed: fields and bytes
    of the entry as Redis sends it (a repeated field name counts each time, each name and
    value with its framing, as in lua/read.lua, which measures them alike), and the flush
    records them as oversize."""
    add(r, 2, decision="SKIP", reason="no_position", symbol="BTCUSDT")
    wide = r.xadd(STREAM, {f"f{i}": "x" for i in range(300)})  # over the 256 fields
    big = r.xadd(STREAM, {"decision": "SKIP", "blob": "y" * 70_000})  # over 64 KiB
    # 40 KB under one name twice: a dict of it holds 40 KB, Redis holds 80 KB.
    twice = r.execute_command("XADD", STREAM, "*", "a", "z" * 40_000, "a", "z" * 40_000)

    async def go() -> None:
        store, c = await ready(redis_server, "A")
        first = await store.read_new(3, None)
        assert first.oversize == {wide: (300, -1)}
        rest = first.joined(await store.read_new(100, None))
        assert len(rest) == 5
        # Content plus `$<len>\r\n...\r\n` around each part plus 100 for the entry.
        assert rest.oversize == {
            wide: (300, -1),
            big: (2, 70_016 + 6 + 6 + 6 + 10 + 100),
            twice: (2, 80_002 + 2 * (6 + 10) + 100),
        }
        again = await store.read_bounded(b"0", 100)  # the script's measure: the same bytes
        assert again.oversize is not None and rest.oversize is not None
        assert {i: again.oversize[i] for i in (big, twice)} == {
            i: rest.oversize[i] for i in (big, twice)
        }
        c.ingest(rest)
        await c.flush()
        await close(store)

    run(go)
    causes = {row[1][b"id"]: row[1][b"cause"] for row in r.xrange(keys.INVALID)}
    assert sorted(causes) == sorted([wide, big, twice])
    assert causes[twice] == b"oversize: 2 fields, 80134 bytes (limits 256 fields, 65536 bytes)"
    assert causes[wide].startswith(b"oversize: 300 fields (limits")
    assert bucket_total(r) == 5


def test_an_entry_whose_reply_passes_the_budget_alone_is_counted_oversize_unread(
    r: RawRedis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No read error escapes the recovery (issue 27 #1): with a reply budget smaller than
    one entry (8 KiB here, under a 20 KB entry the script returns whole), the bounded
    re-read fails, falls back to one entry a read, and counts the entry it cannot read
    as UNKNOWN/oversize without its content; the others are counted as usual."""
    add(r, 2, decision="SKIP", reason="no_position", symbol="BTCUSDT")
    [big] = add(r, 1, decision="SKIP", blob="x" * 20_000)
    add(r, 2, decision="SKIP", reason="no_position", symbol="BTCUSDT")
    real = client_module._parser_for
    monkeypatch.setattr(client_module, "_parser_for", lambda _budget: real(8 << 10))

    async def go() -> None:
        store, c = await ready(redis_server, "A")
        with pytest.raises(ReplyTooLarge):
            await store.read_new(10, None)  # delivers all five: pending under A
        assert await c.recover_own() == 5  # before the fix: ReplyTooLarge escaped
        await close(store)

    run(go)
    assert not r.xpending(STREAM, GROUP)["pending"]
    [(_, fields)] = r.xrange(keys.INVALID)
    assert fields[b"id"] == big
    assert fields[b"cause"].startswith(b"oversize: its reply passed the read budget")
    assert bucket_total(r) == 5
    assert bucket_total(r, "reason:oversize") == 1
    assert int(r.hget(keys.STATUS, "processed_total")) == 5


def test_poison_entry_is_counted_once_as_unknown_with_its_delivery_count(
    r: RawRedis, redis_server: RedisServer
) -> None:
    [entry_id] = add(r, 1)

    async def go() -> None:
        store, c = await ready(redis_server, "A", max_deliveries=3)
        await store.read_new(10, None)
        for _ in range(3):  # three more deliveries, never counted
            await store.client.xclaim(STREAM, GROUP, "A", 0, [entry_id])
        await c.recover_own()
        await close(store)

    run(go)
    [(_, fields)] = r.xrange(keys.INVALID)
    assert fields[b"cause"].startswith(b"delivered 5 times")
    assert bucket_total(r) == 1
    assert r.xpending(STREAM, GROUP)["pending"] == 0


def test_departed_consumer_is_removed_only_when_it_owns_nothing(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """Of the group's consumers, only p35's (named in the set) that own nothing, have no
    lease and are idle long enough are removed, and never the caller itself."""
    add(r, 3)

    async def go() -> tuple[Departed, Departed]:
        store, _ = make(redis_server, "A")
        await store.ensure_group()
        await store.client.xreadgroup(GROUP, "dead-with-work", {STREAM: ">"}, count=1)
        await store.client.xgroup_createconsumer(STREAM, GROUP, "dead-idle")
        await store.client.xgroup_createconsumer(STREAM, GROUP, "alive-idle")
        await store.client.xgroup_createconsumer(STREAM, GROUP, "someone-else")
        await store.client.xgroup_createconsumer(STREAM, GROUP, "A")
        await store.client.sadd(keys.CONSUMERS, "dead-with-work", "dead-idle", "alive-idle", "A")
        await store.client.set(keys.lease("alive-idle"), "token")
        too_recent = await store.forget_departed(min_idle_ms=60_000, max_removed=10)
        done = await store.forget_departed(min_idle_ms=0, max_removed=10)
        await close(store)
        return too_recent, done

    too_recent, done = run(go)
    assert too_recent == Departed(0, False, [])
    # A consumer p35 never used (another client's: a deadlock guard's) is never removed.
    assert done == Departed(1, False, [b"dead-idle"])
    names = {c["name"] for c in r.xinfo_consumers(STREAM, GROUP)}
    assert names == {b"dead-with-work", b"alive-idle", b"someone-else", b"A"}
    assert r.smembers(keys.CONSUMERS) == {b"dead-with-work", b"alive-idle", b"A"}


def test_departed_consumers_are_removed_in_bounded_batches(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """Issue 27 #4: many departed consumers go in one script call each batch, at most
    `max_removed` a call, which says whether more are left."""
    r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    pipe = r.pipeline(transaction=False)
    for i in range(25):
        pipe.xgroup_createconsumer(STREAM, GROUP, f"p35-{i:02d}")
        pipe.sadd(keys.CONSUMERS, f"p35-{i:02d}")
    pipe.execute()

    async def go() -> list[Departed]:
        store, _ = make(redis_server, "A")
        calls = [await store.forget_departed(0, 10) for _ in range(4)]
        await close(store)
        return calls

    calls = run(go)
    assert [(c.removed, c.more) for c in calls] == [(10, True), (10, True), (5, False), (0, False)]
    assert calls[0].names == [b"p35-00", b"p35-01", b"p35-02"]  # the first few, for the log
    assert r.xinfo_groups(STREAM)[0]["consumers"] == 0
    assert r.scard(keys.CONSUMERS) == 0


def test_claiming_entries_trimmed_while_pending_reports_them(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """A dead consumer's entries, partly trimmed: the claimer counts the rest, reports the gone."""
    add(r, 10)

    async def go() -> int:
        store, _ = await ready(redis_server, "claimer", claim_min_idle_sec=0.001)
        await store.client.xreadgroup(GROUP, "dead", {STREAM: ">"}, count=10)
        await store.client.xtrim(STREAM, maxlen=4, approximate=False)
        _, claimer = make(redis_server, "claimer", claim_min_idle_sec=0.001)
        claimer.store = store
        await asyncio.sleep(0.01)
        claimed = await claimer.claim()
        await close(store)
        return claimed

    assert run(go) == 4
    assert int(r.hget(keys.STATUS, "trimmed_total")) == 6
    assert int(r.hget(keys.STATUS, "processed_total")) == 4
    assert int(r.hget(keys.STATUS, "reclaimed_total")) == 4
    assert r.xpending(STREAM, GROUP)["pending"] == 0


def test_buckets_expire_at_their_minute_start_plus_the_ttl(
    r: RawRedis, redis_server: RedisServer
) -> None:
    [entry_id] = add(r, 1)

    count_all(redis_server, bucket_ttl_sec=3600)
    minute = keys.minute_of_id(entry_id)
    bucket = keys.bucket(minute)
    assert r.execute_command("EXPIRETIME", bucket) == minute * 60 + 3600
    assert r.execute_command("EXPIRETIME", keys.bucket_meta(minute)) == minute * 60 + 3600


def test_an_entry_older_than_the_bucket_ttl_leaves_no_key_without_a_lifetime(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """A fresh bucket whose expiry has passed (an entry older than P35_BUCKET_TTL_SEC)
    used to be expired before `rolled` was written to its meta hash, which that write
    then made again with no TTL: a key kept forever, once per such minute. Two flushes
    of that minute leave no bucket key without a lifetime, and the counts reach the day."""
    sec, _ = r.time()
    minute = sec // 60 - 180  # three hours old, with a one-hour TTL
    for i in range(2):
        r.xadd(STREAM, {"symbol": "BTCUSDT", "executed": "true"}, id=f"{minute * 60_000 + i + 1}-0")
        r.delete(keys.lease("A"))  # the last run's (count_all does not release it)
        count_all(redis_server, bucket_ttl_sec=3600)
        lifeless = [
            key
            for pattern in ("quantum:p35:bucket*", "quantum:p35:rollcopy:*", "quantum:p35:daily*")
            for key in r.scan_iter(pattern)
            if r.ttl(key) == -1
        ]
        assert lifeless == [], f"flush {i + 1}: keys without a TTL"
    assert r.hget(keys.daily(minute // 1440), "decision:EXECUTE") == b"2"


def test_a_script_redis_lost_is_loaded_again(r: RawRedis, redis_server: RedisServer) -> None:
    """After SCRIPT FLUSH (or a restart without persistence of the script cache) the next
    call loads the script again: NOSCRIPT never reaches the consumer."""
    add(r, 4)

    async def go() -> int:
        store, c = await ready(redis_server, "A")
        c.ingest(await store.read_new(2, None))
        await c.flush()
        await store.client.script_flush()
        c.ingest(await store.read_new(2, None))
        await c.flush()
        await close(store)
        return c.counted

    assert run(go) == 4
    assert int(r.hget(keys.STATUS, "processed_total")) == 4


# -- the daily roll-up -------------------------------------------------------------------


def rollup_view(fields: dict[bytes, bytes]) -> dict[str, int]:
    """What of a bucket a daily rollup sums: decision, reason and symbol_decision fields."""
    return {
        k.decode(): int(v)
        for k, v in fields.items()
        if k.startswith((b"decision:", b"reason:", b"symbol_decision:"))
    }


def test_each_count_reaches_the_daily_rollup_once_by_the_roll_up_or_by_a_late_flush(
    r: RawRedis, redis_server: RedisServer
) -> None:
    sec, _ = r.time()
    now_minute = sec // 60
    late, old = now_minute - 5, now_minute - (2880 - 5)  # old: its bucket expires in 5 min
    day_of = {m: keys.daily(m // 1440) for m in (late, old)}

    def xadd(minute: int, seq: int, **fields: str) -> None:
        r.xadd(STREAM, fields, id=f"{minute * 60_000 + seq}-0")

    async def go() -> None:
        store, c = await ready(redis_server, "A")
        roller = Roller(store.s, store.client)

        async def count() -> None:
            c.ingest(await store.read_new(100, None))
            await c.flush()

        # A bucket about to expire is not left for the roll-up: counted into its day at once.
        xadd(old, 1, symbol="ETHUSDT", executed="true")
        await count()
        assert rollup_view(r.hgetall(day_of[old])) == rollup_view(r.hgetall(keys.bucket(old)))
        assert r.hget(keys.bucket_meta(old), "rolled") == b"1"
        assert not r.hexists(keys.UNROLLED, str(old))

        # A bucket is listed until the roll-up adds it, once.
        for i in range(3):
            xadd(late, i + 1, symbol="BTCUSDT", executed="false", error="risk_paused")
        await count()
        assert r.hexists(keys.UNROLLED, str(late))
        late_day_before = rollup_view(r.hgetall(day_of[late]))
        assert await roller.run(now_minute) == 1
        assert await roller.run(now_minute) == 0  # struck off: nothing twice
        assert not r.hexists(keys.UNROLLED, str(late))

        # A late entry for the rolled minute: its flush adds it to the rollup itself.
        xadd(late, 10, symbol="BTCUSDT", decision="SKIP", error="no_position")
        await count()
        assert await roller.run(now_minute, everything=True) == 0
        await close(store)
        got = rollup_view(r.hgetall(day_of[late]))
        want = dict(late_day_before)
        for field, n in rollup_view(r.hgetall(keys.bucket(late))).items():
            want[field] = want.get(field, 0) + n
        assert got == want
        assert got["decision:BLOCKED"] - late_day_before.get("decision:BLOCKED", 0) == 3
        assert got["decision:SKIP"] - late_day_before.get("decision:SKIP", 0) == 1

    run(go)


def test_two_buckets_of_one_day_counted_directly_in_one_flush_keep_its_distinct_counts(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """Both minutes are about to expire, so their counts go to their day at once, in one
    script: the second must start from the day as the first left it."""
    sec, _ = r.time()
    first = sec // 60 - (2880 - 5)
    if (first + 1) // 1440 != first // 1440:
        first -= 1  # both minutes in one UTC day
    for i, (minute, reason) in enumerate(
        [(first, "gate_a"), (first, "gate_b"), (first + 1, "gate_c"), (first + 1, "gate_d")]
    ):
        body = {"symbol": f"S{i}USDT", "executed": "false", "error": reason}
        r.xadd(STREAM, body, id=f"{minute * 60_000 + i + 1}-0")  # fmt: skip

    count_all(redis_server)
    day = first // 1440
    fields = r.hkeys(keys.daily(day))
    meta = r.hgetall(keys.daily_meta(day))
    assert int(meta[b"reasons"]) == sum(f.startswith(b"reason:") for f in fields) == 4
    assert int(meta[b"symbols"]) == sum(k.startswith(b"s:") for k in meta) == 4


def test_a_bucket_from_before_the_roll_up_keeps_counting_into_its_day_directly(
    r: RawRedis, redis_server: RedisServer
) -> None:
    """Its counts went to its day with each flush (no `rolled` in its meta): after an
    upgrade, later ones must too, since no roll-up will ever take them there."""
    sec, _ = r.time()
    minute = sec // 60 - 3
    day = keys.daily(minute // 1440)
    r.hset(keys.bucket(minute), mapping={"decision:EXECUTE": 2})
    r.hset(keys.bucket_meta(minute), mapping={"decision:EXECUTE": 2, "reasons": 1, "v": 1})
    r.hset(day, mapping={"decision:EXECUTE": 2})
    r.xadd(STREAM, {"symbol": "BTCUSDT", "executed": "true"}, id=f"{minute * 60_000 + 1}-0")

    count_all(redis_server)
    assert r.hget(day, "decision:EXECUTE") == b"3"
    assert not r.hexists(keys.UNROLLED, str(minute))


def test_the_roll_up_leaves_the_current_minute_until_it_is_quiet(
    r: RawRedis, redis_server: RedisServer
) -> None:
    async def go() -> None:
        store, c = await ready(redis_server, "A")
        roller = Roller(store.s, store.client)
        add(r, 4)
        c.ingest(await store.read_new(100, None))
        await c.flush()
        (minute,) = (int(m) for m in r.hkeys(keys.UNROLLED))
        assert roller.left is None  # not run yet: unknown
        assert await roller.run(minute) == 0  # the current minute, still changing
        assert roller.left == 1  # ... and still listed: the service rolls again when idle
        assert await roller.run(minute, quiet={minute}) == 1
        assert roller.left == 0
        await close(store)
        day = keys.daily(minute // 1440)
        assert rollup_view(r.hgetall(day)) == rollup_view(r.hgetall(keys.bucket(minute)))

    run(go)


BUSY_SCRIPT = """
local t = redis.call('TIME')
while true do
  local n = redis.call('TIME')
  if (n[1] - t[1]) * 1000000 + (n[2] - t[2]) > 1500000 then return 1 end
end
"""

LOOKUPS: dict[str, Callable[[Any, Settings], Awaitable[object]]] = {
    "group": lambda client, s: find_group(client, STREAM, GROUP),
    "permissions": lambda client, s: permissions.denied(client, s, "c"),
}


@pytest.mark.parametrize("what", list(LOOKUPS))
def test_a_busy_redis_is_an_outage_to_a_lookup_not_its_answer(
    redis_server: RedisServer, r: RawRedis, settings_for: Callable[..., Settings], what: str
) -> None:
    """While another client's script runs past busy-reply-threshold, Redis answers BUSY.
    `find_group` took any error reply for "no group" (`p35 check` then said the group was
    missing), and the start-up permission check for "cannot check"; the refusal now
    reaches the caller, which waits it out as an outage."""
    r.xgroup_create(STREAM, GROUP, id="0", mkstream=True)
    s = settings_for()
    lookup = LOOKUPS[what]
    r.config_set("busy-reply-threshold", 100)
    other = RawRedis(port=redis_server.port)
    busy = threading.Thread(target=other.eval, args=(BUSY_SCRIPT, 0))

    async def look(while_busy: bool) -> object:
        client = connect(s)
        try:
            found = await lookup(client, s)
            while while_busy and busy.is_alive():  # each waits for the script, then BUSY
                found = await lookup(client, s)
            return found
        finally:
            await client.aclose()

    try:
        busy.start()
        with pytest.raises(Refusing, match=r"^BUSY "):
            run(lambda: look(while_busy=True))
    finally:
        busy.join()
        r.config_set("busy-reply-threshold", 5000)
        other.close()
    assert run(lambda: look(while_busy=False)) is not None  # the answer, once Redis is free


def test_the_heartbeat_is_dated_by_redis_clock_not_the_daemons(
    r: RawRedis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon host whose clock runs an hour fast dated its heartbeat an hour ahead, so a
    dead service passed `p35 check` for an hour (issue 27 #3): `last_ts` is Redis's time."""
    from decision_intel.daemon import status
    from decision_intel.daemon.metrics import Metrics

    fast = time.time() + 3600
    monkeypatch.setattr(status.time, "time", lambda: fast)

    async def go() -> None:
        store, _ = await ready(redis_server, "A")
        await status.Heartbeat(store.s, store, Metrics()).beat(0)
        await close(store)

    run(go)
    sec, usec = r.time()
    for key in (keys.STATUS, keys.consumer_status("A")):
        last_ts = float(r.hget(key, "last_ts") or 0)
        assert 0 <= sec + usec / 1e6 - last_ts < 5, (key, last_ts)
