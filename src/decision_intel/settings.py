"""Settings from the environment (prefix `P35_`); the original deployment's variables as fallbacks.

Built once by the CLI and passed down; no other module reads the environment.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from decision_intel.keys import WINDOWS
from decision_intel.model.classify import Vocabulary, impossible_word
from decision_intel.model.diagnose import Thresholds

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


STATUS_STALE_MIN_S = 15.0
SNAPSHOT_STALE_MIN_S = 60.0
MISSED_TO_STALE = 3
"""Heartbeats (or snapshot rebuilds) missed in a row that make what the service wrote
stale to the views; never under the minimums above (a slow host, a busy Redis)."""


@dataclass(frozen=True)
class StaleAfter:
    """When the views call what the service wrote stale, in seconds by Redis's clock."""

    status_s: float
    """The status hash (`last_ts`, the heartbeat): `p35 check`, `why`, `top`, `dash e`."""
    snapshot_s: float
    """The window snapshots (`snapshot_ts`): `p35 dash e`."""


ROLL_MARGIN_S = 600
"""lua/flush_lib.lua's: a bucket with less than this to live when it is made goes to its day
at once; only buckets that live longer wait for the roll-up."""
ROLL_LEAD_S = 120
"""The roll-up takes a minute at the first snapshot turn after the minute closes: its
bucket must outlive the minute and an interval, with this much to spare."""


