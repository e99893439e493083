"""Classification of one apply.result entry into (decision, reason, symbol): SPEC section 4.

Pure: no I/O, no clock. A `Classifier` holds the vocabulary (the built-in SKIP and
ERROR sets, aliases and decision words, with the operators' additions from the env file
winning) and small bounded memos; `classify(entry)` is the hot path, called once per
stream entry. `explain(entry)` runs the same rules and also says which rule decided and
where each field it used came from (`p35 explain`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

EXECUTE, SKIP, BLOCKED, ERROR, UNKNOWN = "EXECUTE", "SKIP", "BLOCKED", "ERROR", "UNKNOWN"
DECISIONS = (EXECUTE, SKIP, BLOCKED, ERROR, UNKNOWN)
NO_REASON = "none"

DECISION_WORDS = {
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

_TRUE = frozenset({"true", "1", "yes", "t", "y"})
_FALSE = frozenset({"false", "0", "no", "f", "n"})
_EMPTY_REASONS = frozenset({"none", "null", "nil"})
_EMPTY_DECISIONS = frozenset({"unknown"})
_ABSENT_MAX = max(map(len, _EMPTY_REASONS | _EMPTY_DECISIONS))
_STRIP_CHARS = (
    "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
    "\u200b\u200c\u200d\ufeff"
)
"""Unicode whitespace (every character `str.isspace` and the regex `\\s` match; a test
keeps the list whole) and the zero-width characters U+200B-U+200D, U+FEFF."""
_READ = ("decision", "executed", "error", "reason", "symbol")
"""The fields the rules read, in any layer."""
_REASON_LIKE = frozenset({"error", "reason"})
_REASON_BAD_CHARS = re.compile(r"[^a-z0-9_.-]+")
_TRAILING_NUMBER = re.compile(r"(?:_[0-9]+(?:\.[0-9]+)?)+$")
_REASON_END = re.compile(r"[:,]")
_NOT_NUMBER = re.compile(r"[^_0-9.]")
"""A character no trailing numeric parameter holds: one past the 64th settles the cut."""
_REASON_WINDOW = 256
"""How much of a long reason value is read first (then four times more, as needed)."""
SYMBOL = re.compile(r"[A-Z0-9]{2,30}")
"""What a symbol is, once upper-cased: anything else is no symbol (the CLI checks the same)."""
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REASON_MAX = 64
_CACHE_MAX = 4096
"""Entries per memo. With the length limits below, the memos hold at most about
4096 x (64 + 256 + 5 x 256) bytes of keys: a few MB, whatever producers write."""
_LAYERED_MAX = 512
"""Entries in the memo of results that depended on `payload` or `details`, keyed by
what the rules read there: at most 15 parts of 256 characters, under 8 MB whatever
producers write.
Real producers vary few of those values (symbol, error code, decision), so it hits
whatever else a layer holds (a unique plan_id and timestamp)."""
_WORD_MAX = 64
_KEY_PART_MAX = 256
LAYERS = ("top", "payload", "details")


class Classification(NamedTuple):
    decision: str
    reason: str
    symbol: str | None
    cause: str | None
    """Why the entry ended UNKNOWN (None otherwise); recorded in quantum:p35:invalid."""


@dataclass(frozen=True)
class Vocabulary:
    """What the rules know: built-in words and codes, the operators' entries winning."""

    skip: frozenset[str] = SKIP_REASONS
    error: frozenset[str] = ERROR_REASONS
    aliases: Mapping[str, str] = field(default_factory=lambda: dict(REASON_ALIASES))
    words: Mapping[str, str] = field(default_factory=lambda: dict(DECISION_WORDS))

    @classmethod
    def with_operators(
        cls,
        *,
        skip: frozenset[str] = frozenset(),
        error: frozenset[str] = frozenset(),
        aliases: Mapping[str, str] | None = None,
        words: Mapping[str, str] | None = None,
    ) -> Vocabulary:
        """The built-in vocabulary with the operators' entries added; where they differ
        from a built-in one (a code moved from SKIP to ERROR, say), theirs win."""
        return cls(
            skip=(SKIP_REASONS - error) | skip,
            error=(ERROR_REASONS - skip) | error,
            aliases={**REASON_ALIASES, **(aliases or {})},
            words={**DECISION_WORDS, **(words or {})},
        )


def impossible_word(word: str) -> str | None:
    """Why an operator's decision word (`P35_DECISION_WORDS`) could never apply to a
    `decision` value, or None when it can: the rules strip a value and take UNKNOWN for
    no decision at all, before they look a word up."""
    if strip(word) != word:
        return "begins or ends with characters the rules strip from a value"
    if word.lower() in _EMPTY_DECISIONS:
        return "counts as no decision (SPEC section 4), so it can never apply"
    return None


