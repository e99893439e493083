"""Reconnect backoff: grows, is capped, is jittered; outages are logged once per change."""

from __future__ import annotations

import random

import pytest
import structlog
from redis.exceptions import ResponseError
from structlog.testing import capture_logs

from decision_intel.store.backoff import CAP_S, REDIS_DOWN, Connectivity, Refusing, delay_s
from decision_intel.store.client import BudgetParser


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

    from decision_intel.devtools.testing import RedisServer
    from decision_intel.settings import load
    from decision_intel.store.client import connect, renew_connections

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
            renew_connections(client)
            with_drop = await three_at_once()
            await client.aclose()
            return without, with_drop

        without, with_drop = asyncio.run(go())
        assert any(isinstance(x, Exception) for x in without), "the test lost its point"
        assert not [x for x in with_drop if isinstance(x, Exception)]
    finally:
        server.stop()


def test_renewing_connections_cuts_no_command_running_on_one(redis_server: object) -> None:
    """A command running when the connections are renewed completes on its connection
    (closing it under the command was a second outage); every command after it runs on
    a new connection (Redis's CLIENT ID tells)."""
    import asyncio

    from decision_intel.settings import load
    from decision_intel.store.client import connect, renew_connections

    client = connect(load(redis_url=redis_server.url))  # type: ignore[attr-defined]

    name = client.connection_pool.connection_kwargs["client_name"]

    async def go() -> tuple[object, set[int], set[int]]:
        blocked = asyncio.ensure_future(client.blpop(["renew-test"], timeout=5))
        while not any(c["cmd"] == "blpop" for c in await client.client_list()):
            await asyncio.sleep(0.01)  # until Redis holds the BLPOP
        before = {int(c["id"]) for c in await client.client_list() if c["name"] == name}
        renew_connections(client)
        await client.rpush("renew-test", "x")  # the BLPOP holds one: this takes another
        popped = await blocked
        after = {await client.client_id() for _ in range(3)}
        await client.aclose()
        return popped, before, after

    popped, before, after = asyncio.run(go())
    assert list(popped) == [b"renew-test", b"x"]  # type: ignore[call-overload]
    assert not before & after


@pytest.mark.parametrize(
    ("reply", "refusing"),
    [
        ("OOM command not allowed when used memory > 'maxmemory'.", True),
        ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable", True),
        ("READONLY You can't write against a read only replica.", True),
        ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is 'no'.", True),
        ("NOREPLICAS Not enough good replicas to write.", True),
        ("BUSY Redis is busy running a script. You can only call SCRIPT KILL", True),
        (
            "UNBLOCKED force unblock from blocking operation, instance state changed "
            "(master -> replica?)",
            True,
        ),
        ("UNBLOCKED the stream key no longer exists", False),  # the group's loss, not a wait
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


def test_each_refusal_saying_the_server_is_a_replica_asks_for_new_connections() -> None:
    """After a failover, connections made again may reach the new primary behind the same
    address; the open ones lead to the old server for good. Other refusals and outages
    keep the pool (it is dropped when Redis answers again)."""
    asked: list[str] = []
    conn = Connectivity(structlog.get_logger(), on_not_primary=lambda: asked.append("drop"))
    replica = [
        "READONLY You can't write against a read only replica.",
        "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is 'no'.",
        "UNBLOCKED force unblock from blocking operation, instance state changed (master ->",
    ]
    for reply in replica:
        conn.failed(BudgetParser.parse_error(reply))
    assert asked == ["drop"] * 3  # at every such failure, not only the first of an outage
    for reply in ("OOM command not allowed", "BUSY Redis is busy running a script."):
        conn.failed(BudgetParser.parse_error(reply))
    conn.failed(ConnectionError("Connection refused"))
    assert asked == ["drop"] * 3
