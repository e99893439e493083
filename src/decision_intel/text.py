"""Text from Redis made safe to print: decoded with replacement, control characters escaped.

Producers, and anyone who may create a consumer name, are untrusted. A value that
reaches an operator's terminal raw can set its title, write its clipboard (OSC 52),
clear the screen, or reorder text with bidi overrides. Every string a CLI view shows
from Redis passes through `safe()`: C0 and C1 controls, DEL, format characters (bidi
overrides, zero-width) and line/paragraph separators come out as `\\xNN`/`\\uNNNN`.
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def safe(value: object) -> str:
    """`value` (bytes: UTF-8 with replacement) as text that cannot steer a terminal."""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    if text.isascii() and text.isprintable():
        return text
    return "".join(_escape(c) for c in text)


def describe(exc: BaseException) -> str:
    """An error as one bounded, terminal-safe line: its class and message."""
    return safe(f"{type(exc).__name__}: {exc}")[:300]


def _escape(c: str) -> str:
    if c == " " or unicodedata.category(c) not in _UNSAFE_CATEGORIES:
        return c
    code = ord(c)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


NAME_MAX = 100
"""A name (a reason, a symbol, a consumer, a field) is shown cut to this many characters:
p35 writes none longer (reasons 64, symbols 30), and a planted 1 MB name must not turn
into megabytes of output."""
VALUE_MAX = 1000
"""A value from a status hash or an alert is shown cut to this."""


def cut(text: str, limit: int = NAME_MAX) -> str:
    """`text` cut to `limit` characters, saying how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}...[{len(text)} chars]"


def safe_name(value: object, limit: int = NAME_MAX, length: int | None = None) -> str:
    """A name from Redis, made safe (`safe`) and cut (`cut`). `length`: the whole name's,
    when `value` is only its first part (cut in Redis, at least 4 * limit long)."""
    length = len(value) if length is None and isinstance(value, bytes | str) else length
    if isinstance(value, bytes | str) and length is not None and length > 4 * limit:
        return f"{safe(value[: 4 * limit])[:limit]}...[{length} chars]"  # escape only what is kept
    return cut(safe(value), limit)


def safe_map(fields: Mapping[Any, Any]) -> dict[str, str]:
    """A hash or stream entry from Redis as safe text keys and values, each cut."""
    return {safe_name(k): safe_name(v, VALUE_MAX) for k, v in fields.items()}


_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def printable_ascii(names: Iterable[bytes]) -> bool:
    """Whether every one of a batch of names from Redis is printable ASCII, so plain
    decoding is safe (one scan, in C; the daemon's own names always are). Else each
    name goes through `safe`."""
    return not b"".join(names).translate(None, _PRINTABLE_ASCII)  # 8x faster than a regex


def number(value: bytes | str | float | None) -> float | None:
    """A finite number read from Redis (a timestamp, a share), or None when it is not one."""
    try:
        n = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return n if math.isfinite(n) else None


def utc(value: bytes | str | float | None, fmt: str) -> str:
    """A unix time read from Redis (an alert's timestamp), in UTC by `fmt`; "?" when it
    is not a number or not a date the calendar functions hold (gmtime raises past about
    the year 2**31: OSError at 1e17, OverflowError at 1e20)."""
    seconds = number(value)
    if seconds is None:
        return "?"
    try:
        return time.strftime(fmt, time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return "?"


SHARE_DIGITS = 4
"""Decimals a share keeps in the JSON documents and the alert events (0.7098)."""


def share(part: float, total: float, digits: int | None = None) -> float:
    """`part` as a fraction of `total`, rounded to `digits` places when given; 0.0 of a
    total of 0 (an empty window holds no share of anything)."""
    if not total:
        return 0.0
    fraction = part / total
    return fraction if digits is None else round(fraction, digits)


def share_text(part: float, total: float) -> str:
    """A share as an alert event's field carries it: SHARE_DIGITS decimals, `0.7000`."""
    return f"{share(part, total):.{SHARE_DIGITS}f}"


def percent(fraction: float, width: int = 0, decimals: int = 0) -> str:
    """A share as every view prints it, `42 %`: right-aligned in `width` characters
    before the sign, with `decimals` places. Without decimals, a share under 1 % that is
    not 0 keeps one (`0.4 %`), so no gate at all and a small one never read alike."""
    if decimals == 0 and 0 < fraction < 0.01:
        decimals = 1
    return f"{fraction * 100:{width}.{decimals}f} %"


_COUNT_DIGITS_MAX = 19
"""Every count the daemon writes fits in a signed 64-bit integer: 19 digits."""


def count(value: bytes | str | float | None) -> int | None:
    """A count read from Redis, or None when it is not one (not written by the daemon: by
    hand, or by an older or broken writer). A view skips it rather than dying.

    A field's count is ASCII digits and nothing else: `int()` also takes " 7 ", "+7",
    "1_000" and other scripts' digits ("٣"), none of which Redis's HINCRBY writes. A ZSET
    score (a float) counts when it is whole, finite and not negative.
    """
    if isinstance(value, bytes | str):
        ok = value.isascii() and value.isdigit() and len(value) <= _COUNT_DIGITS_MAX
        return int(value) if ok else None
    if isinstance(value, float):
        return int(value) if value.is_integer() and value >= 0 else None
    return None
