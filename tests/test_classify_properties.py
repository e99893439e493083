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

from decision_intel import classify as classify_module
from decision_intel.batch import Batch
from decision_intel.classify import DECISIONS, UNKNOWN, classify

# -- the reference: SPEC section 4, read literally -------------------------------------

WORDS = {
    **dict.fromkeys(("EXECUTE", "EXECUTED", "EXEC"), "EXECUTE"),
    **dict.fromkeys(("SKIP", "SKIPPED"), "SKIP"),
    **dict.fromkeys(("BLOCKED", "BLOCK", "REJECTED", "DENIED"), "BLOCKED"),
    **dict.fromkeys(("ERROR", "FAILED", "FAIL"), "ERROR"),
}
SKIP_SET = {"no_position", "duplicate_plan", "not_in_allowlist", "action_hold"}
ERROR_SET = {
    "exception",
    "binance_error",
    "missing_binance_credentials",
    "retryable_rate_limit",
    "mark_price_unavailable",
    "missing_required_fields",
    "invalid_side",
    "invalid_safe_close_qty",
}
ALIASES = {
    "deny_not_exit_owner": "not_exit_owner",
    "duplicate_plan_id": "duplicate_plan",
    "close_no_position": "no_position",
    "symbol_not_in_allowlist": "not_in_allowlist",
    "p33_permit_missing_or_denied": "p33_permit_denied",
}


def as_text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else json.dumps(value)


def json_layer(raw: bytes | None) -> dict[str, object]:
    try:
        parsed = json.loads(as_text(raw) or "")
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def lookup(entry: dict[bytes, bytes], name: str, empty: set[str]) -> str | None:
    """Top level, then `payload`, then `details`; empty (after strip) or `empty` words skip."""
    candidates = [entry.get(name.encode())]
    candidates += [json_layer(entry.get(layer)).get(name) for layer in (b"payload", b"details")]
    for value in candidates:
        text = as_text(value)
        if text is not None and text.strip() and text.strip().lower() not in empty:
            return text
    return None


def reference(entry: dict[bytes, bytes]) -> tuple[str, str, str | None]:
    raw_reason = lookup(entry, "error", {"none", "null", "nil"}) or lookup(
        entry, "reason", {"none", "null", "nil"}
    )
    reason = "none"
    if raw_reason is not None:
        text = re.sub(r"[^a-z0-9_.-]+", "_", raw_reason.split(":", 1)[0].lower())
        reason = text.strip("_")[:64] or "none"
        reason = ALIASES.get(reason, reason)
    raw_symbol = lookup(entry, "symbol", set())
    symbol = None
    if raw_symbol is not None and re.fullmatch(r"[A-Z0-9]{2,30}", raw_symbol.strip().upper()):
        symbol = raw_symbol.strip().upper()
    raw_decision = lookup(entry, "decision", {"unknown"})
    if raw_decision is not None:
        return WORDS.get(raw_decision.strip().upper(), UNKNOWN), reason, symbol
    raw_executed = lookup(entry, "executed", set())
    if raw_executed is None:
        return UNKNOWN, reason, symbol
    flag = raw_executed.strip().lower()
    if flag in {"true", "1", "yes", "t", "y"}:
        return "EXECUTE", reason, symbol
    if flag not in {"false", "0", "no", "f", "n"}:
        return UNKNOWN, reason, symbol
    if reason == "none" or reason in SKIP_SET:
        return "SKIP", reason, symbol
    return ("ERROR" if reason in ERROR_SET else "BLOCKED"), reason, symbol


# -- entries: producer-like and hostile --------------------------------------------------


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
        assert classify(entry) == classify_module._classify(entry)


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
