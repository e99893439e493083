"""Classification of one apply.result entry into (decision, reason, symbol): SPEC section 4.

Pure: no I/O, no clock. The hot path is `classify(fields)`; it is called once per
stream entry, so the string work that repeats across entries (decision words,
reason prefixes) is cached in small bounded dicts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import NamedTuple

EXECUTE, SKIP, BLOCKED, ERROR, UNKNOWN = "EXECUTE", "SKIP", "BLOCKED", "ERROR", "UNKNOWN"
DECISIONS = (EXECUTE, SKIP, BLOCKED, ERROR, UNKNOWN)
NO_REASON = "none"

_DECISION_WORDS = {
    "EXECUTE": EXECUTE,
    "EXECUTED": EXECUTE,
    "EXEC": EXECUTE,
    "SKIP": SKIP,
    "SKIPPED": SKIP,
    "BLOCKED": BLOCKED,
    "BLOCK": BLOCKED,
    "REJECTED": BLOCKED,
    "DENIED": BLOCKED,
    "ERROR": ERROR,
    "FAILED": ERROR,
    "FAIL": ERROR,
}
_TRUE = frozenset({"true", "1", "yes", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "f", "n"})
_EMPTY_REASONS = frozenset({"none", "null", "nil"})

SKIP_REASONS = frozenset({"no_position", "duplicate_plan", "not_in_allowlist", "action_hold"})
ERROR_REASONS = frozenset(
    {
        "exception",
        "binance_error",
        "missing_binance_credentials",
        "retryable_rate_limit",
        "mark_price_unavailable",
        "missing_required_fields",
        "invalid_side",
        "invalid_safe_close_qty",
    }
)
REASON_ALIASES = {
    "deny_not_exit_owner": "not_exit_owner",
    "duplicate_plan_id": "duplicate_plan",
    "close_no_position": "no_position",
    "symbol_not_in_allowlist": "not_in_allowlist",
    "p33_permit_missing_or_denied": "p33_permit_denied",
}

_REASON_BAD_CHARS = re.compile(r"[^a-z0-9_.-]+")
_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")
_REASON_MAX = 64
_CACHE_MAX = 4096
"""Entries per memo. With the length limits below, the memos hold at most about
4096 x (64 + 256 + 7 x 256) bytes of keys: a few MB, whatever producers write."""
_WORD_MAX = 64


class Classification(NamedTuple):
    decision: str
    reason: str
    symbol: str | None
    cause: str | None
    """Why the entry ended UNKNOWN (None otherwise); recorded in quantum:p35:invalid."""


def _text(value: object) -> str:
    """A field value as text: bytes decode as UTF-8 with replacement; JSON scalars as JSON."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _json_object(raw: object) -> dict[str, object] | None:
    if raw is None:
        return None
    try:
        # Decoded first, as every value is: json.loads(bytes) would guess UTF-16/32 and
        # reject invalid UTF-8 that SPEC says to replace.
        parsed = json.loads(_text(raw))
    except (ValueError, RecursionError):
        return None
    return parsed if isinstance(parsed, dict) else None


class _Fields:
    """Field lookup across the three layers: top level, then `payload`, then `details`.

    The JSON layers are parsed lazily: most entries answer from the top level.
    """

    __slots__ = ("_details", "_payload", "_top")

    def __init__(self, top: Mapping[bytes, bytes]) -> None:
        self._top = top
        self._payload: dict[str, object] | bool | None = False
        self._details: dict[str, object] | bool | None = False

    def _layers(self) -> tuple[dict[str, object] | None, dict[str, object] | None]:
        if self._payload is False:
            self._payload = _json_object(self._top.get(b"payload"))
            self._details = _json_object(self._top.get(b"details"))
        return self._payload, self._details  # type: ignore[return-value]

    def get(self, name: bytes, absent: frozenset[str] = frozenset()) -> str | None:
        """First value of `name` that is non-empty (after strip) and not in `absent`."""
        value = self._top.get(name)
        if value is not None:
            text = _text(value)
            stripped = text.strip()
            if stripped and stripped.lower() not in absent:
                return text
        key = name.decode()
        for layer in self._layers():
            if layer is None:
                continue
            found = layer.get(key)
            if found is None:
                continue
            text = _text(found)
            stripped = text.strip()
            if stripped and stripped.lower() not in absent:
                return text
        return None


_decision_cache: dict[str, str] = {}
_reason_cache: dict[str, str] = {}


def _remember(cache: dict[str, str], key: str, value: str) -> str:
    if len(cache) >= _CACHE_MAX:
        cache.clear()
    cache[key] = value
    return value


