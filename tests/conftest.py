"""Fixtures: one real redis-server per test process (each xdist worker has its own) on a
free port, flushed before each test; and a guard that keeps the markers honest."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from decision_intel.devtools.testing import REDIS_SERVER, RedisServer
from decision_intel.settings import Settings, load
from tests.helpers import Daemon, RawRedis


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """structlog's global configuration back to its defaults after every test, so one that
    configures logging (test_logs.py) never filters what another captures."""
    yield
    structlog.reset_defaults()


def _needs_marker(args: object) -> str | None:
    """The marker a command needs (`make test-fast` runs none of these), or None. A real
    deploy's pip runs in a grandchild: test_deploy.py marks those tests by hand."""
    if isinstance(args, str) or not isinstance(args, Sequence):
        return None  # a shell string: none of the tests start these through a shell
    argv = [str(a) for a in args]
    names = [Path(a).name for a in argv]
    if names[:1] == ["p35"] and "run" in argv[1:2]:
        return "e2e"  # the real daemon
    if "tmux" in names[:1]:
        return "tmux"
    if "pip" in names[:1] or argv[1:3] == ["-m", "pip"]:
        return "pip"
    return None


class _CheckedPopen(subprocess.Popen[bytes]):
    """subprocess.Popen that refuses a command the running test is not marked for."""

    nodeid = ""
    marked: frozenset[str] = frozenset()

    def __init__(self, args: Any, *rest: Any, **kwargs: Any) -> None:
        need = _needs_marker(args)
        if need is not None and need not in self.marked:
            raise AssertionError(f"{self.nodeid} runs {args!r}: mark it {need}")
        super().__init__(args, *rest, **kwargs)


@pytest.fixture(autouse=True)
def honest_markers(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that starts the daemon, tmux or pip without its marker fails here, so the
    markers `make test-fast` selects on cannot drift from what the tests do."""
    monkeypatch.setattr(_CheckedPopen, "nodeid", request.node.nodeid)
    monkeypatch.setattr(
        _CheckedPopen, "marked", frozenset(m.name for m in request.node.iter_markers())
    )
    monkeypatch.setattr(subprocess, "Popen", _CheckedPopen)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[RawRedis]:
    client = RawRedis(port=redis_server.port)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def settings_for(redis_server: RedisServer) -> Callable[..., Settings]:
    """Settings for the test server; keyword arguments override any setting."""

    def make(**overrides: object) -> Settings:
        return load(redis_url=redis_server.url, **overrides)

    return make


@pytest.fixture
def base_env(redis_server: RedisServer) -> dict[str, str]:
    """Environment for a `p35 run` process: the test server, quick timers, no stray P35_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P35_", "REDIS_"))}
    env.pop("NOTIFY_SOCKET", None)
    env.pop("JOURNAL_STREAM", None)
    env.update(
        P35_REDIS_URL=redis_server.url,
        P35_CLAIM_MIN_IDLE_SEC="1",
        P35_SNAPSHOT_INTERVAL_SEC="1",
        P35_HEARTBEAT_INTERVAL_SEC="0.5",
        P35_LEASE_SEC="2",
        P35_BLOCK_MS="200",
        PYTHONUNBUFFERED="1",
    )
    return env


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[list[Daemon]]:
    """Every daemon a test starts is registered here and killed at teardown."""
    started: list[Daemon] = []
    yield started
    for d in started:
        d.kill()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that pip-install the project build it from this one source tree (its build/
    and egg-info): two at once on two workers break each other, so they share a worker."""
    for item in items:
        if item.get_closest_marker("pip") is not None:
            item.add_marker(pytest.mark.xdist_group("pip"))
