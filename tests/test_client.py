"""The per-reply byte budget (store/client.py) against crafted replies from a fake server.

The budget is a security property resting on redis-py's hiredis parser class, which is
not public API: these tests fail the day an upgrade stops routing a reply's bytes
through `BudgetParser.read_from_socket`. No Redis: a loopback server answers every
command with the reply a test planted, in chunks of its choosing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from redis.exceptions import ResponseError

from decision_intel.settings import load
from decision_intel.store.backoff import Refusing
from decision_intel.store.client import ReplyTooLarge, connect

BUDGET = 1 << 20  # the smallest P35_READ_BUDGET_BYTES


class FakeRedis:
    """Answers each data command with `reply(n)` (n counts them), sent `chunk` bytes at
    a time, and the connection's handshake (HELLO, CLIENT, SELECT) as Redis would;
    records how many bytes of each reply the client let it write."""

    def __init__(self, reply: Callable[[int], bytes], chunk: int = 1 << 20) -> None:
        self.reply, self.chunk = reply, chunk
        self.commands = 0
        self.sent: list[int] = []
        self.closed_early = asyncio.Event()

    @staticmethod
    async def command(reader: asyncio.StreamReader) -> list[bytes]:
        n = int((await reader.readline())[1:])
        parts = []
        for _ in range(n):
            size = int((await reader.readline())[1:])
            parts.append((await reader.readexactly(size + 2))[:-2])
        return parts

    def answer(self, name: bytes) -> bytes:
        if name == b"HELLO":
            return b"%1\r\n$5\r\nproto\r\n:3\r\n"
        if name in (b"CLIENT", b"SELECT"):
            return b"+OK\r\n"
        self.commands += 1
        return self.reply(self.commands)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data, sent = self.answer((await self.command(reader))[0].upper()), 0
                try:
                    for i in range(0, len(data), self.chunk):
                        writer.write(data[i : i + self.chunk])
                        await writer.drain()
                        sent += min(self.chunk, len(data) - i)
                except ConnectionError:
                    self.closed_early.set()
                    return
                finally:
                    self.sent.append(sent)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass  # the client went away
        finally:
            writer.close()


@asynccontextmanager
async def fake(server: FakeRedis) -> AsyncIterator[str]:
    listener = await asyncio.start_server(server.serve, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with listener:
        yield f"redis://127.0.0.1:{port}/0"


def bulk(n: int) -> bytes:
    return b"$%d\r\n%s\r\n" % (n, b"x" * n)


def settings(url: str):  # type: ignore[no-untyped-def]
    return load(redis_url=url, read_budget_bytes=BUDGET, max_entry_bytes=BUDGET // 4)


def test_a_reply_over_the_budget_is_refused_and_its_connection_dropped() -> None:
    """A 32 MiB bulk reply against a 1 MiB budget: ReplyTooLarge, the connection closed
    with most of the reply unread (the server's writes fail), and the next command on a
    new connection gets its answer."""
    big = 32 << 20
    server = FakeRedis(lambda n: bulk(big) if n == 1 else b"+PONG\r\n", chunk=64 << 10)

    async def go() -> None:
        async with fake(server) as url:
            client = connect(settings(url))
            try:
                with pytest.raises(ReplyTooLarge):
                    await client.get("k")
                await asyncio.wait_for(server.closed_early.wait(), 10)
                assert await client.ping() is True  # a new connection, a whole reply
            finally:
                await client.aclose()

    asyncio.run(go())
    assert server.sent[0] < big // 2  # what the kernel's buffers took, not the reply


def test_a_reply_within_the_budget_is_read_whole_however_it_is_cut() -> None:
    """Just under the budget, sent 4 KiB at a time: every piece counts towards one
    reply, and the whole value arrives; the count starts again at the next reply."""
    size = BUDGET - 64
    server = FakeRedis(lambda _n: bulk(size), chunk=4 << 10)

    async def go() -> None:
        async with fake(server) as url:
            client = connect(settings(url))
            try:
                for _ in range(3):  # three replies of nearly the budget each: each is fine
                    assert len(await client.get("k") or b"") == size
            finally:
                await client.aclose()

    asyncio.run(go())


def test_a_reply_of_many_small_parts_is_counted_as_one() -> None:
    """The budget is per reply, not per part: an array of 70,000 short strings (1.2 MB
    on the wire, each part far under the budget) is refused."""
    parts = b"".join(bulk(10) for _ in range(70_000))
    server = FakeRedis(lambda _n: b"*70000\r\n" + parts, chunk=64 << 10)

    async def go() -> None:
        async with fake(server) as url:
            client = connect(settings(url))
            try:
                with pytest.raises(ReplyTooLarge):
                    await client.execute_command("LRANGE", "k", 0, -1)
            finally:
                await client.aclose()

    assert len(parts) > BUDGET
    asyncio.run(go())


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        (b"-BUSY Redis is busy running a script.\r\n", Refusing),
        (b"-NOGROUP No such key or consumer group\r\n", ResponseError),
    ],
)
def test_error_replies_pass_through_the_budget_parser(reply: bytes, kind: type) -> None:
    server = FakeRedis(lambda _n: reply)

    async def go() -> None:
        async with fake(server) as url:
            client = connect(settings(url))
            try:
                with pytest.raises(kind) as raised:
                    await client.get("k")
                assert (type(raised.value) is Refusing) == (kind is Refusing)
            finally:
                await client.aclose()

    asyncio.run(go())
