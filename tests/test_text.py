"""text.py: shares and percentages as every view shows them (pure)."""

from __future__ import annotations

from decision_intel.text import SHARE_DIGITS, percent, share, share_text


def test_a_share_of_nothing_is_zero_and_documents_keep_four_decimals() -> None:
    """An empty window holds no share of anything: 0.0, never a ZeroDivisionError."""
    assert share(5, 0) == share(0, 0) == share(5, 0, SHARE_DIGITS) == 0.0
    assert share(1, 3) == 1 / 3
    assert share(1, 3, SHARE_DIGITS) == 0.3333
    assert share(2, 3, SHARE_DIGITS) == 0.6667
    assert share(7, 7) == 1.0


def test_an_alert_event_carries_a_share_with_four_decimals() -> None:
    assert share_text(7, 10) == "0.7000"
    assert share_text(1, 3) == "0.3333"
    assert share_text(0, 0) == "0.0000"


def test_a_percentage_reads_alike_in_every_view() -> None:
    """`42 %`; a share under 1 % that is not 0 keeps a decimal, so it never reads as 0."""
    assert percent(0.42) == "42 %"
    assert percent(0.0) == "0 %"
    assert percent(0.004) == "0.4 %"
    assert percent(0.0099) == "1.0 %"
    assert percent(0.01) == "1 %"
    assert percent(1.0) == "100 %"
    assert percent(0.3, 5, 1) == " 30.0 %"  # a table's column
    assert percent(0.004, 4) == " 0.4 %"
    assert percent(0.5, decimals=1) == "50.0 %"
