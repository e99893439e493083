"""SPEC section 4 read literally: the classification a careful reader derives by hand.

Written from the SPEC text alone, never from the code under test, so the property
tests (test_classify_properties.py) and the daemon fuzz test compare two readings.
"""

from __future__ import annotations

import json
import re

UNKNOWN = "UNKNOWN"
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