class ConfigError(Exception):
    """A setting is invalid; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="P35_", case_sensitive=False, extra="ignore", frozen=True, populate_by_name=True
    )

    redis_url: SecretStr | None = None
    redis_ca_file: str | None = None
    stream: str = Field("quantum:stream:apply.result", min_length=1)
    group: str = Field("p35_decision_intel", min_length=1)
    consumer: str | None = Field(None, min_length=1, max_length=200)
    batch_size: int = Field(500, ge=1, le=100_000)
    block_ms: int = Field(5000, ge=1, le=60_000)
    ack_interval_sec: PositiveSeconds = 10
    claim_min_idle_sec: PositiveSeconds = 60
    snapshot_interval_sec: PositiveSeconds = 10
    bucket_ttl_sec: int = Field(172_800, ge=60)
    daily_ttl_days: int = Field(90, ge=1, le=3660)
    snapshot_ttl_sec: int = Field(86_400, ge=1)
    top_reasons: int = Field(50, ge=1, le=10_000)
    symbol_top_reasons: int = Field(10, ge=1, le=10_000)
    symbol_breakdown: bool = Field(
        True, validation_alias=AliasChoices("P35_SYMBOL_BREAKDOWN", "ENABLE_SYMBOL_BREAKDOWN")
    )
    log_level: LogLevel = Field("INFO", validation_alias=AliasChoices("P35_LOG_LEVEL", "LOG_LEVEL"))
    flush_max_entries: int = Field(500, ge=1, le=1_000_000)
    flush_linger_ms: int = Field(1000, ge=0, le=10_000)
    max_reasons_per_bucket: int = Field(200, ge=2, le=100_000)
    max_symbols_per_bucket: int = Field(500, ge=1, le=100_000)
    max_deliveries: int = Field(10, ge=2, le=1_000_000)
    invalid_maxlen: int = Field(10_000, ge=1)
    heartbeat_interval_sec: float = Field(3.0, gt=0, le=5)
    lease_sec: float = Field(15.0, ge=1, le=3600)
    progress_interval_sec: float = Field(10.0, gt=0, le=3600)
    alert_windows: str = Field("5m", min_length=2)
    alert_min_decisions: int = Field(100, ge=1)
    alert_dedup_sec: float = Field(300, ge=0, le=86_400)
    stuck_min_decisions: int = Field(10, ge=1)
    mix_window: Literal["1m", "5m", "15m", "1h"] = "15m"
    alerts_maxlen: int = Field(1000, ge=10)
    max_id_skew_sec: int = Field(3600, ge=60, le=366 * 86_400)
    why_not_trading_below: float = Field(0.05, ge=0, le=1)
    why_degraded_below: float = Field(0.20, ge=0, le=1)
    why_gate_dominant: float = Field(0.40, gt=0, le=1)
    why_gate_listed: float = Field(0.10, gt=0, le=1)
    why_recent_entries: int = Field(2000, ge=0, le=100_000)
    read_budget_bytes: int = Field(8 << 20, ge=1 << 20, le=128 << 20)
    max_entry_bytes: int = Field(64 << 10, ge=1 << 10, le=16 << 20)
    max_entry_fields: int = Field(256, ge=8, le=100_000)
    alerts_max_per_eval: int = Field(20, ge=1, le=10_000)
    min_headroom_sec: float = Field(600, ge=0, le=30 * 86_400)
    snapshot_symbols: int = Field(100, ge=0, le=100_000)
    skip_reasons: str = ""
    error_reasons: str = ""
    reason_aliases: str = ""
    decision_words: str = ""
    metrics_port: int | None = Field(None, ge=1, le=65_535)
    metrics_addr: str = Field("127.0.0.1", min_length=1)

    # The original deployment's env file (used only when P35_REDIS_URL is unset).
    legacy_redis_host: str | None = Field(None, validation_alias="REDIS_HOST")
    legacy_redis_port: int | None = Field(None, ge=1, le=65_535, validation_alias="REDIS_PORT")
    legacy_redis_db: int | None = Field(None, ge=0, validation_alias="REDIS_DB")
    legacy_redis_password: SecretStr | None = Field(None, validation_alias="REDIS_PASSWORD")

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("redis_url")
    @classmethod
    def _scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            url = value.get_secret_value()
            parts = urlsplit(url)
            if parts.scheme not in ("redis", "rediss", "unix"):
                raise ValueError("must start with redis://, rediss:// or unix://")
            if _misparsed(url):
                raise ValueError(
                    "cannot be read as a URL; percent-encode the password's special "
                    "characters (# as %23, ? as %3F, @ as %40, / as %2F, % as %25)"
                )
            if parts.scheme != "unix" and not parts.hostname:
                raise ValueError("has no host")
        return value

    @field_validator("skip_reasons", "error_reasons")
    @classmethod
    def _codes(cls, value: str) -> str:
        _parse_codes(value)
        return value

    @field_validator("reason_aliases")
    @classmethod
    def _aliases(cls, value: str) -> str:
        _parse_pairs(value, "from=to")
        return value

    @field_validator("decision_words")
    @classmethod
    def _words(cls, value: str) -> str:
        for word, decision in _parse_pairs(value, "WORD=DECISION", codes=False).items():
            if decision.upper() not in ("EXECUTE", "SKIP", "BLOCKED", "ERROR"):
                raise ValueError(
                    f"{_echo(f'{word}={decision}')}: the decision must be EXECUTE, SKIP, "
                    "BLOCKED or ERROR"
                )
            problem = impossible_word(word)
            if problem is not None:
                raise ValueError(f"{_echo(word)} {problem}")
        return value

    def why_thresholds(self, symbol: str | None = None) -> Thresholds:
        """The verdict's thresholds (`p35 why`, `p35 top`). One symbol needs as many
        decisions as a `stuck` alert does (P35_STUCK_MIN_DECISIONS), the whole stream
        P35_ALERT_MIN_DECISIONS."""
        return Thresholds(
            not_trading_below=self.why_not_trading_below,
            degraded_below=self.why_degraded_below,
            gate_dominant=self.why_gate_dominant,
            gate_listed=self.why_gate_listed,
            min_decisions=(
                self.alert_min_decisions if symbol is None else self.stuck_min_decisions
            ),
            stale_after_s=self.stale_after().status_s,
        )

    def stale_after(self) -> StaleAfter:
        """The views' staleness limits, derived from how often the service writes: three
        heartbeats (P35_HEARTBEAT_INTERVAL_SEC) or snapshot rebuilds
        (P35_SNAPSHOT_INTERVAL_SEC) missed, and at least 15 s and 60 s."""
        return StaleAfter(
            status_s=max(STATUS_STALE_MIN_S, MISSED_TO_STALE * self.heartbeat_interval_sec),
            snapshot_s=max(SNAPSHOT_STALE_MIN_S, MISSED_TO_STALE * self.snapshot_interval_sec),
        )

    @property
    def vocabulary(self) -> Vocabulary:
        """The classification vocabulary: built-in, with the operators' entries winning."""
        return Vocabulary.with_operators(
            skip=frozenset(_parse_codes(self.skip_reasons)),
            error=frozenset(_parse_codes(self.error_reasons)),
            aliases=_parse_pairs(self.reason_aliases, "from=to"),
            words={
                w.upper(): d.upper()
                for w, d in _parse_pairs(self.decision_words, "WORD=DECISION", codes=False).items()
            },
        )

    @field_validator("alert_windows")
    @classmethod
    def _known_windows(cls, value: str) -> str:
        names = [w.strip() for w in value.split(",") if w.strip()]
        unknown = [w for w in names if w not in WINDOWS]
        if unknown or not names:
            raise ValueError(f"must be a comma-separated list of 1m, 5m, 15m, 1h (got {value!r})")
        return ",".join(names)

    @property
    def alert_window_list(self) -> list[str]:
        return self.alert_windows.split(",")

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.lease_sec < 2 * self.heartbeat_interval_sec:
            raise ValueError("P35_LEASE_SEC must be at least twice P35_HEARTBEAT_INTERVAL_SEC")
        both = set(_parse_codes(self.skip_reasons)) & set(_parse_codes(self.error_reasons))
        if both:
            raise ValueError(
                "P35_SKIP_REASONS and P35_ERROR_REASONS both list "
                + _echo(", ".join(sorted(both)), quote=False)
            )
        if self.flush_linger_ms >= self.ack_interval_sec * 1000:
            raise ValueError("P35_FLUSH_LINGER_MS must be shorter than P35_ACK_INTERVAL_SEC")
        if self.why_not_trading_below > self.why_degraded_below:
            raise ValueError("P35_WHY_NOT_TRADING_BELOW must not exceed P35_WHY_DEGRADED_BELOW")
        if (
            self.bucket_ttl_sec > ROLL_MARGIN_S
            and self.snapshot_interval_sec > self.bucket_ttl_sec - ROLL_LEAD_S
        ):
            raise ValueError(
                f"P35_SNAPSHOT_INTERVAL_SEC must be at most P35_BUCKET_TTL_SEC - {ROLL_LEAD_S} "
                f"({self.bucket_ttl_sec - ROLL_LEAD_S} s): a minute is rolled up into its day "
                "at a snapshot turn, which must come before its bucket expires"
            )
        if 4 * self.max_entry_bytes > self.read_budget_bytes:
            raise ValueError("P35_READ_BUDGET_BYTES must be at least 4 x P35_MAX_ENTRY_BYTES")
        return self

    @property
    def url(self) -> str:
        """The Redis URL to connect to (may hold a password: never log it, use `redacted_url`)."""
        if self.redis_url is not None:
            return self.redis_url.get_secret_value()
        host = self.legacy_redis_host or "localhost"
        port = self.legacy_redis_port or 6379
        db = self.legacy_redis_db or 0
        auth = ""
        if self.legacy_redis_password is not None:
            auth = f":{quote(self.legacy_redis_password.get_secret_value(), safe='')}@"
        return f"redis://{auth}{host}:{port}/{db}"

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    @property
    def consumer_name(self) -> str:
        """Stable name when configured, else unique per process (host and PID)."""
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"

    @property
    def secrets(self) -> list[str]:
        """Every secret string the settings hold, for scrubbing output."""
        found = []
        parts = urlsplit(self.url)
        if parts.password:
            found += [parts.password, unquote(parts.password)]
        found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMS]
        if self.legacy_redis_password is not None:
            found.append(self.legacy_redis_password.get_secret_value())
        return [s for s in found if s]