def decision_word(value: str) -> str:
    """Map a `decision` value to one of DECISIONS (UNKNOWN for words we do not know)."""
    hit = _decision_cache.get(value)
    if hit is None:
        hit = _DECISION_WORDS.get(value.strip().upper(), UNKNOWN)
        if len(value) <= _WORD_MAX:  # remember words, not arbitrary producer data
            _remember(_decision_cache, value, hit)
    return hit


def normalize_reason(value: str | None) -> str:
    """SPEC section 4 normalization: prefix before ':', lower, [a-z0-9_.-], 64 chars, aliases."""
    if value is None:
        return NO_REASON
    prefix = value.partition(":")[0]
    hit = _reason_cache.get(prefix)
    if hit is None:
        text = _REASON_BAD_CHARS.sub("_", prefix.lower()).strip("_")[:_REASON_MAX]
        text = REASON_ALIASES.get(text, text) or NO_REASON
        # Only short prefixes are worth keeping: a 1 MB prefix is a one-off.
        hit = _remember(_reason_cache, prefix, text) if len(prefix) <= 256 else text
    return hit


def parse_flag(value: str) -> bool | None:
    word = value.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def _preview(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_result_cache: dict[tuple[object, ...], Classification] = {}
_KEY_PART_MAX = 256


def _reason_part(value: object) -> object:
    """What of an `error`/`reason` value the result depends on: all of it up to the first ':'.

    A value with a ':' is never empty after stripping, so it always gives the
    normalized text before the colon; the colon stays in the key to tell it apart
    from a whole value (which may be empty or `none`).
    """
    if type(value) is bytes:
        cut = value.find(b":")
        return value if cut < 0 else value[: cut + 1]
    return value


def _small_bytes(part: object) -> bool:
    return part is None or (type(part) is bytes and len(part) <= _KEY_PART_MAX)


def classify(entry: Mapping[bytes, bytes]) -> Classification:
    """Classify one stream entry given as its field map (bytes keys, as redis-py returns them).

    Producers repeat themselves, so results are remembered by every field value the
    rules read (`error`/`reason` only up to the first ':', where parameters start):
    a repeat costs a few dict lookups. Large values are never remembered.
    """
    get = entry.get
    key = (
        get(b"decision"),
        get(b"executed"),
        _reason_part(get(b"error")),
        _reason_part(get(b"reason")),
        get(b"symbol"),
        get(b"payload"),
        get(b"details"),
    )
    try:
        hit = _result_cache.get(key)
    except TypeError:  # an unhashable value (only from callers other than redis-py)
        return _classify(entry)
    if hit is None:
        hit = _classify(entry)
        if all(_small_bytes(part) for part in key):
            if len(_result_cache) >= _CACHE_MAX:
                _result_cache.clear()
            _result_cache[key] = hit
    return hit


def _classify(entry: Mapping[bytes, bytes]) -> Classification:
    fields = _Fields(entry)
    reason = normalize_reason(
        fields.get(b"error", _EMPTY_REASONS) or fields.get(b"reason", _EMPTY_REASONS)
    )
    symbol = _symbol(fields.get(b"symbol"))

    raw_decision = fields.get(b"decision", frozenset({"unknown"}))
    if raw_decision is not None:
        decision = decision_word(raw_decision)
        if decision is UNKNOWN:
            cause = f"unrecognized decision {_preview(raw_decision.strip())!r}"
            return Classification(UNKNOWN, reason, symbol, cause)
        return Classification(decision, reason, symbol, None)

    raw_executed = fields.get(b"executed")
    if raw_executed is None:
        return Classification(UNKNOWN, reason, symbol, "no decision and no executed field")
    executed = parse_flag(raw_executed)
    if executed is None:
        cause = f"unrecognized executed value {_preview(raw_executed.strip())!r}"
        return Classification(UNKNOWN, reason, symbol, cause)
    if executed:
        return Classification(EXECUTE, reason, symbol, None)
    return Classification(decision_for_reason(reason), reason, symbol, None)


def decision_for_reason(reason: str) -> str:
    """The decision of a not-executed entry, by its (normalized) reason."""
    if reason == NO_REASON or reason in SKIP_REASONS:
        return SKIP
    if reason in ERROR_REASONS:
        return ERROR
    return BLOCKED


def _symbol(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if len(text) > 30:  # never a symbol; spares upper() and the regex on huge values
        return None
    text = text.upper()
    return text if _SYMBOL.fullmatch(text) else None
