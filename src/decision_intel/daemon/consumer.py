"""The consumer loop: read, classify, batch, and flush (counts + XACK together).

Flushes happen when a read comes back short (caught up), when the batch reaches
`flush_max_entries`, and at the latest every `ack_interval_sec`. While draining,
a flush runs in the background: the next batch is read and classified while
Redis applies the previous one (one flush in flight at a time). Entries left
pending by dead consumers (or by this name before a restart) are reclaimed and go
through the same path. Nothing here retries on Redis errors: the service loop
does, and every step here is safe to repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

from decision_intel.daemon.metrics import Metrics
from decision_intel.keys import id_parts
from decision_intel.model.admission import classifier_failed, oversize, refusal, unreadable
from decision_intel.model.batch import Batch
from decision_intel.model.classify import Classifier
from decision_intel.settings import Settings
from decision_intel.store.client import Entry, Read, ReplyTooLarge, Sizes
from decision_intel.store.flush import FlushResult
from decision_intel.store.group import DEPARTED_NAMES_SHOWN, LeaseLost, Store
from decision_intel.text import safe

FORGET_PER_CALL = 5000
"""Departed consumers removed by one script call, one call a tick. Most of a call's time
is the walk of the group's consumers: about 50 ms of Redis for 20,000, 250 ms for
60,000 long names; each removal adds about 10 us."""
BOUNDED_FOR_S = 60.0
"""After a reply passed the byte budget, read through the bounded script this long."""


@dataclass
class _Sweep:
    """Departed consumers removed since the last log line."""

    removed: int = 0
    names: list[bytes] = field(default_factory=list)


async def pause(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set first. Cheaper than asyncio.wait_for,
    which makes a task of every wait: this runs at every linger and every tick."""
    if stop.is_set():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()


