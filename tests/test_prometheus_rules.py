"""The shipped Prometheus rules: promtool checks them and runs their unit tests (every
alerting rule fires in a case and stays quiet under its threshold in another), and
promtool lints a live scrape of a real `p35 run`, with p35's own alerts open in it."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
import redis
import yaml

from decision_intel.devtools.testing import free_port
from decision_intel.model.alerts import ALERT_TYPES, AUDIT_TYPES, STUCK, SUPPRESSED
from tests.helpers import Daemon, drained, wait_for
from tests.promtools import (
    RULE_TESTS,
    RULES,
    TAKEN_OVER,
    alert_names,
    promtool,
    rules,
    take_over_one_symbol,
)


def test_promtool_checks_the_shipped_rules() -> None:
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(rules())} rules found" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    out = promtool("test", "rules", *map(str, RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alerting_rule_fires_in_a_test_and_stays_quiet_in_another() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = set(alert_names())
    assert names - fired == set(), "alerting rules no promtool test fires"
    assert names - quiet == set(), "alerting rules no promtool test shows quiet"


def test_every_p35_alert_type_reaches_a_rule() -> None:
    """The forwarding rule takes every analytics type; the completeness types have rules
    of their own (with their runbooks) and `suppressed`, an event, is counted."""
    by_name = {rule["alert"]: rule for rule in rules() if "alert" in rule}
    excluded = re.search(r'type!~"([^"]+)"', by_name["P35Alert"]["expr"])
    assert excluded is not None
    assert set(excluded.group(1).split("|")) == set(AUDIT_TYPES)
    own = " ".join(by_name[n]["expr"] for n in by_name if n != "P35Alert")
    for audit_type in AUDIT_TYPES:
        assert f'type="{audit_type}"' in own
    assert f'type="{SUPPRESSED}"' in by_name["P35AlertsSuppressed"]["expr"]
    forwarded = set(ALERT_TYPES) - set(AUDIT_TYPES) - {SUPPRESSED}
    tested = set(re.findall(r'p35_alert_open\{type="(\w+)"', RULE_TESTS[0].read_text()))
    assert forwarded <= tested, "analytics types no promtool test forwards"
    for rule in by_name.values():
        assert rule["labels"]["service"] == "p35"
        assert rule["annotations"]["runbook_url"].startswith("docs/")
        anchor_doc = rule["annotations"]["runbook_url"].partition("#")[0]
        assert (RULES.parent.parent.parent / anchor_doc).exists()


@pytest.mark.e2e
def test_promtool_check_metrics_on_a_live_scrape_with_open_alerts(
    r: redis.Redis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """The endpoint of a real daemon passes promtool's lint, with p35_alert_open in it."""
    promtool("--version")  # skips before starting anything when promtool is absent
    port = free_port()
    total = take_over_one_symbol(r)
    d = Daemon({**base_env, "P35_METRICS_PORT": str(port)}, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: drained(r, total), 60, "the drain")
    url = f"http://127.0.0.1:{port}/metrics"

    def scrape() -> str:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return str(reply.read().decode())

    labels = f'severity="HIGH",subject="{TAKEN_OVER}",type="{STUCK}",window="15m"'
    series = f"p35_alert_open{{{labels}}} 1.0"
    wait_for(lambda: series in scrape(), 30, "the stuck symbol's open alert")
    out = promtool("check", "metrics", stdin=scrape())
    assert out.returncode == 0, out.stdout + out.stderr
    assert d.terminate_and_wait()[0] == 0
