"""Batch aggregation (pure): increments per minute and their recomputation after exclusions."""

from __future__ import annotations

import json

from decision_intel.model.batch import Batch, raw_copy
from decision_intel.model.classify import Classification

MIN = 29_920_000  # a minute number


def cls(decision: str, reason: str, symbol: str | None = "BTCUSDT") -> Classification:
    return Classification(decision, reason, symbol, None if decision != "UNKNOWN" else "why")


def eid(minute: int, seq: int) -> bytes:
    return f"{minute * 60_000 + seq}-0".encode()


def test_deltas_group_by_the_minute_of_the_entry_id() -> None:
    b = Batch()
    b.add(eid(MIN, 1), {b"k": b"v"}, cls("SKIP", "no_position"))
    b.add(eid(MIN, 2), {b"k": b"v"}, cls("SKIP", "no_position", "ETHUSDT"))
    b.add(eid(MIN + 1, 3), {b"k": b"v"}, cls("BLOCKED", "risk_paused"))
    d = b.deltas()
    assert set(d) == {MIN, MIN + 1}
    assert d[MIN].decisions == {"SKIP": 2}
    assert d[MIN].reasons == {"no_position": 2}
    assert d[MIN].symbol_decisions == {"BTCUSDT": {"SKIP": 1}, "ETHUSDT": {"SKIP": 1}}
    assert d[MIN + 1].symbol_reasons == {"BTCUSDT": {"risk_paused": 1}}


def test_discarded_entries_leave_the_increments() -> None:
    b = Batch()
    ids = [eid(MIN, i) for i in range(5)]
    for i in ids:
        b.add(i, {b"k": b"v"}, cls("EXECUTE", "none"))
    assert b.discard([ids[0], ids[3], b"9-9"]) == 2
    assert b.deltas()[MIN].decisions == {"EXECUTE": 3}


def test_symbol_breakdown_off_writes_no_symbol_fields() -> None:
    b = Batch(symbol_breakdown=False)
    b.add(eid(MIN, 1), {b"k": b"v"}, cls("SKIP", "none"))
    assert b.deltas()[MIN].symbol_decisions == {}


def test_id_range_compares_ids_as_numbers_not_strings() -> None:
    b = Batch()
    b.add(b"999-5", {b"k": b"v"}, cls("SKIP", "none"))
    b.add(b"1000-0", {b"k": b"v"}, cls("SKIP", "none"))
    b.add_trimmed(b"999-10")
    assert b.id_range() == (b"999-5", b"1000-0")


def test_invalid_records_are_bounded_copies() -> None:
    b = Batch()
    fields = {f"f{i}".encode(): b"x" * 5000 for i in range(100)}
    b.add(eid(MIN, 1), fields, cls("UNKNOWN", "none"))
    [(entry_id, cause, raw)] = b.invalid_records()
    assert (entry_id, cause) == (eid(MIN, 1), "why")
    assert len(raw) <= 2048
    copy = json.loads(raw)
    assert copy["f0"].endswith("...[5000 chars]")
    assert copy["..."] == f"{100 - (len(copy) - 1)} more fields"


def test_raw_copy_survives_non_utf8() -> None:
    assert json.loads(raw_copy({b"\xff": b"\xfe"})) == {"\ufffd": "\ufffd"}


def test_raw_copy_is_ascii_within_2_kib_whatever_the_entry_holds() -> None:
    """Control, C1 and bidi characters are escaped, so no terminal ever sees them raw, and
    escaping (up to 6 bytes a character) never takes a copy past 2 KiB."""
    hostile = {b"k": ("\x1b]52;c;AAAA\x07\x9b2J\u202e" * 5000).encode()}
    for entry in (hostile, {f"\x1b{i}".encode(): b"\x01" * 300 for i in range(500)}):
        raw = raw_copy(entry)
        assert raw.isascii() and len(raw) <= 2048
        assert all(c >= " " for c in raw)
        json.loads(raw)
    assert "\\u202e" in raw_copy(hostile)
