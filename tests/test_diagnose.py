"""`p35 why`'s reasoning (diagnose.py, gate_shape.py) and its gate data (gates.py), without
Redis."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from decision_intel.model import gates
from decision_intel.model.classify import ERROR_REASONS, REASON_ALIASES, SKIP_REASONS, Classifier
from decision_intel.model.diagnose import (
    DEGRADED,
    EXIT_CODES,
    NOT_TRADING,
    TRADING,
    UNKNOWN,
    Baseline,
    Evidence,
    Thresholds,
    diagnose,
    examples,
    verdict,
)
from decision_intel.model.gate_shape import Onset, attribute, onset
from decision_intel.model.losses import LossEvent, incomplete
from decision_intel.model.windows import Counts

ROOT = Path(__file__).resolve().parent.parent
GATE = "kill_switch_active"


def minute_counts(rng: random.Random, n: int, p_gate: float, p_exec: float = 0.3) -> Counts:
    """n entries of one minute, each the gate with probability p_gate, else EXECUTE or a
    background gate."""
    c = Counts()
    for _ in range(n):
        x = rng.random()
        if x < p_gate:
            decision, reason = "BLOCKED", GATE
        elif x < p_gate + (1 - p_gate) * p_exec:
            decision, reason = "EXECUTE", "none"
        else:
            decision, reason = "SKIP", "no_position"
        c.decisions[decision] = c.decisions.get(decision, 0) + 1
        c.reasons[reason] = c.reasons.get(reason, 0) + 1
    return c


def test_a_jump_is_dated_within_two_minutes_at_any_rate_and_level() -> None:
    rng = random.Random(7)
    for _ in range(200):
        now = 1_000_000
        jump = now - rng.randint(3, 50)
        rate = rng.randint(20, 500)
        before, after = rng.uniform(0, 0.10), rng.uniform(0.5, 0.95)
        series = {
            m: minute_counts(rng, rate, after if m >= jump else before)
            for m in range(now - 120, now + 1)
        }
        length = rng.choice([5, 15, 60])
        found = onset(series, GATE, now, now - 120, length)
        assert found.since_minute is not None
        assert abs(found.since_minute - jump) <= 2, (jump, found, rate, before, after)
        assert found.share_before is not None and found.share_before < 0.25
        assert not found.at_edge


def test_a_gate_that_has_already_ended_is_not_dated_and_a_steady_one_reaches_the_edge() -> None:
    rng = random.Random(3)
    now = 5000
    # At 60 % until 8 minutes ago, then gone: present in the 15m window, not holding now.
    ended = {
        m: minute_counts(rng, 200, 0.6 if m < now - 8 else 0.0) for m in range(now - 60, now + 1)
    }
    found = onset(ended, GATE, now, now - 60, 15)
    assert found.since_minute is None
    # 30 % all along: the run reaches the oldest minute read, so "for at least".
    steady = {m: minute_counts(rng, 200, 0.3) for m in range(now - 60, now + 1)}
    found = onset(steady, GATE, now, now - 60, 15)
    assert found.at_edge and found.since_minute is not None and found.since_minute <= now - 58


def test_minutes_without_traffic_neither_end_nor_extend_a_run() -> None:
    rng = random.Random(5)
    now = 9000
    series = {
        m: minute_counts(rng, 100, 0.8 if m >= now - 20 else 0.0) for m in range(now - 60, now + 1)
    }
    for m in range(now - 15, now - 5):  # a quiet gap inside the run
        del series[m]
    found = onset(series, GATE, now, now - 60, 5)
    assert found.since_minute is not None and abs(found.since_minute - (now - 20)) <= 2


def per_symbol(rows: dict[str, tuple[int, int]]) -> Counts:
    """symbol -> (entries, of which the gate); the rest EXECUTE."""
    c = Counts()
    for symbol, (n, hits) in rows.items():
        s = Counts({"BLOCKED": hits, "EXECUTE": n - hits}, {GATE: hits, "none": n - hits})
        c.symbols[symbol] = s
        c.add(Counts(dict(s.decisions), dict(s.reasons)))
    return c


def test_attribution_names_the_symbols_that_carry_a_gate_with_their_lift() -> None:
    c = per_symbol(
        {"ETHUSDT": (100, 90), "SOLUSDT": (100, 80), "BTCUSDT": (400, 10), "XRPUSDT": (400, 5)}
    )
    symbols, where = attribute(c, GATE)
    assert where == "on ETHUSDT and SOLUSDT"
    assert [s["symbol"] for s in symbols[:2]] == ["ETHUSDT", "SOLUSDT"]
    # ETHUSDT: 90 % of its entries against 185/1000 overall.
    assert symbols[0]["lift"] == pytest.approx(0.9 / 0.185, abs=0.01)
    assert symbols[0]["share_of_gate"] == pytest.approx(90 / 185, abs=1e-4)


def test_attribution_says_every_symbol_when_lifts_are_near_one() -> None:
    c = per_symbol({s: (100 + 10 * i, 70 + 7 * i) for i, s in enumerate("ABCDEFGH")})
    assert attribute(c, GATE)[1] == "on every symbol"
    spread = per_symbol(
        {"A": (100, 60), "B": (100, 30), "C": (100, 20), "D": (100, 20), "E": (100, 15)}
    )
    assert attribute(spread, GATE)[1] == "mostly on A (41 %), B (21 %), C (14 %)"
    thin = per_symbol({f"S{i:02d}": (100, 5 * i) for i in range(20)})
    assert attribute(thin, GATE)[1] == "spread over 19 symbols"


def test_each_verdict_and_its_exit_status() -> None:
    th = Thresholds()
    assert verdict(1000, 0.45, 0.2, 1.0, th) == (TRADING, None)
    assert verdict(1000, 0.45, 0.41, 1.0, th)[0] == DEGRADED  # a dominant gate
    assert verdict(1000, 0.10, 0.2, 1.0, th)[0] == DEGRADED  # EXECUTE 5-20 %
    assert verdict(1000, 0.04, 0.9, 1.0, th)[0] == NOT_TRADING
    name, words = verdict(99, 0.5, 0.0, 1.0, th)
    assert name == UNKNOWN and words is not None and "only 99 decisions" in words
    name, words = verdict(1000, 0.5, 0.0, 300.0, th)
    assert name == UNKNOWN and words is not None and "300 s old" in words
    name, words = verdict(1000, 0.5, 0.0, None, th)
    assert name == UNKNOWN and words is not None and "no service status" in words
    assert [EXIT_CODES[v] for v in (TRADING, DEGRADED, NOT_TRADING, UNKNOWN)] == [0, 1, 2, 3]
    strict = Thresholds(not_trading_below=0.5)
    assert verdict(1000, 0.45, 0.2, 1.0, strict)[0] == NOT_TRADING  # thresholds are settings


def test_examples_are_the_commonest_raw_details_of_the_gate() -> None:
    recent = [
        ("5-0", "risk_paused", "risk_paused:drawdown 7.1%"),
        ("4-0", "risk_paused", "risk_paused:drawdown 7.1%"),
        ("3-0", GATE, GATE),
        ("2-0", "risk_paused", "risk_paused:drawdown 6.9%"),
    ]
    assert examples(recent, "risk_paused") == [
        {"id": "5-0", "detail": "risk_paused:drawdown 7.1%", "count": 2},
        {"id": "2-0", "detail": "risk_paused:drawdown 6.9%", "count": 1},
    ]


def test_the_document_and_its_paragraph() -> None:
    rng = random.Random(1)
    now_minute = 29_000_000
    series = {
        m: minute_counts(rng, 200, 0.7 if m >= now_minute - 17 else 0.0, p_exec=0.04)
        for m in range(now_minute - 60, now_minute + 1)
    }
    counts = Counts()
    for m in range(now_minute - 14, now_minute + 1):
        counts.add(series[m])
    ev = Evidence(
        window="15m",
        symbol=None,
        now_s=now_minute * 60 + 30,
        counts=counts,
        onsets={GATE: onset(series, GATE, now_minute, now_minute - 60, 15)},
        baselines={"day_before": None, "week_before": None},
        recent=[("1-0", GATE, GATE)],
        status={"last_ts": str(now_minute * 60 + 29), "lag": "0", "pending_estimate": "3"},
        gate_decision=Classifier().decision_for_reason,
    )
    doc = diagnose(ev)
    assert doc["verdict"] == NOT_TRADING and doc["exit_code"] == 2
    assert set(doc) >= {"verdict", "window", "total", "execute_share", "baseline", "gates"}
    assert set(doc) >= {"service", "text"}
    gate = doc["gates"][0]
    assert set(gate) >= {"reason", "decision", "count", "share", "since", "share_before"}
    assert set(gate) >= {"symbols", "examples", "action"}
    assert gate["reason"] == GATE and gate["decision"] == "BLOCKED"
    assert gate["since"] is not None
    assert abs(gate["since"] - (now_minute - 17) * 60) <= 120
    assert doc["service"] == {"status_age_s": 1.0, "lag": 0, "pending": 3}
    text = doc["text"]
    assert text.startswith("NOT TRADING — ")
    assert f"were BLOCKED by `{GATE}` since " in text and "0 % before" in text
    assert "What to do: the global kill switch is on" in text
    assert "docs/action-mapping.md#kill_switch_active" in text


def test_the_document_has_the_keys_docs_dashboard_md_shows() -> None:
    """`p35 why --json` is an operator interface: every level of it has exactly the keys
    of the example in docs/dashboard.md, every optional part filled in."""
    doc_md = (ROOT / "docs/dashboard.md").read_text()
    example = json.loads(doc_md.split("**JSON** (`--json`):\n\n```json\n")[1].split("```")[0])
    counts = per_symbol({"ETHUSDT": (100, 90), "BTCUSDT": (400, 10)})
    ev = Evidence(
        "5m", None, 600.0, counts, {GATE: Onset(5, 0.0, False)},
        {"day_before": Baseline(300, 0.36, {GATE: 0.0}, "buckets"), "week_before": None},
        [("1-0", GATE, GATE)], {"last_ts": "599"}, Classifier().decision_for_reason,
        incomplete=incomplete([LossEvent("trimmed", 3, "1000-0", "2000-0")], 0, 600),
    )  # fmt: skip
    doc = diagnose(ev)
    gate, documented_gate = doc["gates"][0], example["gates"][0]
    assert doc["incomplete"] is not None and gate["action"] is not None
    assert set(doc) == set(example)
    assert set(gate) == set(documented_gate)
    assert set(gate["action"]) == set(documented_gate["action"])
    assert set(gate["symbols"][0]) == set(documented_gate["symbols"][0])
    assert set(gate["examples"][0]) == set(documented_gate["examples"][0])
    assert set(doc["baseline"]) == set(example["baseline"])
    assert set(doc["baseline"]["day_before"] or {}) == set(example["baseline"]["day_before"])
    assert set(doc["incomplete"]) == set(example["incomplete"])
    assert set(doc["service"]) == set(example["service"])


def test_a_run_that_reaches_the_oldest_minute_read_says_or_earlier() -> None:
    rng = random.Random(2)
    now = 29_000_000
    series = {m: minute_counts(rng, 200, 0.5) for m in range(now - 60, now + 1)}
    counts = Counts()
    for m in range(now - 4, now + 1):
        counts.add(series[m])
    found = onset(series, GATE, now, now - 60, 5)
    assert found.at_edge
    ev = Evidence(
        "5m", None, now * 60.0, counts, {GATE: found},
        {"day_before": None, "week_before": None}, [], {"last_ts": str(now * 60)},
        Classifier().decision_for_reason,
    )  # fmt: skip
    text = diagnose(ev)["text"]
    assert f"by `{GATE}` since " in text and " or earlier (" in text and "or more)" in text
    assert "before)" not in text  # no share before a start that was not seen


def test_a_gate_without_an_entry_points_at_p35_explain() -> None:
    counts = Counts({"BLOCKED": 200}, {"brand_new_gate": 200})
    ev = Evidence(
        "5m", None, 600.0, counts, {"brand_new_gate": Onset(None, None, False)},
        {"day_before": None, "week_before": None}, [], {"last_ts": "599"},
        Classifier().decision_for_reason,
    )  # fmt: skip
    doc = diagnose(ev)
    assert doc["gates"][0]["action"] is None
    assert "has no entry in docs/action-mapping.md" in doc["text"] and "p35 explain" in doc["text"]


# -- the gate data ------------------------------------------------------------------------


def test_docs_action_mapping_tables_are_the_packaged_data() -> None:
    doc = (ROOT / gates.DOC).read_text()
    assert doc.count("(generated from src/decision_intel/model/gates.toml)") == 3
    assert gates.rewrite(doc) == doc, (
        "run: python -m decision_intel.model.gates docs/action-mapping.md"
    )


def test_every_built_in_gate_has_an_entry_under_its_own_decision() -> None:
    for reason in SKIP_REASONS:
        assert gates.lookup(reason) is not None and gates.lookup(reason).decision == "SKIP"  # type: ignore[union-attr]
    for reason in ERROR_REASONS:
        assert gates.lookup(reason) is not None and gates.lookup(reason).decision == "ERROR"  # type: ignore[union-attr]
    for target in REASON_ALIASES.values():
        assert gates.lookup(target) is not None
    fallback = gates.lookup("risk_new_check")
    assert fallback is not None and "risk_*" in fallback.names
    assert gates.lookup("no_such_gate") is None
    assert all(g.todo for g in gates.catalog())