_CODE = re.compile(r"[a-z0-9_.-]{1,64}")
_ECHO_MAX = 60
"""An error line quotes at most this much of the bad item: the line stays one line."""


def _echo(item: str, *, quote: bool = True) -> str:
    """A bad item as an error line quotes it, cut to `_ECHO_MAX` characters."""
    cut = item if len(item) <= _ECHO_MAX else item[:_ECHO_MAX] + f"... ({len(item)} characters)"
    return repr(cut) if quote else cut


def _parse_codes(value: str) -> list[str]:
    """Comma-separated reason codes, as normalized reasons look (lower case, [a-z0-9_.-])."""
    codes = [c.strip() for c in value.split(",") if c.strip()]
    for code in codes:
        if not _CODE.fullmatch(code):
            raise ValueError(
                f"{_echo(code)} is not a reason code (lower-case letters, digits, _ . -)"
            )
    return codes


def _parse_pairs(value: str, shape: str, *, codes: bool = True) -> dict[str, str]:
    """`a=b,c=d` as a dict; each side a reason code when `codes`. A left side given twice
    is refused: which one was meant is the operator's to say, not "the last wins"."""
    out = {}
    seen = set()
    for item in (i.strip() for i in value.split(",") if i.strip()):
        left, sep, right = (part.strip() for part in item.partition("="))
        if not sep or not left or not right:
            raise ValueError(f"{_echo(item)} is not {shape}")
        if codes:
            _parse_codes(f"{left},{right}")
        key = left if codes else left.upper()  # decision words are looked up upper-cased
        if key in seen:
            raise ValueError(f"{_echo(left)} is given twice")
        seen.add(key)
        out[left] = right
    return out


