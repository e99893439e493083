"""Fixtures: one real redis-server per session on a free port, flushed before each test."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import structlog

from decision_intel.devtools.testing import REDIS_SERVER, RedisServer
from decision_intel.settings import Settings, load
from tests.helpers import Daemon


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    """structlog's global configuration back to its defaults after every test, so one that
    configures logging (test_logs.py) never filters what another captures."""
    yield
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if not Path(REDIS_SERVER).exists():
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def r(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=redis_server.port)
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
