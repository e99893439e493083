"""The flush script's steps (lua/flush_lib.lua) through EVAL on a real redis-server.

Each test lays a batch out with store/flush.py as the daemon does, then runs either
one step (the library plus a few lines calling it) or the whole script, and checks
what Redis holds: a refused flush writes nothing, an applied one counts and
acknowledges together.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from decision_intel import keys
from decision_intel.model.batch import Batch
from decision_intel.model.classify import Classification
from decision_intel.settings import Settings
from decision_intel.store import scripts
from decision_intel.store.flush import APPLIED, NOT_OURS, REFUSED, flush_args, flush_keys
from tests.helpers import GROUP, RawRedis
from tests.traffic import STREAM

SKIP = Classification("SKIP", "no_position", "BTCUSDT", None)
UNKNOWN = Classification("UNKNOWN", "none", None, "no decision")


def entries(r: RawRedis, minutes: list[int], per_minute: int = 2) -> list[bytes]:
    """Entries with IDs in the given minutes, read by consumer A (pending under A)."""
    ids = []
    for m in minutes:
        for seq in range(per_minute):
            ids.append(r.xadd(STREAM, {"decision": "SKIP"}, id=f"{m * 60_000 + 7}-{seq}"))
    r.xgroup_create(STREAM, GROUP, id="0")
    r.xreadgroup(GROUP, "A", {STREAM: ">"})
    return ids


def batch(ids: list[bytes], unknown: int = 0) -> Batch:
    b = Batch()
    for i, entry_id in enumerate(ids):
        b.add(entry_id, {b"decision": b"SKIP"}, UNKNOWN if i < unknown else SKIP)
    return b


def eval_flush(r: RawRedis, s: Settings, b: Batch, consumer: str, body: str | None = None) -> Any:
    """The whole script, or `body` run after the flush library."""
    text = scripts.source("flush") if body is None else scripts.library("flush") + body
    ks = flush_keys(consumer)
    args = flush_args(s, b, consumer=consumer, token="tok", lease_ms=15_000, now_ms=now_ms())
    return r.eval(text, len(ks), *ks, *args)


def now_ms() -> int:
    return int(time.time() * 1000)


def db(r: RawRedis) -> dict[bytes, bytes | None]:
    """Every key and its serialized value: what 'nothing written' compares."""
    return {k: r.dump(k) for k in r.keys("*")}


@pytest.fixture
def s(r: RawRedis, settings_for: Any) -> Settings:
    return settings_for(consumer="A")


def test_ownership_step_names_the_ids_another_consumer_holds(r: RawRedis, s: Settings) -> None:
    minute = now_ms() // 60_000 - 1
    ids = entries(r, [minute], per_minute=4)
    r.xclaim(STREAM, GROUP, "C", 0, [ids[1], ids[3]])  # claimed away from A
    step = "local a = flush_read(KEYS, ARGV); return flush_owned(a)"
    assert eval_flush(r, s, batch(ids), "A", step) == [ids[1], ids[3]]
    assert eval_flush(r, s, batch(ids), "B", step) == ids  # B holds none of them


def test_a_flush_of_ids_not_ours_is_refused_and_writes_nothing(r: RawRedis, s: Settings) -> None:
    minute = now_ms() // 60_000 - 1
    ids = entries(r, [minute], per_minute=3)
    r.xclaim(STREAM, GROUP, "C", 0, [ids[2]])
    before = db(r)
    reply = eval_flush(r, s, batch(ids), "A")
    assert reply == [NOT_OURS, ids[2]]
    assert db(r) == before  # no lease taken, no count, no XACK
    assert r.xpending(STREAM, GROUP)["pending"] == 3


@pytest.mark.parametrize("planted", ["second_bucket", "invalid_stream", "settled"])
def test_a_half_valid_batch_is_refused_before_any_write(
    r: RawRedis, s: Settings, planted: str
) -> None:
    """Two minutes, one UNKNOWN entry; one key the flush would write holds the wrong type.
    The first minute is valid, but the plan step refuses the whole batch and the script
    writes nothing: not the first bucket, not the lease, no XACK."""
    first = now_ms() // 60_000 - 3
    ids = entries(r, [first, first + 1])
    wrong = {
        "second_bucket": keys.bucket(first + 1),
        "invalid_stream": keys.INVALID,
        "settled": keys.SETTLED,
    }[planted]
    r.set(wrong, "planted")
    b = batch(ids, unknown=1)
    step = "local a = flush_read(KEYS, ARGV); local plan, why = flush_plan(a); return why"
    assert eval_flush(r, s, b, "A", step) == b"wrong type"
    before = db(r)
    assert eval_flush(r, s, b, "A") == [REFUSED, b"wrong type"]
    assert db(r) == before
    assert r.xpending(STREAM, GROUP)["pending"] == 4
    assert not r.exists(keys.bucket(first), keys.lease("A"), keys.STATUS)


def test_a_bad_number_is_refused_before_any_write(r: RawRedis, s: Settings) -> None:
    ids = entries(r, [now_ms() // 60_000 - 1])
    ks = flush_keys("A")
    args = flush_args(s, batch(ids), consumer="A", token="tok", lease_ms=15_000, now_ms=-5)
    before = db(r)
    assert r.eval(scripts.source("flush"), len(ks), *ks, *args) == [REFUSED, b"bad number"]
    assert db(r) == before


def test_counts_and_acknowledgements_land_together(r: RawRedis, s: Settings) -> None:
    """Two minutes of entries, one UNKNOWN: each bucket holds its minute's counts, the
    group has nothing pending, the totals and the invalid record moved with them."""
    first = now_ms() // 60_000 - 3
    ids = entries(r, [first, first + 1], per_minute=3)
    assert eval_flush(r, s, batch(ids, unknown=1), "A") == [APPLIED, 6, 0, 0]
    assert r.xpending(STREAM, GROUP)["pending"] == 0
    assert r.hgetall(keys.bucket(first)) == {
        b"decision:UNKNOWN": b"1",
        b"decision:SKIP": b"2",
        b"reason:none": b"1",
        b"reason:no_position": b"2",
        b"symbol_decision:BTCUSDT:SKIP": b"2",
        b"symbol_reason:BTCUSDT:no_position": b"2",
    }
    assert r.hget(keys.bucket(first + 1), "decision:SKIP") == b"3"
    assert r.hget(keys.STATUS, "processed_total") == b"6"
    assert r.hget(keys.STATUS, "invalid_total") == b"1"
    assert r.hget(keys.STATUS, "last_id") == ids[-1]
    assert r.xlen(keys.INVALID) == 1
    assert r.get(keys.lease("A")) == b"tok"
    # The same flush again (a retry after a lost reply): not ours any more, nothing twice.
    assert eval_flush(r, s, batch(ids, unknown=1), "A")[0] == NOT_OURS
    assert r.hget(keys.STATUS, "processed_total") == b"6"


def test_a_lease_another_process_holds_stops_the_flush_first(r: RawRedis, s: Settings) -> None:
    ids = entries(r, [now_ms() // 60_000 - 1])
    r.set(keys.lease("A"), "someone-else")
    assert eval_flush(r, s, batch(ids), "A", "return flush_lease(flush_read(KEYS, ARGV))") is None
    before = db(r)
    assert eval_flush(r, s, batch(ids), "A") == [2]
    assert db(r) == before


def test_the_header_is_read_by_name(r: RawRedis, s: Settings) -> None:
    """flush_read sees each fixed argument under the name store/flush.py gave it."""
    ids = entries(r, [now_ms() // 60_000 - 1])
    body = (
        "local a = flush_read(KEYS, ARGV)\n"
        "return {a.stream, a.group, a.consumer, a.min_id, a.max_id, a.n_ids, a.status}"
    )
    assert eval_flush(r, s, batch(ids), "A", body) == [
        STREAM.encode(),
        GROUP.encode(),
        b"A",
        ids[0],
        ids[-1],
        len(ids),
        keys.STATUS.encode(),
    ]
