"""Alert rules (pure) at and just under every threshold; de-duplication against a real Redis."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import redis
import structlog
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from decision_intel import keys
from decision_intel.daemon.alert_store import AlertStore, recent
from decision_intel.daemon.metrics import (
    MAX_OPEN_ALERT_SERIES,
    OPEN_ALERTS_FRESH_S,
    OpenAlertsCollector,
    PrometheusMetrics,
)
from decision_intel.devtools.testing import RedisServer
from decision_intel.model.alerts import (
    CRITICAL,
    HIGH,
    MEDIUM,
    decision_mix,
    diagnosis_fields,
    evaluate,
    gate_explosion,
    stuck_symbols,
)
from decision_intel.model.windows import Counts, window_counts
from decision_intel.settings import Settings
from decision_intel.store.client import connect
from tests.helpers import Daemon, RawRedis, run_p35, wait_for
from tests.traffic import STREAM


def window(total: int, reasons: dict[str, int], decisions: dict[str, int] | None = None) -> Counts:
    """A window of `total` decisions with the given reason counts (the rest `none`)."""
    reasons = {**reasons, "none": total - sum(reasons.values())}
    return Counts(decisions or {"BLOCKED": total}, {k: v for k, v in reasons.items() if v})


@pytest.mark.parametrize(
    ("gate", "severity"),
    [
        (40, MEDIUM),
        (39, None),
        (60, HIGH),
        (59, MEDIUM),
        (80, CRITICAL),
        (79, HIGH),
        (100, CRITICAL),
    ],
)
def test_gate_explosion_thresholds(gate: int, severity: str | None) -> None:
    hit = gate_explosion("5m", window(100, {"risk_paused": gate}), min_decisions=100)
    assert (hit.severity if hit else None) == severity
    if hit:
        assert hit.fields == {
            "reason": "risk_paused",
            "score": str(gate),
            "total": "100",
            "share": f"{gate / 100:.4f}",
        }


def test_gate_explosion_needs_enough_decisions() -> None:
    assert gate_explosion("5m", window(99, {"risk_paused": 99}), min_decisions=100) is None
    assert gate_explosion("5m", window(100, {"risk_paused": 99}), min_decisions=100) is not None


def test_none_never_alerts_even_at_every_decision() -> None:
    only_none = Counts({"EXECUTE": 500}, {"none": 500})
    assert gate_explosion("5m", only_none, min_decisions=100) is None
    # With `none` on top, the top *gate* is judged: 30 % is under every threshold.
    assert gate_explosion("5m", window(100, {"kill_switch_active": 30}), min_decisions=1) is None


def test_stuck_symbol_at_and_under_the_minimum_and_with_one_execute() -> None:
    def sym(decisions: dict[str, int], reasons: dict[str, int]) -> Counts:
        return Counts(decisions, reasons)

    w = Counts(
        symbols={
            "BTCUSDT": sym({"BLOCKED": 7, "SKIP": 3}, {"p33_permit_denied": 7, "no_position": 3}),
            "ETHUSDT": sym({"BLOCKED": 9}, {"risk_paused": 9}),  # 9 < 10
            "SOLUSDT": sym({"BLOCKED": 20, "EXECUTE": 1}, {"risk_paused": 20, "none": 1}),
            "XRPUSDT": sym({"SKIP": 12}, {"none": 12}),  # stuck, no gate at all
        }
    )
    hits = {f.subject: f for f in stuck_symbols(w, min_decisions=10)}
    assert set(hits) == {"BTCUSDT", "XRPUSDT"}
    assert hits["BTCUSDT"].fields["reason"] == "p33_permit_denied"
    assert hits["BTCUSDT"].fields["share"] == "0.7000"
    assert hits["XRPUSDT"].fields["reason"] == "none"


def test_gate_explosions_and_stuck_symbols_carry_their_onset_and_top_symbols() -> None:
    """The last hour's buckets: risk_paused on SOLUSDT and ETHUSDT from minute `jump` on."""
    now = 29_000_000
    jump = now - 20
    minutes = {}
    for m in range(now - 59, now + 1):
        c = Counts()
        for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"):
            gated = m >= jump and symbol in ("ETHUSDT", "SOLUSDT")
            per = (
                Counts({"BLOCKED": 30}, {"risk_paused": 30})
                if gated
                else Counts({"EXECUTE": 30}, {"none": 30})
            )
            c.symbols[symbol] = per
            c.add(Counts(dict(per.decisions), dict(per.reasons)))
        minutes[m] = c
    windows = window_counts(minutes, now)
    hits = evaluate(
        windows, [], alert_windows=["5m"], mix_window="15m", min_decisions=100,
        stuck_min_decisions=10,
    ).firing  # fmt: skip
    explosion = next(f for f in hits if f.type == "gate_explosion")
    stuck = next(f for f in hits if f.type == "stuck" and f.subject == "SOLUSDT")
    for f in (explosion, stuck):
        diagnosis_fields(f, windows, minutes, now)
        assert f.fields["since"] == str(jump * 60), f
    assert explosion.fields["top_symbols"] in (
        "ETHUSDT:0.50,SOLUSDT:0.50",
        "SOLUSDT:0.50,ETHUSDT:0.50",
    )


