"""`p35 why`: the reads behind the diagnosis (diagnose.py does the reasoning).

Bounded: the window's buckets (at most 60), then for the gates that matter a few
fields per minute of history (the meta hash's decision/reason copy, or one symbol's
fields), read back in growing chunks only as far as a gate's run goes (at most the
buckets' 48 h); the same minutes a day and a week before, or that day's rollup; and
one bounded read of the newest stream entries (lua/recent.lua).
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.model import losses as loss_records
from decision_intel.model.admission import refusal
from decision_intel.model.classify import DECISIONS, Classifier
from decision_intel.model.diagnose import (
    Baseline,
    Diagnosis,
    Evidence,
    diagnose,
    gates,
)
from decision_intel.model.gate_shape import Onset, onset
from decision_intel.model.windows import Counts, parse_bucket, summed, window_sum
from decision_intel.settings import Settings
from decision_intel.store import audit, scripts
from decision_intel.store.client import find_group
from decision_intel.store.reads import measured_entry, read_minutes, redis_now_s
from decision_intel.text import count, safe, safe_map, safe_name

FIRST_CHUNK_MIN = 60
"""History read before the window at first; each further read doubles it."""
DETAIL_MAX = 120
RECENT_BUDGET_BYTES = 4 << 20


async def _window(client: aioredis.Redis, minutes: range, symbol: str | None) -> dict[int, Counts]:
    """Each minute's decisions and reasons (one symbol's with `symbol`). The meta hashes
    carry the bucket's decision/reason copy; one symbol's fields are then picked out of
    the buckets by name, for the reasons its minute has."""
    series = await read_minutes(client, minutes)
    if symbol is not None:
        mine = {m: list(c.reasons) for m, c in series.items()}
        series = await _series_by_reasons(client, mine, symbol)
    return series


async def _series_by_reasons(
    client: aioredis.Redis, reasons: dict[int, list[str]], symbol: str
) -> dict[int, Counts]:
    """One symbol's counts of each minute, for the reasons that minute has."""
    async with client.pipeline(transaction=False) as pipe:
        for m, names in reasons.items():
            pipe.hmget(keys.bucket(m), _fields(symbol, names))
        replies = await pipe.execute()
    out = {}
    for (m, names), values in zip(reasons.items(), replies, strict=True):
        out[m] = _counts(_fields(symbol, names), values, symbol)
    return out


async def _per_symbol(client: aioredis.Redis, window: str, reasons: list[str]) -> dict[str, Counts]:
    """Each symbol's decisions and its counts of `reasons` in the window, from the
    per-symbol snapshot keys (the busiest P35_SNAPSHOT_SYMBOLS symbols, rebuilt every
    P35_SNAPSHOT_INTERVAL_SEC). A gate over 10 % of a symbol's decisions is always among
    its top 10 reasons there; one missing from them counts as 0."""
    names = sorted(safe(m) for m in await client.smembers(keys.symbols_in(window)))
    async with client.pipeline(transaction=False) as pipe:
        for sym in names:
            pipe.hgetall(keys.symbol_decision_counts(sym, window))
            pipe.zmscore(keys.symbol_reason_top(sym, window), reasons)
        replies = await pipe.execute()
    out = {}
    for i, sym in enumerate(names):
        decisions, scores = replies[2 * i], replies[2 * i + 1]
        if decisions:
            out[sym] = Counts(
                {safe_name(k): n for k, v in decisions.items() if (n := count(v)) is not None},
                {r: n for r, s in zip(reasons, scores or [], strict=False) if (n := count(s))},
            )
    return out


def _counts(fields: list[str], values: list[Any], symbol: str | None) -> Counts:
    """What an HMGET of `fields` brought, read as a bucket is (one symbol's, with `symbol`)."""
    got = {f.encode(): v for f, v in zip(fields, values, strict=True) if v is not None}
    counts = parse_bucket(got)
    return counts if symbol is None else counts.symbols.get(symbol, Counts())


def _fields(symbol: str | None, reasons: list[str]) -> list[str]:
    return [keys.decision_field(d, symbol) for d in DECISIONS] + [
        keys.reason_field(r, symbol) for r in reasons
    ]


async def _series(
    client: aioredis.Redis, minutes: range, symbol: str | None, reasons: list[str]
) -> dict[int, Counts]:
    """The decisions and the given reasons' counts of each minute, a few fields each."""
    fields = _fields(symbol, reasons)
    key = keys.bucket_meta if symbol is None else keys.bucket
    out: dict[int, Counts] = {}
    for start in range(0, len(minutes), 240):
        chunk = minutes[start : start + 240]
        async with client.pipeline(transaction=False) as pipe:
            for m in chunk:
                pipe.hmget(key(m), fields)
            replies = await pipe.execute()
        for m, values in zip(chunk, replies, strict=True):
            if any(v is not None for v in values):
                out[m] = _counts(fields, values, symbol)
    return out


