"""Settings: defaults, legacy variables, and one clear line + exit 78 on a bad value."""

from __future__ import annotations

import subprocess

import pytest

from decision_intel.settings import ConfigError, load, redact_url, unknown_variables
from tests.helpers import p35_executable


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("P35_", "REDIS_")) or name in ("LOG_LEVEL", "ENABLE_SYMBOL_BREAKDOWN"):
            monkeypatch.delenv(name)


def test_defaults_match_the_spec() -> None:
    s = load()
    assert s.url == "redis://localhost:6379/0"
    assert (s.stream, s.group) == ("quantum:stream:apply.result", "p35_decision_intel")
    assert (s.ack_interval_sec, s.claim_min_idle_sec) == (10, 60)
    assert (s.bucket_ttl_sec, s.snapshot_ttl_sec, s.top_reasons) == (172_800, 86_400, 50)
    assert s.symbol_breakdown is True
    assert s.log_level == "INFO"


def test_legacy_variables_build_the_url_when_p35_redis_url_is_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_HOST", "redis.internal")
    monkeypatch.setenv("REDIS_PORT", "6380")
    monkeypatch.setenv("REDIS_DB", "3")
    monkeypatch.setenv("REDIS_PASSWORD", "p@ss/word")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    monkeypatch.setenv("ENABLE_SYMBOL_BREAKDOWN", "false")
    s = load()
    assert s.url == "redis://:p%40ss%2Fword@redis.internal:6380/3"
    assert s.redacted_url == "redis://:***@redis.internal:6380/3"
    assert (s.log_level, s.symbol_breakdown) == ("DEBUG", False)
    assert "p@ss/word" in s.secrets


def test_p35_variables_win_over_legacy_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "old-host")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("P35_REDIS_URL", "unix:///run/redis/redis.sock?db=2")
    monkeypatch.setenv("P35_LOG_LEVEL", "warning")
    s = load()
    assert s.url == "unix:///run/redis/redis.sock?db=2"
    assert s.log_level == "WARNING"


@pytest.mark.e2e  # each case starts the real `p35 run` (it exits 78)
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("P35_BATCH_SIZE", "abc"),
        ("P35_BATCH_SIZE", "0"),
        ("P35_BLOCK_MS", "-5"),
        ("P35_ACK_INTERVAL_SEC", "0"),
        ("P35_REDIS_URL", "http://localhost"),
        ("P35_LOG_LEVEL", "LOUD"),
        ("P35_SYMBOL_BREAKDOWN", "maybe"),
        ("ENABLE_SYMBOL_BREAKDOWN", "maybe"),
        ("REDIS_PORT", "70000"),
        ("P35_TOP_REASONS", "1e9"),
    ],
)
def test_a_bad_value_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as err:
        load()
    message = str(err.value)
    assert message.startswith(f"invalid setting {name}:")
    assert "\n" not in message


def test_a_bad_url_never_echoes_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P35_REDIS_URL", "http://user:hunter2secret@host:6379")
    with pytest.raises(ConfigError) as err:
        load()
    assert "hunter2secret" not in str(err.value)


def test_redact_url() -> None:
    assert redact_url("rediss://app:s3cr3t@h:6380/1") == "rediss://app:***@h:6380/1"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("redis://h:6379/0?password=s3cr3t&db=1") == (
        "redis://h:6379/0?password=***&db=1"
    )
    assert redact_url("unix://:s3cr3t@/run/redis.sock?db=0") == "unix://:***@/run/redis.sock?db=0"