@pytest.mark.parametrize(
    ("decisions", "subjects"),
    [
        ({"EXECUTE": 20, "BLOCKED": 40, "SKIP": 40}, set()),  # every share on its threshold
        ({"EXECUTE": 19, "BLOCKED": 40, "SKIP": 41}, {"execute_low"}),
        ({"EXECUTE": 25, "SKIP": 71, "ERROR": 4}, {"skip_high"}),
        ({"EXECUTE": 25, "BLOCKED": 41, "SKIP": 34}, {"blocked_high"}),
        ({"EXECUTE": 90, "ERROR": 5, "SKIP": 5}, set()),
        ({"EXECUTE": 89, "ERROR": 6, "SKIP": 5}, {"error_high"}),
    ],
)
def test_decision_mix_rules_at_and_past_each_threshold(
    decisions: dict[str, int], subjects: set[str]
) -> None:
    counts = Counts(decisions, {"none": 100})
    assert {f.subject for f in decision_mix("15m", counts, min_decisions=100)} == subjects
    assert decision_mix("15m", Counts(decisions, {}), min_decisions=101) == []


def test_evaluate_resolves_only_what_fell_under_the_lowest_threshold() -> None:
    windows = {w: Counts() for w in keys.WINDOWS}
    windows["5m"] = window(200, {"risk_paused": 70, "kill_switch_active": 90})  # 45 %, 35 %
    windows["15m"] = Counts(
        {"EXECUTE": 50}, {"none": 50}, {"BTCUSDT": Counts({"EXECUTE": 1}, {"none": 1})}
    )
    open_keys = [
        "gate_explosion|5m|risk_paused",
        "gate_explosion|5m|other_gate",
        "stuck|15m|BTCUSDT",
        "stuck|15m|ETHUSDT",
        "decision_mix|15m|skip_high",
    ]
    ev = evaluate(
        windows,
        open_keys,
        alert_windows=["5m"],
        mix_window="15m",
        min_decisions=50,
        stuck_min_decisions=10,
    )
    assert [f.key for f in ev.firing] == ["gate_explosion|5m|kill_switch_active"]
    # risk_paused fell to 35 %: resolved. ETHUSDT left the window: resolved (an alert for
    # a symbol that is gone would stay open for good). BTCUSDT executed: resolved. SKIP is
    # at 0 %: resolved.
    assert sorted(ev.resolved) == sorted(
        [
            "gate_explosion|5m|risk_paused",
            "gate_explosion|5m|other_gate",
            "stuck|15m|BTCUSDT",
            "stuck|15m|ETHUSDT",
            "decision_mix|15m|skip_high",
        ]
    )


# -- de-duplication, escalation and resolution in Redis --------------------------------


def run_apply(server: RedisServer, steps: list[tuple[Counts, int]], **overrides: object) -> list:
    """Apply evaluations of a 5m window at the given times, each with a fresh AlertStore
    (as after a restart, or from another daemon); returns every emitted batch."""

    async def go() -> list:
        s = Settings(redis_url=server.url, alert_min_decisions=100, **overrides)  # type: ignore[arg-type]
        out = []
        for counts, now_ms in steps:
            client = connect(s)
            store = AlertStore(s, client, structlog.get_logger())
            windows = {w: Counts() for w in keys.WINDOWS}
            windows["5m"] = counts
            ev = evaluate(
                windows,
                await store.open_keys(),
                alert_windows=["5m"],
                mix_window="15m",
                min_decisions=100,
                stuck_min_decisions=10,
            )
            out.append(await store.apply(ev, now_ms))
            await client.aclose()
        return out

    return asyncio.run(go())


