"""Deployment: the idempotent deploy script, the unit files, sd_notify and the proof."""

from __future__ import annotations

import configparser
import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from decision_intel.devtools.testing import free_port
from tests.helpers import Daemon, RawRedis, drained, run_p35, wait_for
from tests.traffic import load

ROOT = Path(__file__).resolve().parent.parent
UNITS = ROOT / "deploy" / "systemd"
UNIT = "quantum-p35-decision-intelligence"
ENV_REL = "etc/quantum/p35-decision-intelligence.env"
RULES_REL = "etc/prometheus/rules.d/p35.rules.yml"

FAKE_SYSTEMCTL = """#!/bin/sh
# Records every call; remembers enable --now, so is-active answers like systemd would.
echo "$*" >> "$FAKE_STATE/calls"
case "$1" in
  is-active) [ -f "$FAKE_STATE/active" ] && { [ "$2" = --quiet ] || echo active; exit 0; }
             [ "$2" = --quiet ] || echo inactive; exit 3 ;;
  enable) touch "$FAKE_STATE/active" ;;
esac
exit 0
"""


def run_deploy(
    env: dict[str, str], *args: str, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """scripts/deploy_p35.sh with this environment, its output captured."""
    return subprocess.run(
        [str(ROOT / "scripts/deploy_p35.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tree_state(root: Path) -> dict[str, str]:
    """Every file and link under root, with its content hash, mode and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if path.is_symlink():
            out[rel] = f"link:{os.readlink(path)}"
        elif path.is_file():
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
            out[rel] = f"{digest}:{oct(st.st_mode)}:{st.st_mtime_ns}"
    return out


# The tests that read the one deploy run on one xdist worker, where it is built once
# (session scope: other modules' tests run between them on that worker).
DEPLOYED = pytest.mark.xdist_group("pip")  # the group of every pip test (conftest.py)


@pytest.fixture(scope="session")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Deploy twice into a temporary root, with an operator edit in between."""
    base = tmp_path_factory.mktemp("deploy")
    dest, state = base / "root", base / "state"
    state.mkdir()
    fake = base / "systemctl"
    fake.write_text(FAKE_SYSTEMCTL)
    fake.chmod(0o755)
    env = {
        **os.environ,
        "DESTDIR": str(dest),
        "SYSTEMCTL": str(fake),
        "FAKE_STATE": str(state),
        "PYTHON": sys.executable,
    }

    def deploy(*args: str) -> subprocess.CompletedProcess[str]:
        return run_deploy(env, "--skip-proof", *args, timeout=600)

    (dest / RULES_REL).parent.mkdir(parents=True)  # a Prometheus that reads rules.d
    first = deploy()
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    calls_first = (state / "calls").read_text().splitlines()
    env_file = dest / ENV_REL
    env_file.write_text(env_file.read_text() + "P35_REDIS_URL=redis://ops-edited:6379/0\n")
    before = tree_state(dest)
    second = deploy()
    after = tree_state(dest)
    calls_second = (state / "calls").read_text().splitlines()[len(calls_first) :]
    dry = deploy("--dry-run")
    return {
        "dest": dest,
        "first": first,
        "second": second,
        "dry": dry,
        "before": before,
        "after": after,
        "calls_first": calls_first,
        "calls_second": calls_second,
        "env": env,
    }


@pytest.mark.pip
@DEPLOYED
def test_first_deploy_installs_code_units_and_env(deployed: dict[str, Any]) -> None:
    first = deployed["first"]
    assert first.returncode == 0, first.stderr
    dest: Path = deployed["dest"]
    app = dest / "opt/quantum/p35-decision-intelligence"
    assert (app / "venv").is_symlink()
    version = subprocess.run(
        [str(app / "venv/bin/p35"), "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("p35 ")
    for unit in (f"{UNIT}.service", f"{UNIT}@.service"):
        assert (dest / "etc/systemd/system" / unit).read_bytes() == (UNITS / unit).read_bytes()
    assert oct((dest / ENV_REL).stat().st_mode & 0o777) == "0o600"
    assert (app / "bin/proof_p35_decision_intelligence.sh").exists()
    rules = dest / RULES_REL
    assert rules.read_bytes() == (ROOT / "deploy/prometheus/p35.rules.yml").read_bytes()
    assert oct(rules.stat().st_mode & 0o777) == "0o644"
    assert "prometheus: rules installed" in first.stdout
    assert deployed["calls_first"] == [
        "daemon-reload",
        f"list-units --plain --no-legend --state=active {UNIT}@*.service",
        f"is-active --quiet {UNIT}",
        f"enable --now {UNIT}",
    ]


@pytest.mark.pip
@DEPLOYED
def test_second_deploy_changes_nothing_and_keeps_operator_edits(
    deployed: dict[str, Any],
) -> None:
    second = deployed["second"]
    assert second.returncode == 0, second.stderr
    assert deployed["after"] == deployed["before"], "the second run changed files"
    assert deployed["calls_second"] == [
        f"list-units --plain --no-legend --state=active {UNIT}@*.service",
        f"is-active --quiet {UNIT}",
    ], "it restarted needlessly"
    dest: Path = deployed["dest"]
    assert "redis://ops-edited:6379/0" in (dest / ENV_REL).read_text()
    out = second.stdout
    # Which settings the operator set, never their values (the file holds the password).
    assert "keeping" in out and "it sets: P35_REDIS_URL" in out
    assert "ops-edited" not in out
    assert "prometheus: rules installed" not in out  # unchanged: not copied again


@pytest.mark.pip
@DEPLOYED
def test_dry_run_prints_and_changes_nothing(deployed: dict[str, Any]) -> None:
    dry = deployed["dry"]
    assert dry.returncode == 0, dry.stderr
    assert tree_state(deployed["dest"]) == deployed["after"]


def test_dry_run_of_a_first_install_says_what_it_would_do(tmp_path: Path) -> None:
    env = {**os.environ, "DESTDIR": str(tmp_path / "r"), "SYSTEMCTL": "/bin/false"}
    out = run_deploy(env, "--dry-run", timeout=60)
    assert out.returncode == 0, out.stderr
    assert "would run: " in out.stdout and "venv" in out.stdout
    assert "would run: /bin/false enable --now" in out.stdout
    assert "prometheus: no " in out.stdout and "rules not installed" in out.stdout
    assert not (tmp_path / "r/etc/prometheus").exists()
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_refuses_without_root_or_destdir() -> None:
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    with tempfile.TemporaryDirectory() as public:  # pytest's tmp_path is closed to others
        os.chmod(public, 0o755)
        script = Path(public) / "deploy_p35.sh"
        shutil.copy(ROOT / "scripts/deploy_p35.sh", script)
        script.chmod(0o755)
        out = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(script)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert out.returncode != 0
    assert "must run as root" in out.stderr


def test_refuses_a_python_that_is_too_old(tmp_path: Path) -> None:
    old = tmp_path / "python3"
    old.write_text("#!/bin/sh\n[ \"$1\" = -V ] && echo 'Python 3.9.2' && exit 0\nexit 1\n")
    old.chmod(0o755)
    env = {**os.environ, "DESTDIR": str(tmp_path / "r"), "PYTHON": str(old)}
    out = run_deploy(env, timeout=60)
    assert out.returncode != 0
    assert "Python 3.11 or newer is required; " in out.stderr and "3.9.2" in out.stderr


# -- unit files -----------------------------------------------------------------------


def unit_directives(path: Path) -> dict[str, list[str]]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    out: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key}", []).append(value)
    return out


@pytest.mark.parametrize("unit", [f"{UNIT}.service", f"{UNIT}@.service"])
def test_unit_directives(unit: str) -> None:
    d = unit_directives(UNITS / unit)
    want = {
        "Service.Type": ["notify"],
        "Service.Restart": ["on-failure"],
        "Service.RestartSec": ["10"],
        "Service.RestartPreventExitStatus": ["78"],
        "Service.MemoryMax": ["256M"],
        "Service.CPUQuota": ["20%"],
        "Service.EnvironmentFile": ["-/etc/quantum/p35-decision-intelligence.env"],
        "Service.SyslogIdentifier": ["p35-decision-intel"],
        "Service.DynamicUser": ["yes"],
        "Service.ProtectHome": ["yes"],
        "Service.WorkingDirectory": ["/"],
        "Unit.StartLimitBurst": ["5"],
    }
    for key, value in want.items():
        assert d.get(key) == value, key
    assert d["Service.ExecStart"][0].startswith("/opt/quantum/p35-decision-intelligence/venv/")
    assert int(d["Service.WatchdogSec"][0]) >= 10
    assert int(d["Service.TimeoutStopSec"][0]) > 5, "must outlast the 5 s graceful shutdown"
    assert not any(k.endswith(".PermissionsStartOnly") for k in d), "deprecated directive"
    if "@" in unit:
        assert d["Service.ExecStart"][0].endswith("run --consumer %i")


def test_template_has_the_same_hardening_as_the_unit() -> None:
    a = unit_directives(UNITS / f"{UNIT}.service")
    b = unit_directives(UNITS / f"{UNIT}@.service")
    differing = {k for k in a.keys() | b.keys() if a.get(k) != b.get(k)}
    assert differing == {"Unit.Description", "Service.ExecStart"}


ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd)"
)


@needs_analyze
@pytest.mark.parametrize("unit", [f"{UNIT}.service", f"{UNIT}@.service"])
def test_systemd_analyze_security_exposure_at_most_2(unit: str, tmp_path: Path) -> None:
    path = UNITS / unit
    if "@" in unit:  # the offline analysis needs an instance name
        path = tmp_path / unit.replace("@", "@main")
        shutil.copy(UNITS / unit, path)
    assert ANALYZE is not None  # needs_analyze
    out = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) <= 2.0, out.stdout


@needs_analyze
@pytest.mark.parametrize("unit", [f"{UNIT}.service", f"{UNIT}@.service"])
def test_systemd_analyze_verify_finds_no_problem(unit: str, tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point a copy at this checkout's p35.
    text = (
        (UNITS / unit)
        .read_text()
        .replace(
            "/opt/quantum/p35-decision-intelligence/venv/bin/p35",
            str(Path(sys.executable).parent / "p35"),
        )
    )
    name = unit.replace("@", "@main")
    (tmp_path / name).write_text(text)
    assert ANALYZE is not None  # needs_analyze
    out = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(tmp_path / name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    problems = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if name.split("@")[0] in line or "Unknown" in line or "deprecated" in line.lower()
    ]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


# -- sd_notify and the proof, with the real daemon ------------------------------------


@pytest.mark.e2e
def test_notify_ready_status_watchdog_stopping_in_order(
    base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    d = Daemon({**base_env, "NOTIFY_SOCKET": str(sock_path)}, tmp_path / "d.log").start()
    daemons.append(d)
    got: list[str] = []
    while not (
        any(m.startswith("WATCHDOG=1") for m in got) and any("STATUS=counted" in m for m in got)
    ):
        got.append(sock.recv(4096).decode())
    d.signal(15)
    while "STOPPING=1" not in got[-1]:
        got.append(sock.recv(4096).decode())
    assert d.wait(10) == 0
    sock.close()
    firsts = [
        next(i for i, m in enumerate(got) if key in m)
        for key in ("READY=1", "STATUS=", "WATCHDOG=1", "STOPPING=1")
    ]
    assert firsts == sorted(firsts), got
    assert "READY=1" in got[0], "READY must come first"
    assert re.search(r"STATUS=counted \d+, lag \d+", "\n".join(got))


@pytest.mark.e2e
def test_ready_comes_at_once_without_redis_and_status_says_what_it_waits_for(
    base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """With no Redis at the URL, READY=1 (the configuration is valid) comes at once, then
    the watchdog keeps coming and STATUS= says it is waiting: systemd never fails the start
    (READY=1 used to wait for Redis, and TimeoutStartSec killed the daemon)."""
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    absent = f"redis://127.0.0.1:{free_port()}/0"
    env = {**base_env, "NOTIFY_SOCKET": str(sock_path), "P35_REDIS_URL": absent}
    d = Daemon(env, tmp_path / "d.log").start()
    daemons.append(d)
    got = [sock.recv(4096).decode()]
    assert got[0].startswith("READY=1")
    while sum(m.startswith("WATCHDOG=1") for m in got) < 2:
        got.append(sock.recv(4096).decode())
    assert any(m.startswith("STATUS=waiting for Redis at redis://127.0.0.1:") for m in got), got
    assert d.alive
    assert d.terminate_and_wait()[0] == 0
    sock.close()


@pytest.mark.e2e
def test_proof_passes_with_the_daemon_running_and_fails_without(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    load(r, 2_000, span_minutes=30)
    d = Daemon(base_env, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: drained(r, 2_000), 60, "drain")
    wait_for(lambda: bool(r.exists("quantum:p35:decision:counts:15m")), 30, "snapshot")
    env = {
        **base_env,
        "P35_BIN": str(Path(sys.executable).parent / "p35"),
        "P35_ENV_FILE": "/nonexistent",
    }
    proof = [str(ROOT / "scripts/proof_p35_decision_intelligence.sh")]
    ok = subprocess.run(proof, env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "proof passed" in ok.stdout
    assert d.terminate_and_wait()[0] == 0
    r.hset("quantum:p35:status", "last_ts", "1")  # a heartbeat from long ago
    r.delete("quantum:p35:decision:counts:15m")
    bad = subprocess.run(
        [*proof, "--max-pending", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 1
    assert "FAIL heartbeat" in bad.stdout and "FAIL windows" in bad.stdout
    assert "proof FAILED: heartbeat windows" in bad.stdout


@pytest.mark.e2e
def test_check_waits_for_the_rebuild_that_covers_traffic_newer_than_the_last_one(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Traffic lands in a closed minute just after a rebuild (a first entry, a backlog):
    its snapshot keys are rightly absent for up to one interval. `p35 check` run then
    waits for the next rebuild instead of failing a healthy service."""
    env = {**base_env, "P35_SNAPSHOT_INTERVAL_SEC": "6"}
    d = Daemon(env, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: r.hget("quantum:p35:status", "snapshot_ts") is not None, 30, "a rebuild")
    first = r.hget("quantum:p35:status", "snapshot_ts")
    wait_for(lambda: r.hget("quantum:p35:status", "snapshot_ts") != first, 30, "the next one")
    sec, _ = r.time()
    minute_ms = (int(sec) // 60 - 1) * 60_000  # the closed minute before this one
    for i in range(50):
        r.xadd(
            "quantum:stream:apply.result",
            {"symbol": "BTCUSDT", "executed": "false", "error": "risk_paused"},
            id=f"{minute_ms + i}-0",
        )
    wait_for(lambda: drained(r, 50), 30, "the 50 entries counted")
    assert not r.exists("quantum:p35:decision:counts:15m")  # the race this test is about
    check = run_p35(env, "check")
    assert check.returncode == 0, check.stdout
    assert "windows: traffic in 1 of the last 60 minutes; snapshots present" in check.stdout


def test_env_template_lists_every_setting_with_its_default() -> None:
    from decision_intel.settings import Settings, _env_name

    text = (ROOT / "deploy/env/p35-decision-intelligence.env").read_text()
    for name, info in Settings.model_fields.items():
        if name.startswith("legacy_"):
            continue
        var = _env_name(name)
        default = "redis://localhost:6379/0" if name == "redis_url" else info.default
        line = next((x for x in text.splitlines() if x.startswith(f"#{var}=")), None)
        assert line is not None, f"{var} missing from the env template"
        value = line.split("=", 1)[1]
        if default is None:
            assert value == "", line
        elif isinstance(default, bool):
            assert value == str(default).lower(), line
        elif isinstance(default, (int, float)):
            assert float(value) == float(default), line
        else:
            assert value == default, line


@pytest.mark.pip
@DEPLOYED
def test_rollback_without_an_earlier_release_fails_clearly(deployed: dict[str, Any]) -> None:
    out = subprocess.run(
        [str(ROOT / "scripts/deploy_p35.sh"), "--rollback"],
        env=deployed["env"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "no earlier release to roll back to" in out.stderr


def test_a_python_under_a_home_directory_is_refused_for_a_real_install(tmp_path: Path) -> None:
    """ProtectHome=yes hides /root and /home from the service: a release venv pointing at a
    pyenv or user interpreter there fails with status=203/EXEC. The deploy says so first."""
    home_python = tmp_path / "python3"  # answers like an interpreter living under /root
    home_python.write_text(
        '#!/bin/sh\ncase "$*" in *realpath*) echo /root/.pyenv/versions/3.11.7/bin/python3.11;;'
        " -V) echo Python 3.11.7;; *) exit 0;; esac\n"
    )
    home_python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DESTDIR"}
    env |= {"PYTHON": str(home_python), "SYSTEMCTL": "/bin/false"}
    out = run_deploy(env, "--dry-run", timeout=60)
    assert out.returncode != 0
    assert "ProtectHome=yes" in out.stderr and "PYTHON=/usr/bin/python3" in out.stderr
    assert "would run" not in out.stdout


@pytest.mark.pip
def test_deploy_upgrades_running_template_instances_not_the_plain_unit(tmp_path: Path) -> None:
    """With @a and @b running (docs/operations.md), an upgrade restarts them; it neither
    starts the plain unit (a third consumer) nor leaves them on the old release."""
    state = tmp_path / "state"
    state.mkdir()
    fake = tmp_path / "systemctl"
    fake.write_text(
        '#!/bin/sh\necho "$*" >> "$FAKE_STATE/calls"\n'
        'case "$1" in\n'
        f"  list-units) printf '{UNIT}@a.service loaded active running x\\n"
        f"{UNIT}@b.service loaded active running x\\n' ;;\n"
        f'  is-active) case "$3" in {UNIT}@*) exit 0;; esac; exit 3 ;;\n'
        "esac\nexit 0\n"
    )
    fake.chmod(0o755)
    env = {
        **os.environ,
        "DESTDIR": str(tmp_path / "r"),
        "SYSTEMCTL": str(fake),
        "FAKE_STATE": str(state),
        "PYTHON": sys.executable,
    }
    out = run_deploy(env, "--skip-proof", timeout=600)
    assert out.returncode == 0, out.stderr
    calls = (state / "calls").read_text().splitlines()
    assert f"restart {UNIT}@a.service" in calls and f"restart {UNIT}@b.service" in calls
    assert not [c for c in calls if c.split()[-1] == UNIT and c.split()[0] != "is-active"]
    assert "left alone" in out.stdout