def _baseline(series: dict[int, Counts], reasons: list[str], source: str) -> Baseline | None:
    total = summed(series.values())
    if not total.total:
        return None
    n = total.total
    return Baseline(
        n,
        total.decisions.get("EXECUTE", 0) / n,
        {r: total.reasons.get(r, 0) / n for r in reasons},
        source,
    )


async def _daily(
    client: aioredis.Redis, day: int, symbol: str | None, reasons: list[str]
) -> Baseline | None:
    fields = cast("dict[bytes, bytes]", await client.hgetall(keys.daily(day)))  # decode off
    if not fields:
        return None
    counts = parse_bucket(fields)
    if symbol is not None:
        per = counts.symbols.get(symbol)
        if per is None or not per.total:
            return None
        n = per.total
        return Baseline(n, per.decisions.get("EXECUTE", 0) / n, dict.fromkeys(reasons), "daily")
    return _baseline({0: counts}, reasons, "daily")


async def _recent(
    client: aioredis.Redis, s: Settings, classifier: Classifier, symbol: str | None
) -> list[tuple[str, str, str]]:
    if s.why_recent_entries == 0:
        return []
    rows = await scripts.load(client, "recent")(
        args=[
            s.stream,
            s.why_recent_entries,
            s.max_entry_fields,
            s.max_entry_bytes,
            RECENT_BUDGET_BYTES,
        ]
    )
    out = []
    for row in rows:
        entry_id, entry, size = measured_entry(row)
        # As the daemon counted it: an entry over the limits is UNKNOWN/oversize, its cause
        # its detail (the first fields it comes back cut to are not what it said).
        refused = refusal(size, s.max_entry_fields, s.max_entry_bytes)
        result = refused or classifier.classify(entry)
        if symbol is not None and result.symbol != symbol:
            continue
        raw = refused.cause if refused is not None else classifier.detail(entry)
        detail = safe(" ".join((raw or result.reason).split()))
        if len(detail) > DETAIL_MAX:
            detail = detail[:DETAIL_MAX] + "..."
        out.append((safe(entry_id), result.reason, detail))
    return out


async def why(client: aioredis.Redis, s: Settings, window: str, symbol: str | None) -> Diagnosis:
    """Read what the diagnosis needs and return its document (diagnose.diagnose)."""
    # The status before the clock: a heartbeat written during the reads below would date
    # it ahead of a clock read first, and "ahead" means written by another clock.
    status = safe_map(await client.hgetall(keys.STATUS))
    now_s = await redis_now_s(client)
    now_minute = int(now_s // 60)
    length = keys.WINDOWS[window]
    window_minutes = range(now_minute - length + 1, now_minute + 1)
    series = await _window(client, window_minutes, symbol)
    counts = window_sum(series, now_minute, length)
    th = s.why_thresholds(symbol)
    listed = [r for r, _ in gates(counts, th.gate_listed)]
    if symbol is None and listed:
        counts.symbols = await _per_symbol(client, window, listed)

    # Onsets: read history back in growing chunks while a gate's run reaches its edge.
    horizon = now_minute - s.bucket_ttl_sec // 60
    oldest = window_minutes.start
    onsets: dict[str, Onset] = {}
    chunk = FIRST_CHUNK_MIN
    pending = list(listed)
    exhausted = False  # a whole chunk without data: nothing older was recorded
    while pending:
        lo = max(horizon, oldest - chunk)
        if lo < oldest:
            older = await _series(client, range(lo, oldest), symbol, listed)
            exhausted = not older
            series.update(older)
            oldest = lo
        still = []
        for r in pending:
            found = onset(series, r, now_minute, oldest, length)
            onsets[r] = found
            needs_more = found.at_edge or (
                found.since_minute is not None and found.since_minute - length < oldest
            )
            if needs_more and oldest > horizon and not exhausted:
                still.append(r)
        pending = still
        chunk *= 2

    baselines: dict[str, Baseline | None] = {}
    for name, back in (("day_before", 1440), ("week_before", 10_080)):
        then = range(window_minutes.start - back, window_minutes.stop - back)
        found_b = _baseline(await _series(client, then, symbol, listed), listed, "buckets")
        if found_b is None and name == "week_before":
            found_b = await _daily(client, (now_minute - back) // 1440, symbol, listed)
        baselines[name] = found_b

    classifier = Classifier(s.vocabulary)
    recent = await _recent(client, s, classifier, symbol)
    group = await find_group(client, s.stream, s.group)  # live, not the last heartbeat's
    if group is not None:
        status["lag"] = "" if group["lag"] is None else str(group["lag"])
        status["pending_estimate"] = str(group["pending"])
    since_s = window_minutes.start * 60
    recorded = await audit.recent_losses(client)
    gap = loss_records.incomplete(recorded, since_s, now_s)
    evidence = Evidence(
        window=window,
        symbol=symbol,
        now_s=now_s,
        counts=counts,
        onsets=onsets,
        baselines=baselines,
        recent=recent,
        status=status,
        gate_decision=classifier.decision_for_reason,
        thresholds=th,
        incomplete=gap,
        incomplete_text=loss_records.incomplete_text(gap) if gap else "",
    )
    return diagnose(evidence)