T0 = 1_795_000_000_000


def test_dedup_escalation_repeat_and_resolution(r: RawRedis, redis_server: RedisServer) -> None:
    key = "gate_explosion|5m|risk_paused"
    steps = [
        (window(100, {"risk_paused": 45}), T0),  # MEDIUM: sent
        (window(100, {"risk_paused": 50}), T0 + 60_000),  # MEDIUM again: held back
        (window(100, {"risk_paused": 65}), T0 + 120_000),  # HIGH: a rise, sent at once
        (window(100, {"risk_paused": 66}), T0 + 299_999 + 120_000),  # HIGH, < 5 min: held
        (window(100, {"risk_paused": 66}), T0 + 300_000 + 120_000),  # 5 min: sent again
        (window(100, {"risk_paused": 39}), T0 + 500_000),  # under 40 %: resolved
        (window(100, {"risk_paused": 39}), T0 + 510_000),  # nothing open: nothing
    ]
    emitted = run_apply(redis_server, steps)
    assert emitted == [
        [(key, MEDIUM, "firing")],
        [],
        [(key, HIGH, "firing")],
        [],
        [(key, HIGH, "firing")],
        [(key, HIGH, "resolved")],
        [],
    ]
    events = list(reversed(asyncio.run(_recent(redis_server))))
    assert [e["state"] for e in events] == ["firing", "firing", "firing", "resolved"]
    assert len({e["alert_id"] for e in events}) == 1  # one episode, one id
    first = events[0]
    assert {
        k: first[k] for k in ("type", "window", "reason", "score", "total", "share", "severity")
    } == {
        "type": "gate_explosion",
        "window": "5m",
        "reason": "risk_paused",
        "score": "45",
        "total": "100",
        "share": "0.4500",
        "severity": MEDIUM,
    }
    assert float(first["timestamp"]) == T0 / 1000
    assert r.hlen(keys.ALERT_STATE) == 0


async def _recent(server: RedisServer) -> list[dict[str, str]]:
    client = connect(Settings(redis_url=server.url))
    try:
        return await recent(client, 100)
    finally:
        await client.aclose()


def test_the_alert_stream_is_capped(r: RawRedis, redis_server: RedisServer) -> None:
    steps = [(window(100, {f"gate_{i}": 90}), T0 + i) for i in range(400)]
    run_apply(redis_server, steps, alert_dedup_sec=0, alerts_maxlen=100)
    assert 100 <= r.xlen(keys.ALERTS) <= 200  # MAXLEN ~ trims whole nodes


# -- with the real daemons -------------------------------------------------------------------


