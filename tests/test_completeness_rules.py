"""The completeness alerts, losses in views and reports (model/completeness.py,
model/losses.py), without Redis."""

from __future__ import annotations

from decision_intel.model import report as report_model
from decision_intel.model.alerts import HIGH, MEDIUM
from decision_intel.model.alerts import evaluate as evaluate_windows
from decision_intel.model.completeness import Audit, evaluate
from decision_intel.model.losses import LossEvent, incomplete, incomplete_text
from decision_intel.model.windows import Counts


def audit(**kw: object) -> Audit:
    base: dict[str, object] = {
        "headroom_s": 5000.0,
        "trimmed_ever": True,
        "exact": True,
        "last_loss_ms": 0,
        "acked_ms": 0,
        "foreign_total": 0,
    }
    return Audit(**{**base, **kw})  # type: ignore[arg-type]


def test_each_cause_fires_once_with_its_summed_count_and_range() -> None:
    losses = [
        LossEvent("skipped", 2000, "1700000000000-0", "1700000060000-5"),
        LossEvent("skipped", 1000, "1700000060000-6", "1700000120000-0"),
        LossEvent("trimmed", 7, "1700000000000-0", "1700000001000-0"),
    ]
    ev = evaluate(audit(losses=losses, last_loss_ms=9), [], 600)
    lost = {f.subject: f for f in ev.firing if f.type == "entries_lost"}
    assert set(lost) == {"skipped", "trimmed"}
    assert lost["skipped"].severity == HIGH
    assert lost["skipped"].fields["count"] == "3000"
    assert lost["skipped"].fields["first_id"] == "1700000000000-0"
    assert lost["skipped"].fields["last_id"] == "1700000120000-0"
    assert lost["skipped"].fields["since"] == "2023-11-14T22:13:20Z"


def test_a_loss_stays_open_until_the_operator_acknowledges_it() -> None:
    key = "entries_lost|-|trimmed"
    assert evaluate(audit(last_loss_ms=100, acked_ms=50), [key], 600).resolved == []
    assert evaluate(audit(last_loss_ms=100, acked_ms=100), [key], 600).resolved == [key]


def test_a_foreign_consumer_fires_while_present_with_a_safe_subject() -> None:
    name = b"guard|\x1b[2Jx"
    ev = evaluate(audit(foreign_total=1, foreign=[(name, 3)]), [], 600)
    [f] = ev.firing
    assert (f.type, f.severity, f.fields["pending"]) == ("foreign_consumer", MEDIUM, "3")
    assert "\x1b" not in f.subject and "|" not in f.subject and "\\x1b" in f.subject
    gone = evaluate(audit(), [f.key], 600)
    assert gone.resolved == [f.key]
    # More foreign consumers than a turn names: whether this one left is unknown.
    many = evaluate(audit(foreign_total=11, foreign=[(b"other", 0)] * 10), [f.key], 600)
    assert many.resolved == []


def test_headroom_is_low_only_on_a_trimmed_stream_under_the_minimum() -> None:
    def severity(**kw: object) -> str | None:
        fired = [f for f in evaluate(audit(**kw), [], 600).firing if f.type == "headroom_low"]
        return fired[0].severity if fired else None

    assert severity(headroom_s=100.0, trimmed_ever=False) is None  # young, never trimmed
    assert severity(headroom_s=None) is None  # empty stream
    assert severity(headroom_s=700.0) is None
    assert severity(headroom_s=599.0) == MEDIUM
    assert severity(headroom_s=59.0) == HIGH
    key = "headroom_low|-|stream"
    assert evaluate(audit(headroom_s=700.0), [key], 600).resolved == [key]


def test_the_window_evaluation_leaves_the_audit_alerts_open() -> None:
    windows = {w: Counts() for w in ("1m", "5m", "15m", "1h")}
    open_keys = ["entries_lost|-|trimmed", "foreign_consumer|-|x", "headroom_low|-|stream"]
    ev = evaluate_windows(
        windows,
        open_keys,
        alert_windows=["5m"],
        mix_window="15m",
        min_decisions=100,
        stuck_min_decisions=10,
    )
    assert ev.resolved == []


def test_a_window_is_incomplete_only_where_a_loss_overlaps_it() -> None:
    """Entries of 22:13-22:15 UTC trimmed: a window over them says so; one after does not."""
    losses = [
        LossEvent("trimmed", 3669, "1700000000000-0", "1700000100000-0"),
        LossEvent("skipped", 5, "1700000050000-0", "1700000060000-0"),
    ]
    doc = incomplete(losses, 1_700_000_060, 1_700_000_400)
    assert doc == {
        "lost": 3674,
        "causes": {"trimmed": 3669, "skipped": 5},
        "since": 1_700_000_000.0,
        "until": 1_700_000_100.0,
    }
    assert incomplete_text(doc) == (
        "Incomplete: 3,669 entries trimmed from the stream before they were read; "
        "5 entries skipped by a move of the group between 22:13 and 22:15 UTC."
    )
    assert incomplete(losses, 1_700_000_101, 1_700_000_400) is None


def test_a_days_loss_is_carried_by_the_report() -> None:
    """`lost:<cause>` in a rollup (written by the audit): the JSON carries it and the text
    says the day's figures are short by it."""
    fields = {b"decision:SKIP": b"10", b"reason:no_position": b"10", b"lost:trimmed": b"3669"}
    rep = report_model.compare("20260101", "20251225", report_model.parse_daily(fields), None)
    assert rep["lost"] == {"total": 3669, "causes": {"trimmed": 3669}}
    assert report_model.render(rep).endswith(
        "incomplete: 3,669 entries of this day were never counted (trimmed 3,669); "
        "the figures above are short by them (docs/completeness.md)"
    )
    clean = report_model.compare(
        "20260101", "20251225", report_model.parse_daily(fields | {b"lost:trimmed": b"x"}), None
    )
    assert clean["lost"] == {"total": 0, "causes": {}}
    assert "incomplete" not in report_model.render(clean)


def test_foreign_consumers_past_the_named_ten_are_one_alert() -> None:
    """1,500 ghost names: ten named alerts and one `others` counting the rest; it resolves
    when only named ones are left."""
    named = [(f"ghost-{i}".encode(), 0) for i in range(10)]
    ev = evaluate(audit(foreign_total=1500, foreign=named), [], 600)
    others = [f for f in ev.firing if f.subject == "others"]
    assert [f.fields["count"] for f in others] == ["1490"]
    assert sum(f.type == "foreign_consumer" for f in ev.firing) == 11
    key = others[0].key
    assert evaluate(audit(foreign_total=10, foreign=named), [key], 600).resolved == [key]
