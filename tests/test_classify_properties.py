"""Property tests: the classifier against a plain reading of SPEC section 4, on any input.

The reference below is written from the SPEC text alone, without the fast path's
caches; hypothesis feeds both the same entries: producer-like ones (decision words
in any case, flags, parametric errors, JSON envelopes) and hostile ones (binary,
invalid UTF-8 inside JSON, non-object JSON, huge and padded values).
"""

from __future__ import annotations

import json
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from decision_intel.model import classify as classify_module
from decision_intel.model.batch import Batch
from decision_intel.model.classify import DECISIONS, UNKNOWN, classify
from tests.spec_reference import ALIASES, ERROR_SET, SKIP_SET, WORDS, normalize, reference

# -- the reference: SPEC section 4, read literally -------------------------------------


def cased(words: list[str]) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(words), st.sampled_from(["", " ", "\t"]), st.booleans()).map(
        lambda t: f"{t[1]}{t[0].lower() if t[2] else t[0]}{t[1]}"
    )


REASONS = [
    *SKIP_SET,
    *ERROR_SET,
    *ALIASES,
    "risk_paused",
    "kill_switch_active",
    "none",
    "NULL",
    "Nil",
    "p33_permit_denied",
    "position_too_large",
    "",
    " ",
    ":",
    "_:x",
    "Ünïcode gate",
]
decision_values = st.one_of(cased([*WORDS, "UNKNOWN", "maybe", ""]), st.text(max_size=8))
flag_values = st.one_of(
    cased(["True", "false", "1", "0", "yes", "NO", "t", "F", "y", "n", "x"]), st.text(max_size=4)
)
reason_values = st.one_of(
    st.tuples(cased(REASONS), st.sampled_from(["", ":", ": detail 7.1%", ":$1234>$500_cap"])).map(
        "".join
    ),
    st.text(max_size=80),
    st.just("x" * 70 + ":tail"),
)
symbol_values = st.one_of(
    cased(["BTCUSDT", "ethusdt", "B", "SOL-USDT", "A" * 31]),
    st.text(max_size=12),
    st.just("BTCUSDT" + " " * 300),
)
FIELD_VALUES = {
    "decision": decision_values,
    "executed": flag_values,
    "error": reason_values,
    "reason": reason_values,
    "symbol": symbol_values,
}


def json_envelope() -> st.SearchStrategy[bytes]:
    obj = st.dictionaries(
        st.sampled_from(list(FIELD_VALUES)),
        st.one_of(st.none(), st.booleans(), st.integers(), *FIELD_VALUES.values()),
        max_size=4,
    )
    return st.one_of(
        obj.map(lambda d: json.dumps(d).encode()),
        obj.map(lambda d: json.dumps(d).encode().replace(b"a", b"\xff", 1)),  # invalid UTF-8
        st.sampled_from([b"[1, 2]", b'"text"', b"{not json", b"null", b""]),
        st.binary(max_size=20),
    )


def encoded(strategy: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    return st.one_of(strategy.map(str.encode), st.binary(max_size=16))


entries = st.fixed_dictionaries(
    {},
    optional={
        **{name.encode(): encoded(values) for name, values in FIELD_VALUES.items()},
        b"payload": json_envelope(),
        b"details": json_envelope(),
        b"plan_id": st.binary(max_size=8),
    },
)


# -- properties ----------------------------------------------------------------------------


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(entries)
def test_classify_agrees_with_the_spec_on_any_entry(entry: dict[bytes, bytes]) -> None:
    got = classify(entry)
    assert got.decision in DECISIONS
    assert (got.decision, got.reason, got.symbol) == reference(entry)
    assert (got.cause is not None) == (got.decision == UNKNOWN)
    assert re.fullmatch(r"[a-z0-9_.-]{1,64}", got.reason)


@settings(max_examples=500, deadline=None)
@given(st.lists(entries, min_size=2, max_size=30))
def test_remembered_results_equal_fresh_ones(batch: list[dict[bytes, bytes]]) -> None:
    """Entries that share a cache key (e.g. errors differing after the ':') never mix results."""
    for entry in batch:
        classify(entry)
    for entry in batch:
        assert classify(entry) == classify_module._default._classify(entry)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), entries), max_size=60), st.data())
def test_every_entry_adds_one_decision_and_one_reason(
    rows: list[tuple[int, dict[bytes, bytes]]], data: st.DataObject
) -> None:
    """Σ decision = Σ reason = entries per minute, also after some entries are discarded."""
    batch = Batch()
    ids = []
    for seq, (minute, entry) in enumerate(rows):
        entry_id = f"{(29_000_000 + minute) * 60_000 + seq}-{seq}".encode()
        ids.append((entry_id, minute))
        batch.add(entry_id, entry, classify(entry))
    dropped = set(data.draw(st.lists(st.sampled_from(ids), unique=True))) if ids else set()
    batch.discard(entry_id for entry_id, _ in dropped)
    per_minute: dict[int, int] = {}
    for entry_id, minute in ids:
        if (entry_id, minute) not in dropped:
            per_minute[29_000_000 + minute] = per_minute.get(29_000_000 + minute, 0) + 1
    deltas = batch.deltas()
    assert {m: sum(d.decisions.values()) for m, d in deltas.items()} == per_minute
    assert {m: sum(d.reasons.values()) for m, d in deltas.items()} == per_minute


# Long reason values: the classifier reads a window of them (classify._normalize_long),
# the reference the whole. Built so the 64-character cut, the window's edges (256, 1024,
# 4096) and a trailing numeric parameter straddle each other.
long_reasons = st.builds(
    lambda head, body, tail, pad: (
        head + body + tail + (pad if len(head + body + tail) <= 256 else "")
    ),
    st.one_of(st.just(""), st.text(alphabet="ab_ !\u0130\u03a3", max_size=1500)),
    st.text(alphabet="aZ09_.-", min_size=20, max_size=140),
    st.one_of(
        st.text(alphabet="_0123456789.", max_size=3000),
        st.lists(st.sampled_from(["_12", "_3.5", "_0", ".", "_", "7"]), max_size=900).map("".join),
        st.text(alphabet="x_1:, -", max_size=3000),
        st.text(max_size=600),
    ),
    st.sampled_from(["_9" * 140, "q" * 300, " " * 300, "_1.5" * 70 + "z"]),
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(long_reasons)
def test_long_reasons_normalize_as_the_spec_reads_the_whole_value(text: str) -> None:
    assert classify_module.normalize_reason(text) == normalize(text)


def test_long_reason_straddling_the_cut_examples() -> None:
    """A trailing parameter that begins before the 64th character and ends 5 KB later
    moves the cut; one followed by a letter does not."""
    head = "risk_" + "a" * 55  # 60 characters
    for text in (
        head + "_1" * 3000,
        head + "_1" * 3000 + "x",
        head + "_12.5" * 1000 + ": tail",
        " " * 2000 + head + "!" * 3000,
        head + "_1" * 200 + "," + "b" * 4000,
    ):
        assert classify_module.normalize_reason(text) == normalize(text), text[:80]