@pytest.mark.e2e
def test_alerts_are_sent_once_across_a_restart_and_two_daemons(
    r: RawRedis, base_env: dict[str, str], daemons: list, tmp_path: Path
) -> None:
    """300 blocked decisions now: gate explosion (CRITICAL), stuck BTCUSDT, and two
    decision-mix alerts, each sent once; a restart and a second daemon send nothing more."""
    pipe = r.pipeline(transaction=False)
    for _ in range(300):
        pipe.xadd(STREAM, {"symbol": "BTCUSDT", "decision": "BLOCKED", "error": "risk_paused:dd"})
    pipe.execute()
    first = Daemon(base_env, tmp_path / "a.log").start()
    daemons.append(first)
    wait_for(lambda: r.xlen(keys.ALERTS) >= 4, 30, "four alerts")
    want = {
        ("gate_explosion", "risk_paused", "CRITICAL"),
        ("stuck", "BTCUSDT", "HIGH"),
        ("decision_mix", "execute_low", "HIGH"),
        ("decision_mix", "blocked_high", "HIGH"),
    }
    events = [{k.decode(): v.decode() for k, v in f.items()} for _, f in r.xrange(keys.ALERTS)]
    assert {(e["type"], e["subject"], e["severity"]) for e in events} == want

    def warnings() -> list[dict[str, object]]:
        return [e for e in first.events() if e["event"] == "alert"]

    # The log lines follow what the alert script wrote to Redis.
    wait_for(lambda: len(warnings()) >= 4, 30, "four alert lines")
    assert len(warnings()) == 4 and all(e["level"] == "warning" for e in warnings())
    assert first.terminate_and_wait()[0] == 0
    listed = run_p35(base_env, "alerts", "--json")
    assert [(e["type"], e["subject"]) for e in json.loads(listed.stdout)] == [
        (e["type"], e["subject"]) for e in reversed(events)
    ]  # newest first
    text = run_p35(base_env, "alerts").stdout
    assert "CRITICAL" in text and "risk_paused" in text and "100 % of 300" in text

    def snapshot_ts() -> float:
        return float(r.hget(keys.STATUS, "snapshot_ts") or 0)

    restarted = Daemon(base_env, tmp_path / "b.log").start()
    second = Daemon(base_env, tmp_path / "c.log").start()
    daemons += [restarted, second]

    def ready(d: Daemon) -> bool:
        return any(e["event"] == "service.ready" for e in d.events())

    # A SIGTERM before its handlers are set would kill it, not stop it.
    wait_for(lambda: ready(restarted) and ready(second), 30, "both ready")
    since = snapshot_ts()
    wait_for(lambda: snapshot_ts() >= since + 4, 30, "four more snapshot rounds")
    assert r.xlen(keys.ALERTS) == 4, "a restart or a second daemon sent an alert again"
    assert not [e for d in (restarted, second) for e in d.events() if e["event"] == "alert"]
    for d in (restarted, second):
        assert d.terminate_and_wait()[0] == 0


@pytest.mark.parametrize(
    ("unknown", "severity"), [(4, None), (5, "MEDIUM"), (19, "MEDIUM"), (20, "HIGH")]
)
def test_unknown_high_says_producers_drifted(unknown: int, severity: str | None) -> None:
    """UNKNOWN at 5 % of the mix window is MEDIUM, at 20 % HIGH (issue 13)."""
    from decision_intel.model.alerts import decision_mix

    counts = Counts({"UNKNOWN": unknown, "EXECUTE": 100 - unknown}, {"none": 100})
    hits = [f for f in decision_mix("15m", counts, 50) if f.subject == "unknown_high"]
    assert [f.severity for f in hits] == ([severity] if severity else [])


def test_new_gate_fires_only_for_gates_no_rollup_of_the_week_holds() -> None:
    from decision_intel.model.alerts import GateHistory, new_gate_candidates, new_gates

    counts = window(200, {"brand_new": 20, "old_gate": 100, "tiny_new": 5})
    assert new_gate_candidates(counts, 100) == ["brand_new", "old_gate"]  # tiny_new < 5 %
    history = GateHistory("20261122", frozenset({"old_gate"}), any_history=True)
    [hit] = new_gates(counts, 100, history)
    assert (hit.type, hit.subject, hit.window, hit.fields["share"]) == (
        "new_gate",
        "brand_new",
        "20261122",
        "0.1000",
    )
    fresh_install = GateHistory("20261122", frozenset(), any_history=False)
    assert new_gates(counts, 100, fresh_install) == []
    assert new_gates(counts, 500, history) == []  # too few decisions to judge


