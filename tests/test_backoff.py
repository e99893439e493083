"""Reconnect backoff: grows, is capped, is jittered; outages are logged once per change."""

from __future__ import annotations

import random

import pytest
import structlog
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from decision_intel.backoff import CAP_S, REDIS_DOWN, Connectivity, Refusing, delay_s
from decision_intel.client import BudgetParser


def test_delay_grows_then_caps_with_jitter() -> None:
    rng = random.Random(1)
    delays = [delay_s(a, rng) for a in range(1, 30)]
    assert delays[0] < 0.3
    assert all(CAP_S / 2 <= d <= CAP_S for d in delays[10:])
    assert len({round(d, 6) for d in delays[10:]}) > 10, "no jitter"


def test_one_line_per_state_change() -> None:
    with capture_logs() as logs:
        c = Connectivity(structlog.get_logger())
        for _ in range(5):
            c.failed(ConnectionError("refused"))
        c.ok()
        c.ok()
        c.failed(ConnectionError("refused"))
    assert [e["event"] for e in logs] == [
        "redis.unavailable",
        "redis.available",
        "redis.unavailable",
    ]
    assert c.reconnects == 1


def test_after_an_outage_pooled_connections_are_dropped_so_one_outage_is_one_failure(
    tmp_path: pytest.TempPathFactory,
) -> None:
    """Connections idle in the pool across a Redis restart are dead: each failed its next
    command long after Redis was back (a second `redis.unavailable` 97 s later). Dropping
    them when Redis answers again leaves only live ones."""
    import asyncio

    from redis.exceptions import ConnectionError

    from decision_intel.client import connect, drop_idle_connections
    from decision_intel.settings import load
    from decision_intel.testing import RedisServer

    server = RedisServer(tmp_path / "r")  # type: ignore[operator]
    server.start()
    try:
        client = connect(load(redis_url=server.url))

        async def three_at_once() -> list[object]:
            return await asyncio.gather(
                *(client.blpop(["nothing"], timeout=0.2) for _ in range(3)),
                return_exceptions=True,
            )

        async def go() -> tuple[list[object], list[object]]:
            await three_at_once()  # three connections in the pool
            server.restart()
            without = await three_at_once()  # the dead ones fail, one each
            await three_at_once()
            server.restart()
            for _ in range(5):  # until Redis answers again (a dead connection fails first)
                try:
                    await client.ping()
                    break
                except ConnectionError:
                    pass
            await drop_idle_connections(client)
            with_drop = await three_at_once()
            await client.aclose()
            return without, with_drop

        without, with_drop = asyncio.run(go())
        assert any(isinstance(x, Exception) for x in without), "the test lost its point"
        assert not [x for x in with_drop if isinstance(x, Exception)]
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("reply", "refusing"),
    [
        ("OOM command not allowed when used memory > 'maxmemory'.", True),
        ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable", True),
        ("READONLY You can't write against a read only replica.", True),
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is 'no'.", True),
        ("NOREPLICAS Not enough good replicas to write.", True),
        ("BUSY Redis is busy running a script. You can only call SCRIPT KILL", True),
        ("BUSYGROUP Consumer Group name already exists", False),
        ("NOGROUP No such key or consumer group", False),
        ("WRONGTYPE Operation against a key holding the wrong kind of value", False),
        ("ERR Error running script: bad number", False),
    ],
)
def test_replies_a_wait_mends_are_refusals_the_service_waits_out(
    reply: str, refusing: bool
) -> None:
    """Our clients' parser turns Redis's refusals into `Refusing`, one of REDIS_DOWN: the
    service waits them out instead of crashing; other errors keep redis-py's classes."""
    error = BudgetParser.parse_error(reply)
    assert isinstance(error, ResponseError)
    assert isinstance(error, REDIS_DOWN) is refusing
    if refusing:
        assert isinstance(error, Refusing) and str(error) == reply  # Redis's text, code first
