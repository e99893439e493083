"""The real-Prometheus tier (`make test-prometheus`): Debian's Prometheus scrapes a live
`p35 run` on loopback and evaluates the shipped rules (a copy whose `for:` is 2 s, made
from the shipped file here); a real Alertmanager routes as docs/operations.md says, to a
webhook this test runs. Scenario: a gate takes over one symbol (p35's `stuck` alert),
then the daemon stops (the heartbeat alert). Every panel query of the Grafana dashboard
runs against that Prometheus, variables substituted."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from decision_intel.devtools.testing import free_port
from decision_intel.model.alerts import STUCK
from tests.helpers import Daemon, drained, wait_for
from tests.promtools import DASHBOARD, GATE, RULES, TAKEN_OVER, take_over_one_symbol

pytestmark = [pytest.mark.prometheus, pytest.mark.e2e]

ROOT = Path(__file__).resolve().parent.parent
TEST_FOR = "2s"
RATE_INTERVAL = "15s"  # Grafana's $__rate_interval at a 1 s scrape: 4 scrapes and more
RANGE = "5m"  # $__range: the dashboard's time range
POSITIVE = {
    "Decisions per second",
    "Flush latency",
    "Entries per flush",
    "Alerts raised",
    "Snapshot rebuild time",
    "Version",
}
"""Panels the scenario moves above 0 (traffic counted in flushes, snapshots, p35's alert)."""
ZERO = {"Redis reconnects"}
"""Panels it leaves at 0: Redis never went away."""


def binary(name: str) -> str:
    found = shutil.which(name)
    if found is None:  # this tier is asked for by name: missing is a failure, not a skip
        pytest.fail(
            f"{name} is not installed (apt-get install --no-install-recommends "
            "prometheus prometheus-alertmanager)"
        )
    return found


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def ready(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as reply:
        return bool(reply.status == 200)
    return False


class Webhook:
    """Alertmanager's webhook receiver: every notification, by the path it came to."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    outer.received.append((self.path.strip("/"), json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def notifications(self) -> list[tuple[str, dict[str, Any]]]:
        with self.lock:
            return list(self.received)

    def firing(self, alertname: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (receiver, n)
            for receiver, n in self.notifications()
            if n["status"] == "firing" and n["groupLabels"].get("alertname") == alertname
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def docs_alertmanager_config(webhook_port: int) -> dict[str, Any]:
    """The alertmanager.yml of docs/operations.md, its receivers swapped for the webhook
    (one path per receiver) and its waits shortened; routes, matchers and grouping as
    written."""
    text = (ROOT / "docs/operations.md").read_text()
    block = re.search(r"```yaml\n# alertmanager.yml\n(.*?)```", text, re.S)
    assert block, "docs/operations.md has no alertmanager.yml block"
    config: dict[str, Any] = yaml.safe_load(block.group(1))

    def shorten(route: dict[str, Any]) -> None:
        for key, value in (("group_wait", "1s"), ("group_interval", "1s")):
            if key in route:
                route[key] = value
        for child in route.get("routes", []):
            shorten(child)

    shorten(config["route"])
    url = f"http://127.0.0.1:{webhook_port}"
    config["receivers"] = [
        {"name": rc["name"], "webhook_configs": [{"url": f"{url}/{rc['name']}"}]}
        for rc in config["receivers"]
    ]
    return config


def rules_copy(path: Path) -> int:
    """The shipped rules with every `for:` at TEST_FOR; returns how many were shortened."""
    doc = yaml.safe_load(RULES.read_text())
    n = 0
    for group in doc["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = TEST_FOR
                n += 1
    path.write_text(yaml.safe_dump(doc))
    return n


class Stack:
    """Prometheus and Alertmanager processes on loopback, in a temp dir."""

    def __init__(self, tmp: Path, p35_port: int, webhook_port: int) -> None:
        self.tmp = tmp
        self.procs: list[subprocess.Popen[bytes]] = []
        self.am_port, self.prom_port = free_port(), free_port()
        (tmp / "am.yml").write_text(yaml.safe_dump(docs_alertmanager_config(webhook_port)))
        assert rules_copy(tmp / "rules.yml") > 0
        prometheus_yml = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp / "rules.yml")],
            "alerting": {
                "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{self.am_port}"]}]}]
            },
            "scrape_configs": [
                {
                    "job_name": "p35-decision-intelligence",
                    "static_configs": [{"targets": [f"127.0.0.1:{p35_port}"]}],
                }
            ],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(prometheus_yml))
        self.prom = f"http://127.0.0.1:{self.prom_port}"
        self.am = f"http://127.0.0.1:{self.am_port}"

    def start(self) -> Stack:
        am = binary("prometheus-alertmanager")
        prom = binary("prometheus")
        self._spawn(
            "alertmanager",
            [
                am,
                f"--config.file={self.tmp / 'am.yml'}",
                f"--storage.path={self.tmp / 'am-data'}",
                f"--web.listen-address=127.0.0.1:{self.am_port}",
                "--cluster.listen-address=",
            ],
        )
        self._spawn(
            "prometheus",
            [
                prom,
                f"--config.file={self.tmp / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.tmp / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{self.prom_port}",
                "--rules.alert.resend-delay=1s",
            ],
        )
        wait_for(lambda: ready(f"{self.am}/-/ready"), 30, "Alertmanager ready", every=0.2)
        wait_for(lambda: ready(f"{self.prom}/-/ready"), 30, "Prometheus ready", every=0.2)
        return self

    def _spawn(self, name: str, argv: list[str]) -> None:
        with open(self.tmp / f"{name}.log", "ab") as log:
            self.procs.append(
                subprocess.Popen(
                    argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
                )
            )

    def query(self, expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        reply = get_json(f"{self.prom}/api/v1/query?{q}")
        assert reply["status"] == "success", reply
        return list(reply["data"]["result"])

    def query_range(self, expr: str, start: float, end: float) -> dict[str, Any]:
        q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": 1})
        try:
            return dict(get_json(f"{self.prom}/api/v1/query_range?{q}"))
        except urllib.error.HTTPError as exc:  # 400/422: the query's error in the body
            return dict(json.loads(exc.read()))

    def alerts(self, state: str = "firing") -> list[dict[str, Any]]:
        reply = get_json(f"{self.prom}/api/v1/alerts")
        return [a for a in reply["data"]["alerts"] if a["state"] == state]

    def firing(self, alertname: str, **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.alerts()
            if a["labels"]["alertname"] == alertname
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self.tmp.glob("*.log")
        )

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    yield hook
    hook.close()


def panel_queries() -> list[tuple[str, str]]:
    """(panel title, query) for every target of every panel, and the variable's query."""
    dash = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            out.append((panel["title"], target["expr"]))
    return out


def substitute(expr: str, instances: list[str]) -> str:
    """Grafana's substitution: $instance with All (a regex of every value), the intervals."""
    # as Grafana writes it: a regex escape, its backslash escaped again inside "..."
    alternatives = "|".join(re.escape(i).replace("\\", "\\\\") for i in instances)
    return (
        expr.replace("$__rate_interval", RATE_INTERVAL)
        .replace("$__range", RANGE)
        .replace("$instance", f"({alternatives})")
    )


def values(result: dict[str, Any]) -> list[float]:
    return [float(v) for series in result["data"]["result"] for _, v in series["values"]]


def test_prometheus_scrapes_p35_fires_its_alerts_and_alertmanager_delivers_them(
    r: redis.Redis,
    base_env: dict[str, str],
    daemons: list[Daemon],
    tmp_path: Path,
    webhook: Webhook,
    record_property: Any,
) -> None:
    t0 = time.monotonic()
    p35_port = free_port()
    stack = Stack(tmp_path, p35_port, webhook.port)
    d = Daemon({**base_env, "P35_METRICS_PORT": str(p35_port)}, tmp_path / "p35.log").start()
    daemons.append(d)
    try:
        stack.start()
        up = 'up{job="p35-decision-intelligence"} == 1'
        wait_for(lambda: bool(stack.query(up)), 30, "Prometheus scraping p35", every=0.5)
        loaded = get_json(f"{stack.prom}/api/v1/rules")["data"]["groups"]
        assert sum(len(g["rules"]) for g in loaded) == len(
            yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
        )
        wait_for(lambda: bool(stack.query("p35_group_lag")), 30, "a heartbeat scraped", every=0.5)
        traffic_start = time.time()

        # 1. A gate takes over one symbol: p35's stuck alert, forwarded by P35Alert.
        total = take_over_one_symbol(r)
        wait_for(lambda: drained(r, total), 60, "the drain")
        stuck = {"type": STUCK, "subject": TAKEN_OVER, "window": "15m", "severity": "HIGH"}
        wait_for(lambda: bool(stack.firing("P35Alert", **stuck)), 60, "P35Alert firing", every=0.5)
        analytics_at = time.monotonic()
        wait_for(
            lambda: bool(webhook.firing("P35Alert")), 30, "the stuck alert delivered", every=0.2
        )
        assert not stack.firing("P35HeartbeatAbsent")

        # 2. Every panel query: no error, data where the daemon ran.
        instances = [s["metric"]["instance"] for s in stack.query("p35_build_info")]
        label_values = get_json(
            f"{stack.prom}/api/v1/label/instance/values?match[]=p35_build_info"
        )["data"]
        assert label_values == instances == [f"127.0.0.1:{p35_port}"]
        panel_results: dict[str, str] = {}
        end = time.time()
        for title, expr in panel_queries():
            q = substitute(expr, instances)
            result = stack.query_range(q, traffic_start - 5, end)
            assert result.get("status") == "success", (title, q, result)
            got = [v for v in values(result) if v == v]  # NaN: no flush in that step
            assert got, f"panel {title!r}: no data for {q}"
            if title in POSITIVE:
                assert max(got) > 0, f"panel {title!r}: only 0 for {q}"
            if title in ZERO:
                assert max(got) == 0, f"panel {title!r}: {max(got)} for {q}"
            panel_results[f"{title}: {expr}"] = (
                f"{len(result['data']['result'])} series, max {max(got):g}, last {got[-1]:g}"
            )
        decisions = stack.query(
            substitute(panel_queries()[0][1], instances).replace(RATE_INTERVAL, RANGE)
        )
        assert {s["metric"]["decision"] for s in decisions if float(s["value"][1]) > 0} >= {
            "BLOCKED",
            "EXECUTE",
        }
        raised = stack.query(
            f'sum by (type) (increase(p35_alerts_total{{type="{STUCK}"}}[{RANGE}]))'
        )
        assert float(raised[0]["value"][1]) > 0

        # 3. The daemon stops: the heartbeat alert, to the pager route.
        assert d.terminate_and_wait()[0] == 0
        wait_for(
            lambda: bool(stack.firing("P35HeartbeatAbsent")), 60, "P35HeartbeatAbsent", every=0.5
        )
        heartbeat_at = time.monotonic()
        assert heartbeat_at > analytics_at
        wait_for(
            lambda: bool(webhook.firing("P35HeartbeatAbsent")),
            30,
            "the heartbeat alert delivered",
            every=0.2,
        )

        # 4. Grouped and labelled as docs/operations.md says.
        receiver, note = webhook.firing("P35Alert")[0]
        assert receiver == "ops-email"  # HIGH: not the pager
        assert note["groupLabels"] == {"alertname": "P35Alert", "type": STUCK}
        labels = [a["labels"] for a in note["alerts"]]
        assert {**stuck, "alertname": "P35Alert", "service": "p35"} in labels
        assert all(
            a["annotations"]["runbook_url"] == "docs/alerts.md#rules" for a in note["alerts"]
        )
        summaries = [a["annotations"]["summary"] for a in note["alerts"]]
        assert f"p35 {STUCK}: {TAKEN_OVER} over 15m (HIGH)" in summaries
        receivers = {rc for rc, _ in webhook.firing("P35HeartbeatAbsent")}
        assert receivers == {"ops-pager"}  # CRITICAL goes to the pager
        _, hb = webhook.firing("P35HeartbeatAbsent")[0]
        assert hb["commonLabels"]["service"] == "p35"
        assert hb["commonLabels"]["severity"] == "CRITICAL"
        assert hb["groupLabels"] == {"alertname": "P35HeartbeatAbsent"}
        elapsed = time.monotonic() - t0
        record_property("panels", panel_results)
        print(
            json.dumps(
                {"seconds": round(elapsed, 1), "gate": GATE, "panels": panel_results}, indent=1
            )
        )
    except BaseException:
        print(stack.logs())
        raise
    finally:
        stack.stop()