@pytest.mark.e2e
def test_new_gate_and_unknown_high_through_the_daemon(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Yesterday's rollup holds `old_gate`; today `brand_new` and `old_gate` share the
    traffic and a quarter is UNKNOWN: one new_gate event (brand_new), an unknown_high event
    at HIGH naming the producers' cause, and no second new_gate on later evaluations."""
    sec, _ = r.time()
    r.hset(keys.daily(sec // 86_400 - 1), "reason:old_gate", 7)
    for i in range(200):
        if i % 4 == 0:
            fields = {"symbol": "BTCUSDT", "note": "no decision here"}
        else:
            fields = {
                "symbol": "BTCUSDT",
                "executed": "false",
                "error": "brand_new" if i % 2 else "old_gate",
            }
        r.xadd(STREAM, fields)
    d = Daemon({**base_env, "P35_ALERT_MIN_DECISIONS": "100"}, tmp_path / "d.log").start()
    daemons.append(d)

    def events() -> list[dict[bytes, bytes]]:
        return [f for _, f in r.xrange("quantum:p35:alerts")]

    wait_for(lambda: any(e[b"type"] == b"new_gate" for e in events()), 30, "a new_gate event")
    wait_for(lambda: len(run_p35(base_env, "alerts", "--json").stdout) > 2, 30, "alerts listed")
    snapshot_ts = float(r.hget("quantum:p35:status", "snapshot_ts") or 0)
    wait_for(
        lambda: float(r.hget("quantum:p35:status", "snapshot_ts") or 0) > snapshot_ts + 1,
        20,
        "two more evaluations",
    )
    new = [e for e in events() if e[b"type"] == b"new_gate"]
    assert [(e[b"subject"], e[b"state"]) for e in new] == [(b"brand_new", b"firing")]
    [unknown] = [e for e in events() if e.get(b"subject") == b"unknown_high"]
    assert unknown[b"severity"] == b"HIGH"
    assert b"no decision and no executed field" in unknown[b"top_causes"]
    assert d.terminate_and_wait()[0] == 0


# -- p35_alert_open: the open alerts as state, for Prometheus ----------------------------


def open_series(metrics: PrometheusMetrics) -> dict[tuple[str, str, str, str], float]:
    """The p35_alert_open samples as (type, subject, window, severity) -> value."""
    text = generate_latest(metrics.registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "p35_alert_open":
                lab = s.labels
                out[(lab["type"], lab["subject"], lab["window"], lab["severity"])] = s.value
    return out


def test_alert_open_is_1_while_firing_follows_the_severity_and_goes_when_resolved(
    r: redis.Redis, redis_server: RedisServer
) -> None:
    """The gauge follows the episode: MEDIUM, a rise to HIGH, a held-back repeat, the
    resolution; a restarted daemon (a fresh store) shows what Redis's state holds open."""
    steps = [
        window(100, {"risk_paused": 45}),
        window(100, {"risk_paused": 65}),
        window(100, {"risk_paused": 66}),  # held back by the de-duplication: still open
        window(100, {"risk_paused": 39}),
    ]
    gauge = ("gate_explosion", "risk_paused", "5m")

    async def go() -> list[dict[tuple[str, str, str, str], float]]:
        s = Settings(redis_url=redis_server.url, alert_min_decisions=100, alert_windows="5m")
        seen = []
        for i, counts in enumerate(steps):
            metrics = PrometheusMetrics()  # a fresh process each turn: it reads Redis's state
            client = connect(s)
            store = AlertStore(s, client, structlog.get_logger(), metrics)
            windows = {w: Counts() for w in keys.WINDOWS}
            windows["5m"] = counts
            if i == 2:
                seen.append(open_series(metrics))  # before any evaluation: nothing known
            await store.run(windows, T0 + i * 60_000)
            seen.append(open_series(metrics))
            await client.aclose()
        return seen

    first, high, before, held, resolved = asyncio.run(go())
    assert first == {(*gauge, MEDIUM): 1}
    assert high == {(*gauge, HIGH): 1}
    assert before == {}
    assert held == {(*gauge, HIGH): 1}
    assert resolved == {}


def test_alert_open_is_bounded_highest_severity_first_and_drops_a_stale_view() -> None:
    now = [1000.0]
    collector = OpenAlertsCollector(clock=lambda: now[0])
    many = {("stuck", "15m", f"SYM{i:04d}"): MEDIUM for i in range(MAX_OPEN_ALERT_SERIES + 50)}
    many[("gate_explosion", "5m", "risk_paused")] = CRITICAL
    collector.update(many)
    shown = {tuple(s.labels.values()) for f in collector.collect() for s in f.samples}
    assert len(shown) == MAX_OPEN_ALERT_SERIES
    assert ("gate_explosion", "risk_paused", "5m", CRITICAL) in shown
    now[0] += OPEN_ALERTS_FRESH_S + 1  # another daemon evaluates now: this view is old
    assert [s for f in collector.collect() for s in f.samples] == []