_SECRET_PARAMS = frozenset({"password", "pass", "passwd", "auth"})


def _misparsed(url: str) -> bool:
    """Whether a Redis URL would be read other than its writer meant: an unencoded `#`,
    `?` or `@` in the password moves the rest into the fragment, the query or the host."""
    parts = urlsplit(url)
    rest = url.partition("://")[2]
    try:
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return True
    return "#" in url or rest.count("@") > 1 or "@" in parts.query or "@" in parts.path


def redact_url(url: str) -> str:
    """The URL with anything a password can hide in replaced by `***`: the userinfo's
    password and password-like query parameters; a URL that does not parse cleanly
    keeps only its scheme."""
    scheme = url.partition("://")[0]
    if _misparsed(url):
        return f"{scheme}://***"
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        name, sep, _ = user.partition(":")
        netloc = f"{name}:***@{host}" if sep else f"{name}@{host}"
    query = "&".join(
        f"{k}=***" if k.lower() in _SECRET_PARAMS else f"{k}={v}"
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _env_name(field_name: str, environ: Mapping[str, str] | None = None) -> str:
    """The variable behind a field: of several accepted names, the one that is set."""
    alias = Settings.model_fields[field_name].validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        names = [str(choice) for choice in alias.choices]
        present = {k.upper() for k in environ or {}}
        return next((n for n in names if n.upper() in present), names[0])
    return f"P35_{field_name.upper()}"


def _field_of(loc: str) -> str | None:
    """The field an error location names: a field name, or one of a field's aliases."""
    if loc in Settings.model_fields:
        return loc
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = alias.choices if isinstance(alias, AliasChoices) else [alias]
        if any(str(choice).upper() == loc.upper() for choice in choices):
            return name
    return None


def load(**overrides: object) -> Settings:
    """Build the settings from the environment (command-line `overrides` win).

    Raise ConfigError with one line naming the bad variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = str(err["loc"][0]) if err["loc"] else ""
        field = _field_of(loc)
        name = _env_name(field, os.environ) if field else loc
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        if not name:  # a rule across several settings: its message names them
            raise ConfigError(f"invalid settings: {err['msg']}{more}") from None
        raise ConfigError(f"invalid setting {name}: {err['msg']}{more}") from None


def unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """P35_* variables that match no setting: almost always a typo worth a warning."""
    known = {_env_name(name).upper() for name in Settings.model_fields}
    return sorted(k for k in environ if k.upper().startswith("P35_") and k.upper() not in known)


def read_env_file(text: str) -> dict[str, str]:
    """Assignments of a systemd EnvironmentFile (systemd.exec(5)), read as systemd reads
    them: no `$` expansion, so a password holding `$`, `#` or quotes means what it says.

    Comments (`#`, `;`), blank lines and lines without `=` are skipped. A value may be
    unquoted (backslash keeps the next character), 'single-quoted' (verbatim) or
    "double-quoted" (backslash escapes \\ " ` $); a trailing backslash continues a line.
    """
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        end = text.find("\n", i)
        end = n if end < 0 else end
        line = text[i:end].strip(" \t\r")
        if not line or line[0] in "#;" or "=" not in line:
            i = end + 1
            continue
        key = line.split("=", 1)[0].strip()
        j = text.index("=", i) + 1
        while j < n and text[j] in " \t":
            j += 1
        value, i = _env_value(text, j)
        out[key] = value
    return out


def _env_value(text: str, j: int) -> tuple[str, int]:
    """The value starting at text[j]; returns it and the index after its line."""
    n = len(text)
    quote = text[j] if j < n and text[j] in "'\"" else None
    chars: list[str] = []
    if quote:
        j += 1
        while j < n and text[j] != quote:
            c = text[j]
            if quote == '"' and c == "\\" and j + 1 < n:
                nxt = text[j + 1]
                if nxt == "\n":
                    j += 2
                    continue
                if nxt in '\\"`$':
                    chars.append(nxt)
                    j += 2
                    continue
            chars.append(c)
            j += 1
        end = text.find("\n", j)
        return "".join(chars), (n if end < 0 else end) + 1
    while j < n and text[j] != "\n":
        c = text[j]
        if c == "\\" and j + 1 < n:
            if text[j + 1] != "\n":
                chars.append(text[j + 1])
            j += 2
            continue
        chars.append(c)
        j += 1
    return "".join(chars).rstrip(" \t\r"), j + 1
