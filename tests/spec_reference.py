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


ZERO_WIDTH = "\u200b\u200c\u200d\ufeff"


def strip(text: str) -> str:
    """Unicode whitespace and U+200B-U+200D, U+FEFF removed at both ends (repeatedly:
    the two kinds may alternate)."""
    while True:
        cut = text.strip().strip(ZERO_WIDTH)
        if cut == text:
            return text
        text = cut


def top_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("utf-8", "replace")


def json_text(value: object, reason_like: bool) -> str | None:
    """A string, a number or a boolean is a value; null, arrays, objects are empty, and so
    are false and 0 for error and reason."""
    if value is None or isinstance(value, list | dict):
        return None
    if value is True:
        return "true"
    if value is False:
        return None if reason_like else "false"
    if isinstance(value, int | float):
        return None if (reason_like and value == 0) else json.dumps(value)
    return value if isinstance(value, str) else None


def json_layer(raw: bytes | None) -> dict[str, object]:
    try:
        parsed = json.loads(top_text(raw) or "")
    except (ValueError, RecursionError):
        return {}
    return parsed if isinstance(parsed, dict) else {}


def lookup(entry: dict[bytes, bytes], name: str, empty: set[str]) -> str | None:
    """Top level, then `payload`, then `details`; empty (after strip) or `empty` words skip."""
    reason_like = name in ("error", "reason")
    candidates = [top_text(entry.get(name.encode()))]
    for layer in (b"payload", b"details"):
        obj = json_layer(entry.get(layer))
        candidates.append(json_text(obj[name], reason_like) if name in obj else None)
    for text in candidates:
        if text is not None and strip(text) and strip(text).lower() not in empty:
            return text
    return None


def normalize(raw: str) -> str:
    text = raw.split(":", 1)[0].split(",", 1)[0].lower()
    text = re.sub(r"[^a-z0-9_.-]+", "_", text).strip("_")
    dropped = re.sub(r"(_[0-9]+(\.[0-9]+)?)+$", "", text)
    text = (dropped or text)[:64] or "none"
    return ALIASES.get(text, text)


def reference(entry: dict[bytes, bytes]) -> tuple[str, str, str | None]:
    raw_reason = lookup(entry, "error", {"none", "null", "nil"}) or lookup(
        entry, "reason", {"none", "null", "nil"}
    )
    reason = "none" if raw_reason is None else normalize(raw_reason)
    raw_symbol = lookup(entry, "symbol", set())
    symbol = None
    if raw_symbol is not None:
        upper = "".join(c.upper() if "a" <= c <= "z" else c for c in strip(raw_symbol))
        if re.fullmatch(r"[A-Z0-9]{2,30}", upper):
            symbol = upper
    raw_decision = lookup(entry, "decision", {"unknown"})
    if raw_decision is not None:
        decision = WORDS.get(strip(raw_decision).upper())
        if decision is not None:
            if reason in (decision.lower(), normalize(raw_decision)):
                reason = "none"
            return decision, reason, symbol
    raw_executed = lookup(entry, "executed", set())
    flag = None if raw_executed is None else strip(raw_executed).lower()
    if flag in {"true", "1", "yes", "t", "y"}:
        return "EXECUTE", reason, symbol
    if flag in {"false", "0", "no", "f", "n"}:
        if reason == "none" or reason in SKIP_SET:
            return "SKIP", reason, symbol
        return ("ERROR" if reason in ERROR_SET else "BLOCKED"), reason, symbol
    return UNKNOWN, reason, symbol


# -- entries: producer-like and hostile --------------------------------------------------
