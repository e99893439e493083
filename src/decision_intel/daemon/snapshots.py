"""The 1m/5m/15m/1h snapshot keys, rebuilt once per interval across the whole group.

Every daemon asks for the snapshot lock about once a second; the lock lives one
interval, so whichever daemon gets it first after it lapses does the work and the
others skip. Window sums come from each bucket's meta hash, where the flush script
keeps a copy of the bucket's decision and reason fields (without the symbol fields
that can make a bucket thousands of fields long) and a change counter; minutes are
cached by that counter (store/reads.py's `MinuteCache`, as `p35 top` does), so a
rebuild re-reads only the minutes that changed.
Each window's keys, and the per-symbol keys of every symbol seen in the window,
are replaced by one script (`lua/snapshot.lua`), atomically: a reader sees the old
snapshot or the new one, never a missing or half-written key.
`quantum:p35:symbols:<w>` remembers which symbols have keys, so a symbol that
leaves a window loses them in the same step.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.model.windows import Counts, top, window_counts
from decision_intel.settings import Settings
from decision_intel.store import scripts
from decision_intel.store.reads import MinuteCache, off_loop, time_ms


class Snapshotter:
    def __init__(self, settings: Settings, client: aioredis.Redis, owner: str):
        self.s = settings
        self.client = client
        self.owner = owner
        # With the symbol breakdown, the bucket itself (it has every field); without it,
        # the meta hash's decision/reason copy is all there is to read.
        self._minutes = MinuteCache(
            client, keys.bucket if settings.symbol_breakdown else keys.bucket_meta
        )
        self.next_try_s = 0.0
        """This process's monotonic time when its own turn lapses (asking before is pointless)."""
        self._script = scripts.load(client, "snapshot")
        self.minutes: dict[int, Counts] = {}
        """The last rebuild's minute buckets (the last hour), for the alerts' onsets."""
        self._built: tuple[Any, ...] | None = None
        """What the last rebuild was made from (see `run`)."""
        self.quiet: frozenset[int] = frozenset()
        """Minutes whose bucket did not change between this process's last two runs."""
        self.turn_ms: int | None = None
        """Redis's time when this call took the group's turn (None: not this process's)."""
        self.idle = False
        """The last turn found nothing counted in the group since the one before."""
        self._mark: tuple[int, bytes | None] | None = None
        """(minute, the group's processed_total read before its load) of the last run that
        completed: a run whose write failed leaves it, so the next one reads again."""
        self._outlive = settings.bucket_ttl_sec >= (keys.LONGEST_WINDOW_MIN + 1) * 60
        """Every bucket of a window outlives it: within a minute, a window changes only
        when something is counted (a shorter TTL lets buckets expire inside windows)."""

    async def maybe_run(self, now_s: float) -> tuple[dict[str, Counts], int] | None:
        """Rebuild the snapshots if no daemon in the group has done so this interval: the
        windows and Redis's time (ms) when it did, None when another daemon had the lock.

        `now_s` is this process's monotonic clock: while the lock it took last is still
        held, asking again is pointless, so it asks once per interval, not every tick. The
        lock attempt, Redis's time and the group's processed_total travel in one round
        trip: every flush that changes a bucket moves that total in the same step, so
        while it stands still within a minute (idle), the turn reads no bucket."""
        self.turn_ms = None
        if now_s < self.next_try_s:
            return None
        interval_ms = max(1, int(self.s.snapshot_interval_sec * 1000))
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(keys.SNAPSHOT_LOCK, self.owner, nx=True, px=interval_ms)
            pipe.time()
            pipe.hget(keys.STATUS, "processed_total")
            got, now, processed = await pipe.execute()
        if not got:
            return None  # another daemon's turn; try again next tick
        self.next_try_s = now_s + interval_ms / 1000
        now_ms = self.turn_ms = time_ms(now)
        # No total yet: nothing was ever counted, which is a total too.
        windows = await self.run(now_ms, skip_unchanged=True, processed=processed or b"0")
        return None if windows is None else (windows, now_ms)

    async def run(
        self, now_ms: int, skip_unchanged: bool = False, processed: bytes | None = None
    ) -> dict[str, Counts] | None:
        """Rebuild every window from the buckets. With `skip_unchanged`, when no bucket
        changed since this process's last rebuild in the same minute, the windows would
        come out the same: only `snapshot_ts` moves (the keys say they are current), and
        None tells the caller there is nothing new to judge. Idle, that is most runs.
        `processed`, the group's processed_total read just before, tells without reading
        the buckets: the same as at the last run, in the same minute, nothing changed."""
        now_minute = now_ms // 60_000
        mark = (now_minute, processed)
        self.idle = skip_unchanged and processed is not None and mark == self._mark
        if self.idle and self._outlive:
            self.quiet = self._minutes.cached  # nothing changed since the last run
        else:
            buckets, signature = await self._load(now_minute)
            if not skip_unchanged or signature != self._built:
                self.minutes = buckets
                # The arithmetic runs off the event loop (here and below, reads.off_loop).
                windows = await off_loop(window_counts, buckets, now_minute)
                await self._write(windows, now_ms)
                self._built = signature
                self._mark = mark
                return windows
        self._mark = mark
        await self.client.hset(keys.STATUS, "snapshot_ts", f"{now_ms / 1000:.3f}")
        return None

    async def _load(self, now_minute: int) -> tuple[dict[int, Counts], tuple[Any, ...]]:
        """The live buckets of the last hour, and what identifies their contents (the
        minute and each bucket's change counter)."""
        minutes = range(now_minute - keys.LONGEST_WINDOW_MIN + 1, now_minute + 1)
        live, versions = await self._minutes.load(minutes)
        # The cache holds each minute as the last run saw it: those it need not re-read
        # did not change in between.
        self.quiet = frozenset(live) - self._minutes.changed
        return live, (now_minute, *versions)

    async def _write(self, windows: dict[str, Counts], now_ms: int) -> None:
        args = await off_loop(self._args, windows, now_ms)
        await self._script(keys=[keys.STATUS], args=args)

    def _args(self, windows: dict[str, Counts], now_ms: int) -> list[Any]:
        args: list[Any] = [self.s.snapshot_ttl_sec, f"{now_ms / 1000:.3f}", len(windows)]
        for window, counts in windows.items():
            args += [keys.decision_counts(window), keys.reason_top(window), keys.symbols_in(window)]
            # The per-symbol key names as prefix and suffix around the symbol ("\0" marks
            # where it goes): the script builds each key, and keys.py stays their one source.
            args += keys.symbol_decision_counts("\0", window).split("\0")
            args += keys.symbol_reason_top("\0", window).split("\0")
            self._counts_args(args, counts, self.s.top_reasons)
            busiest = sorted(counts.symbols.items(), key=lambda kv: (-kv[1].total, kv[0]))
            busiest = busiest[: self.s.snapshot_symbols]  # bounds the script's work and keys
            args.append(len(busiest))
            for symbol, per_symbol in busiest:
                args.append(symbol)
                self._counts_args(args, per_symbol, self.s.symbol_top_reasons)
        return args

    @staticmethod
    def _counts_args(args: list[Any], counts: Counts, top_n: int) -> None:
        if counts.total == 0:  # an empty window has no keys
            args += [0, 0]
            return
        args.append(len(counts.decisions))
        for name, n in counts.decisions.items():
            args += [name, n]
        ranked = top(counts.reasons, top_n)
        args.append(len(ranked))
        for name, n in ranked:
            args += [name, n]