def strip(text: str) -> str:
    """Unicode whitespace and the zero-width characters U+200B-U+200D, U+FEFF, both ends."""
    return text.strip(_STRIP_CHARS)


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _json_value(value: object, reason_like: bool) -> str | None:
    """A JSON value as text, or None when it counts as empty: null, arrays and objects
    (and `false` and `0` for error and reason)."""
    if value is None or isinstance(value, (list, dict)):
        return None
    if isinstance(value, bool):
        return None if (reason_like and not value) else ("true" if value else "false")
    if isinstance(value, (int, float)):
        if reason_like and value == 0:
            return None
        return json.dumps(value)
    return value if isinstance(value, str) else None


def _json_object(raw: object) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        # orjson (about 4x the stdlib's speed) takes valid UTF-8 JSON, and gives what
        # the stdlib gives but for integers past 64 bits (floats to orjson): a float
        # where the rules read sends the text back the stdlib's way, as does what orjson
        # refuses (invalid UTF-8, NaN, lone surrogates). That way decodes first, as every
        # value is: json.loads(bytes) would guess UTF-16/32 and reject the invalid UTF-8
        # SPEC says to replace.
        parsed = orjson.loads(raw) if isinstance(raw, (bytes, str)) else None
        if type(parsed) is dict and _has_float(parsed):
            parsed = json.loads(_text(raw))
    except orjson.JSONDecodeError:
        try:
            parsed = json.loads(_text(raw))
        except (ValueError, RecursionError):
            return None
    return parsed if isinstance(parsed, dict) else None


def _has_float(obj: dict[str, Any]) -> bool:
    get = obj.get
    # A plain loop: `float in map(type, ...)` costs 3x (it compares types), any() 1.5x.
    for name in _READ:  # noqa: SIM110
        if type(get(name)) is float:
            return True
    return False