class Consumer:
    def __init__(self, settings: Settings, store: Store, log: Any, metrics: Metrics | None = None):
        self.s = settings
        self.store = store
        self.log = log
        self.metrics = metrics or Metrics()
        self.batch = Batch(settings.symbol_breakdown)
        self.classify = Classifier(settings.vocabulary).classify
        self.counted = 0
        self.excluded = 0
        self._last_flush = time.monotonic()
        self._inflight: asyncio.Future[FlushResult] | None = None
        """The one flush in flight. Single flight is what keeps counting exact while
        flushes overlap reads: a flush starts only after the previous one settled
        (`flush()` settles first), so two scripts never hold the same ID, and an entry
        re-read after a failure is flushed after the flush that may have counted it."""
        self._claim_due = 0.0
        self._claim_every_s = min(max(settings.claim_min_idle_sec / 2, 0.5), 10.0)
        self._caught_up = False
        self._flowing = False
        """The last linger's read found entries: the next one needs no blocking read."""
        self._bounded_until = 0.0
        self._skew_ms = settings.max_id_skew_sec * 1000
        self.read_high: bytes | None = None
        """The newest ID this daemon has read as new: the audit's read high-water mark."""
        self._sweep = _Sweep()

    # -- ingest ---------------------------------------------------------------

    def ingest(
        self,
        entries: list[Entry],
        *,
        reclaimed: bool = False,
        deliveries: dict[bytes, int] | None = None,
    ) -> None:
        """Classify entries into the batch. A `Read` says which entries are over the size
        limits (measured as it was parsed, or by lua/read.lua); others are measured here."""
        measured: Sizes | None = entries.oversize if isinstance(entries, Read) else None
        if entries and not reclaimed:
            newest = entries[-1][0]
            if self.read_high is None or id_parts(newest) > id_parts(self.read_high):
                self.read_high = newest
        breaks = set(entries.breaks) if isinstance(entries, Read) and not reclaimed else {0}
        batch = self.batch
        batch.clock(self.store.now_ms(), self._skew_ms)
        max_fields, max_bytes = self.s.max_entry_fields, self.s.max_entry_bytes
        max_deliveries, classify = self.s.max_deliveries, self.classify
        for i, (entry_id, fields) in enumerate(entries):
            if not reclaimed and i in breaks:
                batch.start_run()
            if reclaimed and entry_id in batch.items:
                continue  # re-read after a reconnect: already held, count it once
            if not fields:
                # History reads return deleted (trimmed) entries with no content.
                batch.add_trimmed(entry_id)
                continue
            if measured is None:
                size = oversize(fields, max_fields, max_bytes)
            else:
                size = measured.get(entry_id) if measured else None
            seen = deliveries.get(entry_id, 0) if deliveries else 0
            result = refusal(size, max_fields, max_bytes, seen, max_deliveries)
            if result is None:
                try:
                    result = classify(fields)
                except Exception as exc:  # never let one entry stop the loop
                    result = classifier_failed(exc)
            batch.add(entry_id, fields, result, reclaimed=reclaimed)

    # -- flush ----------------------------------------------------------------

    async def flush(self, *, wait: bool = True) -> None:
        """Count and acknowledge what the batch holds; `wait=False` returns once it is sent.

        A background flush whose connection fails drops its batch from memory: its
        entries stay pending under this name (or were acknowledged, if only the reply
        was lost) and `recover_own` re-reads whatever is still pending.
        """
        await self.settle()
        self._last_flush = time.monotonic()
        if not len(self.batch):
            return
        batch, self.batch = self.batch, Batch(self.s.symbol_breakdown)
        self._inflight = asyncio.ensure_future(self._timed_flush(batch))
        if wait:
            await self.settle()

    def drop_held(self) -> int:
        """Forget the entries read and not yet counted; returns how many. Only for when
        the group that delivered them is gone: the group made again delivers again
        those after its start."""
        held = len(self.batch)
        self.batch = Batch(self.s.symbol_breakdown)
        return held

    async def _timed_flush(self, batch: Batch) -> FlushResult:
        size, t0 = len(batch), time.perf_counter()
        result = await self.store.flush(batch, self.store.now_ms())
        if not result.lease_lost:
            self.metrics.flushed(result, size=size, seconds=time.perf_counter() - t0)
        return result

    async def settle(self) -> None:
        """Wait for the flush in flight, if any, and take its result."""
        if self._inflight is None:
            return
        task, self._inflight = self._inflight, None
        result = await task
        if result.lease_lost:
            raise LeaseLost(self.store.consumer)
        self.counted += result.counted
        if result.replayed and result.replay_range is not None:
            first, last = result.replay_range
            self.log.warning(
                "group.replayed",
                count=result.replayed,
                first_id=safe(first),
                last_id=safe(last),
                detail="delivered again after the group moved back; acknowledged, not counted",
            )
        if result.excluded:
            self.excluded += result.excluded
            self.log.info(
                "flush.excluded",
                entries=result.excluded,
                why="claimed by another consumer or already acknowledged",
            )

    async def _settle_after_outage(self) -> None:
        """Take the result of a flush left in flight by a failure; drop it if it failed too."""
        task = self._inflight
        if task is None:
            return
        await asyncio.wait([task])
        if task.cancelled() or task.exception() is not None:
            self._inflight = None  # its entries are still pending here: recover_own re-reads them
            return
        await self.settle()

    def _flush_due(self, caught_up: bool) -> bool:
        if not len(self.batch):
            return False
        return (
            caught_up
            or len(self.batch) >= self.s.flush_max_entries
            or time.monotonic() - self._last_flush >= self.s.ack_interval_sec
        )

    # -- recovery ---------------------------------------------------------------

    async def recover_own(self) -> int:
        """Re-read what is still pending under this consumer name, count it, flush."""
        await self.settle()  # what a flush in flight acknowledges is not re-read
        after = b"0"
        total = 0
        count = self.s.batch_size
        while True:
            try:
                entries = await self.store.read_bounded(after, count)
            except ReplyTooLarge:
                # The script's reply passed the budget after all: one entry a read from
                # here, and an entry too large for the budget alone is counted unread.
                if count > 1:
                    count = 1
                    continue
                unread = await self._count_unreadable(after)
                if unread is None:
                    break
                after, total = unread, total + 1
                continue
            if not entries:
                break
            deliveries = await self._deliveries(entries)
            self.ingest(entries, reclaimed=True, deliveries=deliveries)
            total += len(entries)
            after = entries[-1][0]
            if len(self.batch) >= self.s.flush_max_entries:
                await self.flush()
        await self.flush()
        return total

    async def _count_unreadable(self, after: bytes) -> bytes | None:
        """Count this consumer's next pending entry after `after`, whose reply passes the
        byte budget even alone, as UNKNOWN/oversize without its content (no read error may
        stop the loop, nor leave the entry pending for ever). Returns its ID (None: none)."""
        entry_id = await self.store.next_pending(after)
        if entry_id is None:
            return None
        budget = self.s.read_budget_bytes
        self.batch.clock(self.store.now_ms(), self._skew_ms)
        self.batch.add(entry_id, {}, unreadable(budget), reclaimed=True)
        self.log.warning("read.entry_unreadable", id=safe(entry_id), budget_bytes=budget)
        return entry_id

    async def claim(self) -> int:
        """XAUTOCLAIM entries idle past the claim time from any consumer (dead ones, mostly)."""
        start = b"0-0"
        claimed = 0
        for _ in range(100):  # bounded work per call; the rest waits for the next call
            try:
                start, entries, deleted = await self.store.autoclaim(start, self.s.batch_size)
            except ReplyTooLarge:
                # What it claimed is pending under our name now: re-read it, bounded.
                await self._after_large_reply()
                break
            if deleted:
                await self.store.add_trimmed(len(deleted))
                self.metrics.trimmed(len(deleted))
                self.log.warning("claim.trimmed", entries=len(deleted))
            if entries:
                self.ingest(entries, reclaimed=True, deliveries=await self._deliveries(entries))
                claimed += len(entries)
                if len(self.batch) >= self.s.flush_max_entries:
                    await self.flush()
            if start in (b"0-0", "0-0"):
                break
        if claimed:
            await self.flush()
            self.log.info("claim.reclaimed", entries=claimed)
        return claimed

    async def _deliveries(self, entries: list[Entry]) -> dict[bytes, int]:
        ids = [entry_id for entry_id, _ in entries]
        return await self.store.delivery_counts(
            min(ids, key=id_parts), max(ids, key=id_parts), len(ids)
        )

    # -- loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until `stop` is set. Re-entrant: the service calls it again after an outage."""
        await self._settle_after_outage()
        await self.recover_own()
        ahead: asyncio.Future[Read] | None = None
        try:
            while not stop.is_set():
                if time.monotonic() >= self._claim_due:
                    await self.claim()
                    self._claim_due = time.monotonic() + self._claim_every_s
                try:
                    if ahead is not None:
                        entries, ahead = await ahead, None
                    else:
                        entries = await self._read(stop)
                except ReplyTooLarge:
                    ahead = None
                    await self._after_large_reply()
                    continue
                self._caught_up = len(entries) < self.s.batch_size
                if not self._caught_up and not stop.is_set() and not self.bounded:
                    # Behind: Redis serves the next read while this batch is classified.
                    ahead = asyncio.ensure_future(self.store.read_new(self.s.batch_size, None))
                if entries:
                    self.ingest(entries)
                # Let go of this reply before waiting for the next one (held by the
                # read-ahead): a drain's peak memory is one reply lower.
                del entries
                if self._flush_due(self._caught_up):
                    await self.flush(wait=False)
                if self._caught_up:
                    await self.settle()  # take its result before a read that may block
        finally:
            # Entries a read-ahead received stay pending under this name: the next
            # run() (after an outage) or finish() (on stop) re-reads them.
            if ahead is not None:
                ahead.cancel()
                await asyncio.wait([ahead])
                if not ahead.cancelled():
                    ahead.exception()  # retrieved, so asyncio does not report it

    @property
    def bounded(self) -> bool:
        """Reading through the bounded script, after a reply passed the byte budget."""
        return time.monotonic() < self._bounded_until

    async def _after_large_reply(self) -> None:
        """A read's reply passed the byte budget and its connection was dropped: the
        entries it delivered are pending under our name. Re-read them, bounded, and
        keep reading that way for a while."""
        if not self.bounded:
            self.log.warning(
                "read.reply_too_large",
                budget_bytes=self.s.read_budget_bytes,
                detail=f"reading through the bounded script for {BOUNDED_FOR_S:.0f} s",
            )
        self._bounded_until = time.monotonic() + BOUNDED_FOR_S
        await self.recover_own()

    async def _read_bounded(self, stop: asyncio.Event) -> Read:
        entries = await self.store.read_bounded(">", self.s.batch_size)
        if not entries and self._caught_up:
            await pause(stop, self.s.block_ms / 1000)
        return entries

    async def _read(self, stop: asyncio.Event) -> Read:
        if self.bounded:
            return await self._read_bounded(stop)
        if not self._caught_up:
            return await self.store.read_new(self.s.batch_size, None)
        # Caught up: wait for something to arrive, then let more gather for the linger, and
        # read it all at once. One read, one flush per linger whatever the rate, so the
        # cost per entry falls with the rate instead of rising. A full read ends the
        # linger's work: the loop is behind again and reads ahead without waiting.
        # While entries keep coming, the wait is the linger alone: no blocking read first.
        first = Read((), {}) if self._flowing else await self._wait_and_read(stop)
        room = self.s.batch_size - len(first)
        if (not first and not self._flowing) or room <= 0 or self.s.flush_linger_ms == 0:
            return first
        await pause(stop, self.s.flush_linger_ms / 1000)
        if stop.is_set():
            return first  # flushed by finish(), with the rest re-read there
        entries = first.joined(await self.store.read_new(room, None))
        self._flowing = bool(entries)
        return entries

    async def _wait_and_read(self, stop: asyncio.Event) -> Read:
        # Idle: block, but give way at once to a stop request. A read cancelled after
        # Redis delivered it leaves entries pending under this name; `finish` re-reads them.
        read = asyncio.ensure_future(self.store.read_new(self.s.batch_size, self.s.block_ms))
        stopped = asyncio.ensure_future(stop.wait())
        done, _ = await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if read in done:
            return read.result()
        read.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await read
        return Read((), {})

    async def finish(self) -> None:
        """On shutdown: flush what was read, then anything delivered but not yet received."""
        await self._settle_after_outage()
        await self.flush()
        await self.recover_own()

    @property
    def caught_up(self) -> bool:
        return self._caught_up

    async def forget_departed(self) -> bool:
        """Remove consumers that left the group: p35's, idle past the claim time and two
        leases, owning nothing, with no live process on the name (checked in one script).
        At most FORGET_PER_CALL a call, so a tick stays short whatever the group holds;
        True: more are left, call again at the next tick. One log line per sweep (the
        calls until none is left), counting them all."""
        min_idle_ms = int(max(self.s.claim_min_idle_sec, 2 * self.s.lease_sec) * 1000)
        done = await self.store.forget_departed(min_idle_ms, FORGET_PER_CALL)
        sweep = self._sweep
        sweep.removed += done.removed
        sweep.names += done.names[: DEPARTED_NAMES_SHOWN - len(sweep.names)]
        if not done.more and sweep.removed:
            self.log.info(
                "consumers.removed",
                count=sweep.removed,
                names=[safe(name)[:200] for name in sweep.names],
                detail="p35 consumers that left the group, owning nothing",
            )
            self._sweep = _Sweep()
        return done.more
