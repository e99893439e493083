"""The Prometheus endpoint of a real `p35 run`: values after known traffic, opt-in, port errors,
and the Grafana dashboard using only metrics the daemon exports."""

from __future__ import annotations

import json
import os
import re
import socket
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from decision_intel.devtools.testing import free_port
from tests.helpers import Daemon, RawRedis, drained, wait_for
from tests.traffic import load_truth

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy/grafana/p35-decision-intelligence.json"


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket the process listens on, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed since the listing (a scrape's connection)
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                addr_hex, port_hex = cols[1].split(":")
                raw = bytes.fromhex(addr_hex)
                addr = socket.inet_ntoa(raw[::-1]) if len(raw) == 4 else addr_hex
                found.append((addr, int(port_hex, 16)))
    return found


def test_metrics_match_known_traffic_and_cover_the_dashboard(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    truth = load_truth(r, 6_000)
    port = free_port()
    d = Daemon({**base_env, "P35_METRICS_PORT": str(port)}, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: drained(r, len(truth)), 60, "the drain")
    by_decision = Counter(decision for decision, _, _ in truth.values())

    def settled() -> bool:  # a heartbeat after the drain has set the group gauges
        got = samples(scrape(port))
        return got[("p35_group_pending", ())] == 0 and got[("p35_group_lag", ())] == 0

    wait_for(settled, 30, "gauges after the drain")
    text = scrape(port)
    got = samples(text)
    for decision in ("EXECUTE", "SKIP", "BLOCKED", "ERROR", "UNKNOWN"):
        assert got[("p35_entries_total", (("decision", decision),))] == by_decision[decision]
    assert got[("p35_invalid_entries_total", ())] == by_decision["UNKNOWN"] > 0
    assert got[("p35_batch_size_entries_sum", ())] == len(truth)  # every entry in one flush
    flushes = got[("p35_batch_size_entries_count", ())]
    assert got[("p35_flush_duration_seconds_count", ())] == flushes > 0
    assert got[("p35_oldest_pending_age_seconds", ())] == 0
    assert got[("p35_redis_reconnects_total", ())] == 0
    assert got[("p35_build_info", (("version", "0.1.0"),))] == 1
    assert got[("p35_last_heartbeat_timestamp_seconds", ())] > 0
    assert got[("process_resident_memory_bytes", ())] > 10e6  # from /proc/self only
    assert got[("process_cpu_seconds_total", ())] > 0
    assert got[("process_open_fds", ())] > 0
    assert listening(d.pid) == [("127.0.0.1", port)]  # loopback unless told otherwise
    assert d.terminate_and_wait()[0] == 0

    names = set(re.findall(r"\bp35_[a-z_]+", DASHBOARD.read_text()))
    missing = sorted(n for n in names if not re.search(rf"^(# HELP |# TYPE )?{n}\b", text, re.M))
    assert not missing, f"the dashboard uses metrics the daemon does not export: {missing}"
    json.loads(DASHBOARD.read_text())  # importable JSON


def test_no_endpoint_when_the_port_is_unset(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    d = Daemon(base_env, tmp_path / "d.log").start()
    daemons.append(d)
    wait_for(lambda: bool(r.exists("quantum:p35:status")), 30, "the daemon running")
    assert listening(d.pid) == []
    assert d.terminate_and_wait()[0] == 0


def test_a_port_in_use_stops_the_start_with_one_line_naming_it(
    base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        d = Daemon({**base_env, "P35_METRICS_PORT": str(port)}, tmp_path / "d.log").start()
        daemons.append(d)
        assert d.wait(20) == 78
    errors = [e for e in d.events() if e["level"] == "error"]
    assert [e["event"] for e in errors] == ["metrics.unavailable"]
    assert f"P35_METRICS_PORT={port}" in str(errors[0]["detail"])
    assert "in use" in str(errors[0]["detail"])


def test_the_endpoint_serves_only_metrics_and_idle_sockets_hold_up_nothing(
    r: RawRedis, base_env: dict[str, str], daemons: list[Daemon], tmp_path: Path
) -> None:
    """Any other path is 404. 200 idle connections (each used to take a thread; under the
    unit's TasksMax=32 thirty broke /metrics with a traceback each, and thousands stalled
    the heartbeat and made SIGTERM take 32 s) hold up neither the heartbeat, nor a scrape
    once they are gone, nor the shutdown."""
    port = free_port()
    d = Daemon({**base_env, "P35_METRICS_PORT": str(port)}, tmp_path / "d.log").start()
    daemons.append(d)
    # After the first snapshot: its arithmetic thread (store/reads.py) has started.
    wait_for(lambda: bool(r.hget("quantum:p35:status", "snapshot_ts")), 30, "a snapshot")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
    assert err.value.code == 404
    err.value.close()
    idle: list[socket.socket] = []
    try:
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", port))
            s.send(b"GET /metrics HTTP/1.1\r\n")  # never finished
            idle.append(s)
        threads = len(os.listdir(f"/proc/{d.pid}/task"))
        beat = float(r.hget("quantum:p35:status", "last_ts") or 0)
        wait_for(
            lambda: float(r.hget("quantum:p35:status", "last_ts") or 0) > beat + 1,
            30,
            "two heartbeats with the sockets open",
        )
        assert len(os.listdir(f"/proc/{d.pid}/task")) == threads  # no thread per connection
        for s in idle:
            s.close()
        wait_for(lambda: "p35_entries_total" in scrape(port), 30, "a scrape after they left")
        for _ in range(20):
            idle.append(socket.create_connection(("127.0.0.1", port)))
        rc, took = d.terminate_and_wait()
        assert rc == 0 and took < 5
    finally:  # a failure above must not leave 200 sockets to the next test's collector
        for s in idle:
            s.close()
    assert not [e for e in d.events() if e.get("level") in ("error", "critical")]