class _Fields:
    """Field lookup across the three layers: top level, then `payload`, then `details`.

    The JSON layers are parsed lazily: most entries answer from the top level. When
    `trace` is given, each value found is recorded with the layer it came from.
    """

    __slots__ = ("_layers_parsed", "_top", "trace")

    def __init__(self, top: Mapping[bytes, bytes], trace: dict[str, Any] | None = None):
        self._top = top
        self._layers_parsed: tuple[tuple[str, dict[str, Any]], ...] | None = None
        """(name, object) of each JSON layer the entry has, once a lookup needed them."""
        self.trace = trace

    @property
    def layered(self) -> bool:
        """A lookup went past the top level: what was found may depend on the layers."""
        return self._layers_parsed is not None

    def _layers(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        if self._layers_parsed is None:
            found = []
            for name, field in ((LAYERS[1], b"payload"), (LAYERS[2], b"details")):
                obj = _json_object(self._top.get(field))
                if obj is not None:
                    found.append((name, obj))
            self._layers_parsed = tuple(found)
        return self._layers_parsed

    def get(
        self, name: bytes, absent: frozenset[str] = frozenset(), reason_like: bool = False
    ) -> str | None:
        """The first value of `name` that is non-empty once stripped and not in `absent`
        (_EMPTY_REASONS or _EMPTY_DECISIONS: `_among` knows their longest word)."""
        value = self._top.get(name)
        if value is not None:
            text = _text(value)
            stripped = strip(text)
            if stripped and not _among(stripped, absent):
                return self._found(name, text, "top")
        layers = self._layers()
        if not layers:
            return None
        key = name.decode()
        for layer_name, layer in layers:
            found = layer.get(key)
            text_or_none = found if type(found) is str else _json_value(found, reason_like)
            if text_or_none is None:
                continue
            stripped = strip(text_or_none)
            if stripped and not _among(stripped, absent):
                return self._found(name, text_or_none, layer_name)
        return None

    def layer_key(self) -> tuple[str | None, ...] | None:
        """What the rules can read in the JSON layers: each layer's name and the text
        `get` would see for each field they read (`error`/`reason` up to the first ':',
        as with the top level). None when a value is too long to remember."""
        key: list[str | None] = []
        for layer_name, layer in self._layers():
            key.append(layer_name)
            for name in _READ:
                found = layer.get(name)
                if found is None:
                    key.append(None)
                    continue
                reason_like = name in _REASON_LIKE
                text = found if type(found) is str else _json_value(found, reason_like)
                if text is not None:
                    if reason_like and (cut := text.find(":")) >= 0:
                        text = text[: cut + 1]
                    if len(text) > _KEY_PART_MAX:
                        return None
                key.append(text)
        return tuple(key)

    def _found(self, name: bytes, text: str, layer: str) -> str:
        if self.trace is not None:
            self.trace[name.decode()] = {"value": text[:200], "layer": layer}
        return text


def _among(stripped: str, words: frozenset[str]) -> bool:
    """Whether a stripped value, lower-cased, is one of `words`: lower-casing never
    shortens a string, so a value longer than every word is none of them unread."""
    return len(stripped) <= _ABSENT_MAX and stripped.lower() in words


def _raw_reason(fields: _Fields) -> str | None:
    return fields.get(b"error", _EMPTY_REASONS, reason_like=True) or fields.get(
        b"reason", _EMPTY_REASONS, reason_like=True
    )


def parse_flag(value: str) -> bool | None:
    word = strip(value).lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    return None


def _preview(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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


def _remember(
    memo: dict[tuple[object, ...], Classification],
    key: tuple[object, ...],
    result: Classification,
    size: int,
) -> None:
    if len(memo) >= size:
        memo.clear()
    memo[key] = result


_SEE_LAYERS = Classification(UNKNOWN, NO_REASON, None, "see the layers")
"""In the top-level memo: this top level leaves the result to `payload`/`details`."""


class Classifier:
    """SPEC section 4 with one vocabulary, and memos bounded in entries and in bytes."""

    def __init__(self, vocabulary: Vocabulary | None = None):
        self.vocab = vocabulary or Vocabulary()
        self._results: dict[tuple[object, ...], Classification] = {}
        self._layered: dict[tuple[object, ...], Classification] = {}
        self._words: dict[str, str | None] = {}
        self._reasons: dict[str, str] = {}
        self._word_max = max(map(len, self.vocab.words), default=0)
        """Upper-casing never shortens a string: a longer value is no word, unread."""

    def classify(self, entry: Mapping[bytes, bytes]) -> Classification:
        """Classify one entry given as its field map (bytes keys, as redis-py returns them).

        Producers repeat themselves, so results are remembered by the top-level values
        the rules read (`error`/`reason` only up to the first ':', where parameters
        start) when those alone decided: a repeat costs a few dict lookups, whatever
        its `payload` and `details` hold. Whether the rules look into those layers at
        all depends on the top-level values alone, so the memo never serves an entry
        whose layers would have mattered: for such a top level it says so, and the
        result is remembered by the top level and what the rules read in the layers
        (the Intent Executor's `details` is unique, what it says is not). Large values
        are never remembered.
        """
        get = entry.get
        top = (
            get(b"decision"),
            get(b"executed"),
            _reason_part(get(b"error")),
            _reason_part(get(b"reason")),
            get(b"symbol"),
        )
        try:
            hit = self._results.get(top)
        except TypeError:  # an unhashable value (only from callers other than redis-py)
            return self._classify(entry)
        if hit is not None and hit is not _SEE_LAYERS:
            return hit
        if hit is _SEE_LAYERS:  # this top level leaves the result to the layers
            # Most such entries have no layer at all (an Apply Layer entry without a
            # `decision`) and need no _Fields: building one anyway took Apply Layer
            # entries from 1.1 to 1.4-1.7 us on average.
            fields = None
            if get(b"payload") or get(b"details"):
                fields = _Fields(entry)
                key = fields.layer_key()
            else:
                key = ()  # no layer: the top level is all there is to read
            hit = None if key is None else self._layered.get((top, key))
            if hit is None:
                hit = self._decide(fields or _Fields(entry))
                if key is not None:
                    _remember(self._layered, (top, key), hit, _LAYERED_MAX)
            return hit
        fields = _Fields(entry)
        hit = self._decide(fields)
        if all(_small_bytes(part) for part in top):
            if not fields.layered:
                _remember(self._results, top, hit, _CACHE_MAX)
            else:
                _remember(self._results, top, _SEE_LAYERS, _CACHE_MAX)
                key = fields.layer_key()
                if key is not None:
                    _remember(self._layered, (top, key), hit, _LAYERED_MAX)
        return hit

    def explain(self, entry: Mapping[bytes, bytes]) -> dict[str, Any]:
        """The classification, the rule that decided (`decision`, `executed` or none) and
        each field the rules used, with the layer it came from (`p35 explain`)."""
        trace: dict[str, Any] = {}
        result = self._classify(entry, trace)
        rule = trace.pop("_rule", None)
        return {
            "decision": result.decision,
            "reason": result.reason,
            "symbol": result.symbol,
            "rule": rule,
            "cause": result.cause,
            "fields": trace,
        }

    def detail(self, entry: Mapping[bytes, bytes]) -> str | None:
        """The raw `error`/`reason` text an entry's reason comes from, parameters and all
        (`p35 why` shows the most common ones)."""
        return _raw_reason(_Fields(entry))

    def _classify(
        self, entry: Mapping[bytes, bytes], trace: dict[str, Any] | None = None
    ) -> Classification:
        return self._decide(_Fields(entry, trace))

    def _decide(self, fields: _Fields) -> Classification:
        trace = fields.trace
        reason = self.normalize_reason(_raw_reason(fields))
        symbol = _symbol(fields.get(b"symbol"))

        # Rule 1: a decision word we know.
        word = fields.get(b"decision", _EMPTY_DECISIONS)
        foreign = None
        if word is not None:
            decision = self.decision_word(word)
            if decision is not None:
                if trace is not None:
                    trace["_rule"] = "decision"
                own_words = {decision.lower(), self.normalize_reason(word)}
                if reason in own_words:  # `decision=BLOCKED, error=blocked`: no reason given
                    reason = NO_REASON
                return Classification(decision, reason, symbol, None)
            foreign = _preview(strip(word))  # a word of the producer's own: rule 2 decides

        # Rule 2: the executed flag.
        raw_executed = fields.get(b"executed")
        executed = None if raw_executed is None else parse_flag(raw_executed)
        if executed is not None:
            if trace is not None:
                trace["_rule"] = "executed"
            decision = EXECUTE if executed else self.decision_for_reason(reason)
            return Classification(decision, reason, symbol, None)

        # Rule 3: nothing to decide by.
        if raw_executed is None:
            why = "no executed field"
        else:
            why = f"unrecognized executed value {_preview(strip(raw_executed))!r}"
        if foreign is not None:
            cause = f"unrecognized decision {foreign!r} and {why}"
        elif raw_executed is None:
            cause = "no decision and no executed field"
        else:
            cause = why
        return Classification(UNKNOWN, reason, symbol, cause)

    def decision_word(self, value: str) -> str | None:
        """The decision a `decision` value names, or None for a word we do not know."""
        if value in self._words:
            return self._words[value]
        word = strip(value)
        found = self.vocab.words.get(word.upper()) if len(word) <= self._word_max else None
        if len(value) <= _WORD_MAX:  # remember words, not arbitrary producer data
            if len(self._words) >= _CACHE_MAX:
                self._words.clear()
            self._words[value] = found
        return found

    def normalize_reason(self, value: str | None) -> str:
        """SPEC section 4: before ':' then ',', lower, [a-z0-9_.-], no trailing numeric
        parameter, 64 characters, aliases."""
        if value is None:
            return NO_REASON
        if len(value) > _KEY_PART_MAX:
            return self._normalize_long(value)
        prefix = value.partition(":")[0]
        hit = self._reasons.get(prefix)
        if hit is None:
            hit = self._normalized(prefix.partition(",")[0])
            if len(self._reasons) >= _CACHE_MAX:
                self._reasons.clear()
            self._reasons[prefix] = hit
        return hit

    def _normalized(self, text: str) -> str:
        """The rule on the text before ':' and ','."""
        text = _REASON_BAD_CHARS.sub("_", text.lower()).strip("_")
        number = _TRAILING_NUMBER.search(text)
        if number is not None and number.start() > 0:
            text = text[: number.start()]
        text = text[:_REASON_MAX] or NO_REASON
        return self.vocab.aliases.get(text, text)

    def _normalize_long(self, value: str) -> str:
        """The rule on a long value, reading no more of it than decides the result (a
        5 KB error string took 1,000 times a short one). A window of the value is cleaned
        as the rule cleans it; once a character that no trailing numeric parameter holds
        lies past the 64th, the cut cannot move: the first 64 are the result. Else the
        window grows, up to the first ':' or ',' or the value's end, where the rule runs
        on what was read. Lowering and cleaning work character by character, so a
        window's cleaned text is the whole's but for a last '_' (a run of characters
        the rule replaces may go on), and a '_' decides nothing here."""
        size = _REASON_WINDOW
        while True:
            window = value[:size]
            end = _REASON_END.search(window)
            if end is not None or size >= len(value):
                return self._normalized(window if end is None else window[: end.start()])
            text = _REASON_BAD_CHARS.sub("_", window.lower()).lstrip("_")
            if _NOT_NUMBER.search(text, _REASON_MAX):
                text = text[:_REASON_MAX]
                return self.vocab.aliases.get(text, text)
            size *= 4

    def decision_for_reason(self, reason: str) -> str:
        """The decision of a not-executed entry, by its (normalized) reason."""
        if reason == NO_REASON or reason in self.vocab.skip:
            return SKIP
        if reason in self.vocab.error:
            return ERROR
        return BLOCKED


def _symbol(value: str | None) -> str | None:
    if value is None:
        return None
    text = strip(value)
    if len(text) > 30:  # never a symbol; spares the rest on huge values
        return None
    text = text.translate(_ASCII_UPPER)  # ASCII letters only: nothing else changes
    return text if SYMBOL.fullmatch(text) else None


_default = Classifier()
classify = _default.classify
"""The built-in vocabulary's classifier (the daemon builds its own from the settings)."""
normalize_reason = _default.normalize_reason
