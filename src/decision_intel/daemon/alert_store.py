"""Alerts in Redis: open-alert state, the capped `quantum:p35:alerts` stream, recent events.

The rules are in `alerts.py` (pure); the decision to emit is made by
`lua/alert.lua` in one atomic step against the state hash, so de-duplication
holds across restarts and across several daemons.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import redis.asyncio as aioredis

from decision_intel import keys
from decision_intel.daemon.metrics import Metrics, OpenAlerts
from decision_intel.model import completeness
from decision_intel.model.alerts import (
    ENTRIES_LOST,
    NEW_GATE,
    NEW_GATE_DEDUP_MS,
    NEW_GATE_WINDOW,
    SEVERITY_RANK,
    SUPPRESSED,
    UNKNOWN_HIGH,
    AlertKey,
    Evaluation,
    GateHistory,
    StreamClock,
    diagnosis_fields,
    evaluate,
    new_gate_candidates,
)
from decision_intel.model.completeness import Audit
from decision_intel.model.windows import Counts
from decision_intel.settings import Settings
from decision_intel.store import scripts
from decision_intel.text import safe, safe_map

OWN_DEDUP_MS = {NEW_GATE: NEW_GATE_DEDUP_MS, ENTRIES_LOST: 1}
"""De-duplication of its own: a new gate once a day; every loss is sent (the audit
raises `entries_lost` only in a turn that found one)."""

Emitted = tuple[str, str, str]
"""(alert key `type|window|subject`, severity, `firing` or `resolved`)."""


class AlertStore:
    def __init__(
        self, settings: Settings, client: aioredis.Redis, log: Any, metrics: Metrics | None = None
    ):
        self.s = settings
        self.client = client
        self.log = log
        self.metrics = metrics or Metrics()
        self._script = scripts.load(client, "alert")

    async def open_keys(self) -> list[str]:
        return list(await self.open_state())

    async def open_state(self) -> dict[str, str]:
        """The open alerts in Redis's state: key `type|window|subject` -> last severity."""
        found: Any = await self.client.hgetall(keys.ALERT_STATE)
        out = {}
        for key, raw in found.items():
            try:
                severity = str(json.loads(raw)["severity"])
            except (ValueError, KeyError, TypeError):
                severity = "MEDIUM"  # a state written by hand: still open, still shown
            out[key.decode(errors="replace")] = severity
        return out

    async def run(
        self, windows: dict[str, Counts], now_ms: int, minutes: dict[int, Counts] | None = None
    ) -> None:
        """Evaluate the rules on the windows just built (once per interval per group), send
        what the state in Redis says to send, and log one line per event sent. `minutes`
        (the buckets the windows were built from) dates gate explosions and stuck symbols."""
        open_state = await self.open_state()
        evaluation = evaluate(
            windows,
            list(open_state),
            alert_windows=self.s.alert_window_list,
            mix_window=self.s.mix_window,
            min_decisions=self.s.alert_min_decisions,
            stuck_min_decisions=self.s.stuck_min_decisions,
            clock=await self.stream_clock(now_ms),
            history=await self.gate_history(windows, now_ms),
        )
        memo: dict[tuple[str, str], str] = {}
        for f in evaluation.firing:
            if f.subject == UNKNOWN_HIGH:
                f.fields["top_causes"] = await self.top_causes()
            elif minutes is not None:
                diagnosis_fields(f, windows, minutes, now_ms // 60_000, memo)
        await self.send(evaluation, now_ms, open_state)

    async def run_completeness(self, audit: Audit, now_ms: int) -> None:
        """The completeness audit's alerts (model/completeness.py), through the same
        de-duplicating state as the window alerts."""
        open_state = await self.open_state()
        evaluation = completeness.evaluate(audit, list(open_state), self.s.min_headroom_sec)
        if evaluation.firing or evaluation.resolved:
            await self.send(evaluation, now_ms, open_state)
        else:
            self.metrics.alerts_open(open_alerts(open_state))

    async def send(
        self, evaluation: Evaluation, now_ms: int, open_state: dict[str, str] | None = None
    ) -> None:
        """Send what the state in Redis says to send; one log line per event sent. With
        the state read before the evaluation, the open alerts after it go to the metrics."""
        by_key = {f.key: f for f in evaluation.firing}
        after = dict(open_state or {})
        for key, severity, state in await self.apply(evaluation, now_ms):
            alert_type, window, subject = AlertKey.parse(key)
            if state == "firing":
                if alert_type != SUPPRESSED:  # an event, never open state
                    after[key] = severity
                self.metrics.alert(alert_type, severity)
                fields = by_key[key].fields if key in by_key else {}
                self.log.warning(
                    "alert",
                    type=alert_type,
                    window=window,
                    subject=subject,
                    severity=severity,
                    **fields,
                )
            else:
                after.pop(key, None)
                self.log.info("alert.resolved", type=alert_type, window=window, subject=subject)
        if open_state is not None:
            self.metrics.alerts_open(open_alerts(after))

    async def gate_history(self, windows: dict[str, Counts], now_ms: int) -> GateHistory:
        """Which of the window's big gates the daily rollups of the 7 days before today
        hold: one pipelined round trip, only when there is a candidate."""
        today = now_ms // 86_400_000
        candidates = new_gate_candidates(windows[NEW_GATE_WINDOW], self.s.alert_min_decisions)
        if not candidates:
            return GateHistory(keys.day_label(today), frozenset(), any_history=False)
        fields = [keys.reason_field(g) for g in candidates]
        async with self.client.pipeline(transaction=False) as pipe:
            for day in range(today - 7, today):
                pipe.exists(keys.daily(day))
                pipe.hmget(keys.daily(day), fields)
            replies: Any = await pipe.execute()
        exists, values = replies[0::2], replies[1::2]
        known = {g for row in values for g, v in zip(candidates, row, strict=True) if v}
        return GateHistory(keys.day_label(today), frozenset(known), any_history=any(exists))

    async def top_causes(self, scan: int = 200, top: int = 3) -> str:
        """The commonest causes among the newest invalid records (a bounded read)."""
        rows: Any = await self.client.xrevrange(keys.INVALID, count=scan)
        causes = Counter(safe(fields.get(b"cause", b""))[:80] for _, fields in rows)
        return "; ".join(f"{cause} ({n})" for cause, n in causes.most_common(top))

    async def stream_clock(self, now_ms: int) -> StreamClock:
        total, last = await self.client.hmget(keys.STATUS, "future_ids_total", "future_id_last_ms")
        return StreamClock(int(total or 0), int(last) if last else None, now_ms)

    async def apply(self, evaluation: Evaluation, now_ms: int) -> list[Emitted]:
        args: list[Any] = [
            now_ms,
            int(self.s.alert_dedup_sec * 1000),
            self.s.alerts_maxlen,
            self.s.alerts_max_per_eval,
            len(evaluation.firing),
        ]
        for f in evaluation.firing:
            extra = {"subject": f.subject, **f.fields}
            own_dedup_ms = OWN_DEDUP_MS.get(f.type, 0)
            args += [f.key, f.type, f.window, f.severity, SEVERITY_RANK[f.severity], own_dedup_ms]
            args.append(len(extra))
            for name, value in extra.items():
                args += [name, value]
        args.append(len(evaluation.resolved))
        args += evaluation.resolved
        reply: Any = await self._script(keys=[keys.ALERT_STATE, keys.ALERTS], args=args)
        return [(row[0].decode(), row[1].decode(), row[2].decode()) for row in reply]


def open_alerts(state: dict[str, str]) -> OpenAlerts:
    """The state's keys as (type, window, subject) -> severity, for `p35_alert_open`."""
    out: OpenAlerts = {}
    for key, severity in state.items():
        if key.count("|") >= 2:
            alert_type, window, subject = AlertKey.parse(key)
            out[(alert_type, window, subject)] = severity
    return out


async def recent(client: aioredis.Redis, count: int) -> list[dict[str, str]]:
    """The newest alert events first, as text fields plus their stream `id`."""
    rows: Any = await client.xrevrange(keys.ALERTS, count=count)
    return [{"id": safe(entry_id), **safe_map(fields)} for entry_id, fields in rows]