@pytest.mark.parametrize(
    "url",
    [
        "redis://:Zq9$secret#x@h:6379/0",  # '#' starts a fragment: host and port lost
        "redis://:pa?ss-secret@h:6379/0",  # '?' starts the query
        "redis://u:p@ss-secret@h:6379/0",  # a second '@'
        "redis://:secret-only@h:notaport/0",
    ],
)
def test_a_url_that_would_be_misread_stops_the_start_naming_the_fix(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unencoded '#', '?' or '@' in the password: a ConfigError (exit 78) that says to
    percent-encode, and neither the error nor the redacted form shows any of the secret."""
    monkeypatch.setenv("P35_REDIS_URL", url)
    with pytest.raises(ConfigError) as err:
        load()
    message = str(err.value)
    assert message.startswith("invalid setting P35_REDIS_URL:")
    assert "percent-encode" in message and "%23" in message
    assert "secret" not in message and "secret" not in redact_url(url)


def test_every_password_form_is_a_secret_to_scrub() -> None:
    s = load(redis_url="redis://u:p%40ss-word@h:6379/0?password=q-word")
    assert {"p%40ss-word", "p@ss-word", "q-word"} <= set(s.secrets)


def test_unknown_p35_variables_are_reported() -> None:
    env = {"P35_BATCH_SIZ": "5", "P35_BATCH_SIZE": "5", "PATH": "/bin"}
    assert unknown_variables(env) == ["P35_BATCH_SIZ"]


@pytest.mark.e2e
def test_p35_run_with_a_bad_setting_exits_78_with_one_line() -> None:
    """The real process: exit status 78 (EX_CONFIG) and one line naming the variable."""
    proc = subprocess.run(
        [p35_executable(), "run"],
        env={"PATH": "/usr/bin:/bin", "P35_BATCH_SIZE": "lots", "P35_REDIS_URL": "redis://x:1/0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "P35_BATCH_SIZE" in lines[0]


def test_env_file_is_read_as_systemd_reads_it_without_shell_expansion() -> None:
    """The proof and the CLI read the service's env file as systemd does: `$`, `#` and
    quotes in a password are kept as written (a shell would expand or cut them)."""
    from decision_intel.settings import read_env_file

    text = (
        "# comment\n"
        "; also a comment\n"
        "\n"
        "P35_REDIS_URL=redis://:Zq9$secret%23x@h:6379/0\n"
        "A = 'single $HOME \\n kept'  \n"
        'B="double \\" \\\\ \\$HOME"\n'
        "C=un\\quoted  with  spaces   \n"
        "D=cont\\\ninued\n"
        "no equals sign here\n"
        "E=\n"
    )
    assert read_env_file(text) == {
        "P35_REDIS_URL": "redis://:Zq9$secret%23x@h:6379/0",
        "A": "single $HOME \\n kept",
        "B": 'double " \\ $HOME',
        "C": "unquoted  with  spaces",
        "D": "continued",
        "E": "",
    }


@pytest.mark.e2e
def test_p35_run_with_an_unencoded_hash_in_the_password_exits_78_not_1() -> None:
    """It used to die in redis-py with a traceback (exit 1), printing part of the secret."""
    proc = subprocess.run(
        [p35_executable(), "run"],
        env={"PATH": "/usr/bin:/bin", "P35_REDIS_URL": "redis://:Zq9$secret#x@127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78, proc.stderr
    [line] = (proc.stdout + proc.stderr).strip().splitlines()
    assert "P35_REDIS_URL" in line and "percent-encode" in line and "secret" not in line


@pytest.mark.e2e  # each case starts the real `p35 run` (it exits 78)
@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("P35_SKIP_REASONS", "churn_global_freeze,Not A Code"),
        ("P35_ERROR_REASONS", "ok,bad/code"),
        ("P35_REASON_ALIASES", "risk_booting"),
        ("P35_DECISION_WORDS", "HOLD=MAYBE"),
        # issue 27 #13: a key given twice, a word that can never apply, a huge bad item
        ("P35_DECISION_WORDS", "HOLD=SKIP,hold=EXECUTE"),
        ("P35_REASON_ALIASES", "risk_booting=a,risk_booting=b"),
        ("P35_DECISION_WORDS", "UNKNOWN=SKIP"),
        ("P35_DECISION_WORDS", "Unknown=BLOCKED"),
        ("P35_SKIP_REASONS", "Bad" * 40_000),
        ("P35_DECISION_WORDS", "HOLD" * 25_000),
        ("P35_DECISION_WORDS", "HOLD=" + "X" * 100_000),
    ],
)
def test_a_malformed_vocabulary_stops_p35_run_with_78_naming_it(name: str, value: str) -> None:
    """A bad item is named in one short line: a 100k-character item used to be echoed
    whole, and duplicates and impossible words were accepted (issue 27 #13)."""
    proc = subprocess.run(
        [p35_executable(), "run"],
        env={"PATH": "/usr/bin:/bin", name: value, "P35_REDIS_URL": "redis://127.0.0.1:1/0"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 78
    [line] = (proc.stdout + proc.stderr).strip().splitlines()
    assert name in line and len(line) < 300, line[:400]


def test_the_views_staleness_limits_follow_how_often_the_service_writes() -> None:
    """Three heartbeats or snapshot rebuilds missed, never under 15 s and 60 s; `p35 why`
    and `top` judge by the same limit as `check` and `dash` (Settings.stale_after)."""
    default = load()
    assert (default.stale_after().status_s, default.stale_after().snapshot_s) == (15.0, 60.0)
    assert default.why_thresholds().stale_after_s == default.stale_after().status_s
    fast = load(heartbeat_interval_sec=0.5, snapshot_interval_sec=1)
    assert (fast.stale_after().status_s, fast.stale_after().snapshot_s) == (15.0, 60.0)
    slow = load(heartbeat_interval_sec=5, snapshot_interval_sec=20.5)
    assert (slow.stale_after().status_s, slow.stale_after().snapshot_s) == (15.0, 61.5)
    slower = load(snapshot_interval_sec=120)
    assert slower.stale_after().snapshot_s == 360.0
    assert slower.why_thresholds("BTCUSDT").stale_after_s == 15.0


def test_the_vocabulary_settings_reach_the_classifier(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P35_SKIP_REASONS", "churn_global_freeze")
    monkeypatch.setenv("P35_ERROR_REASONS", "no_position")
    monkeypatch.setenv("P35_REASON_ALIASES", "risk_booting=risk_layer0_fail")
    monkeypatch.setenv("P35_DECISION_WORDS", "HOLD=SKIP")
    v = load().vocabulary
    assert "churn_global_freeze" in v.skip and "no_position" in v.error
    assert "no_position" not in v.skip  # theirs win over the built-in SKIP set
    assert v.aliases["risk_booting"] == "risk_layer0_fail" and v.words["HOLD"] == "SKIP"


@pytest.mark.parametrize(
    "ttl_s, interval_s, refused",
    [
        pytest.param("660", "700", True, marks=pytest.mark.e2e),  # refused: runs `p35 run`
        pytest.param("660", "541", True, marks=pytest.mark.e2e),
        ("660", "540", False),
        ("120", "10", False),
    ],
)
def test_a_snapshot_interval_the_buckets_do_not_outlive_stops_p35_run_with_78(
    ttl_s: str, interval_s: str, refused: bool
) -> None:
    """Issue 27 #2: a minute is rolled up into its day at a snapshot turn after it closes;
    with P35_BUCKET_TTL_SEC=660 and P35_SNAPSHOT_INTERVAL_SEC=700 every bucket expired
    before it. Such settings stop the start (exit 78, one line naming the variable); a
    TTL of 600 s or less sends every count to its day at once, so any interval does."""
    env = {
        "PATH": "/usr/bin:/bin",
        "P35_REDIS_URL": "redis://127.0.0.1:1/0",  # nothing listens: a start goes on to wait
        "P35_BUCKET_TTL_SEC": ttl_s,
        "P35_SNAPSHOT_INTERVAL_SEC": interval_s,
    }
    if not refused:
        assert load(bucket_ttl_sec=ttl_s, snapshot_interval_sec=interval_s, redis_url=None)
        return
    proc = subprocess.run(
        [p35_executable(), "run"], env=env, capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 78
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert "P35_SNAPSHOT_INTERVAL_SEC" in lines[0] and "P35_BUCKET_TTL_SEC" in lines[0]
