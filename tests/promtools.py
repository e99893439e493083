"""What the Prometheus tests share: the shipped rules, promtool, and the scenario of a gate
taking over one symbol (tests/test_prometheus_rules.py, tests/test_prometheus_live.py)."""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.traffic import Make, blocked, normal, now_minute, write_minutes

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "deploy/prometheus/p35.rules.yml"
RULE_TESTS = sorted((ROOT / "tests/prometheus").glob("*.yml"))
DASHBOARD = ROOT / "deploy/grafana/p35-decision-intelligence.json"
TAKEN_OVER = "BTCUSDT"
GATE = "risk_paused"


def tool(name: str) -> str:
    """The path of a Prometheus binary; skips (locally) when Debian's package is absent.
    CI installs it (.ci/run), so there the test runs."""
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (apt-get install --no-install-recommends prometheus)")
    return found


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], input=stdin, capture_output=True, text=True, timeout=120
    )


def rules() -> list[dict[str, Any]]:
    """Every rule of the shipped file, recording and alerting."""
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def alert_names() -> list[str]:
    return [rule["alert"] for rule in rules() if "alert" in rule]


def take_over_one_symbol(r: redis.Redis, per_minute: int = 240) -> int:
    """The two minutes before this one: every symbol trades normally except TAKEN_OVER,
    which GATE blocks every time (p35's `stuck` alert). Returns the entries written."""
    this = now_minute(r)

    def pick(rng: random.Random, minute: int, symbol: str) -> Make:
        return blocked(f"{GATE}:drawdown 7.1%") if symbol == TAKEN_OVER else normal

    return write_minutes(r, range(this - 2, this), per_minute, pick)
