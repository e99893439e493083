"""Redis clients: the connection factory, a byte budget on every reply, the Lua loader.

Producers are untrusted, so a reply's size is too: one XREADGROUP of 500 entries of
1 MB each would be 500 MB in this process. Every reply on our connections is
parsed by `BudgetParser`, which counts the bytes a reply has taken so far and gives
up with `ReplyTooLarge` past `P35_READ_BUDGET_BYTES`. redis-py then drops that
connection (the rest of the reply is never read into memory); the entries the read
delivered stay pending under our name, and the consumer re-reads them with the
bounded script read (`lua/read.lua`).
"""

from __future__ import annotations

import functools
from typing import Any, cast

import redis.asyncio as aioredis

# redis-py has no public parser class: its `parser_class` option is public, the hiredis
# parser it takes is not. No public interface sees a reply's bytes as they arrive (a
# connection class would see them only through the same parser), so the budget rests
# on this class: pyproject pins redis-py to the minor versions it is tested with, and
# tests/test_client.py forces the budget's error on crafted replies from a fake server,
# which fails the day a new redis-py stops calling `read_from_socket`.
from redis._parsers.hiredis import _AsyncHiredisParser as _Parser
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from decision_intel.model.admission import ENTRY_OVERHEAD, PART_OVERHEAD_MAX, Size, over_limits
from decision_intel.settings import Settings
from decision_intel.store.backoff import Refusing, refusing

Entry = tuple[bytes, dict[bytes, bytes] | None]
Sizes = dict[bytes, Size]
"""Entries over the size limits: ID -> (fields, bytes; -1 when the field count alone
was over and the bytes were not counted)."""


class Read(list[Entry]):
    """Entries as a read delivered them, and `oversize`: those over the size limits,
    or None when the read was not measured (the consumer then measures each entry)."""

    def __init__(
        self, entries: Any = (), oversize: Sizes | None = None, breaks: tuple[int, ...] = (0,)
    ):
        super().__init__(entries)
        self.oversize = oversize
        self.breaks = breaks
        """Where each read's entries begin: one read of new entries is a run of IDs the
        stream held contiguously (the settled ranges, lua/lib.lua)."""

    def joined(self, more: Read) -> Read:
        """This read and a later one as one: measured when both were."""
        mine, theirs = self.oversize, more.oversize
        both = None if mine is None or theirs is None else {**mine, **theirs}
        breaks = self.breaks + tuple(len(self) + b for b in more.breaks if more)
        return Read([*self, *more], both, breaks)


class ReplyTooLarge(RedisError):
    """A reply grew past the byte budget; its connection was dropped unread."""


class BudgetParser(_Parser):
    """hiredis, with a limit on the bytes one reply may take from the socket, and
    `Refusing` for the error replies that a wait mends (backoff.py)."""

    budget_bytes = 8 << 20
    """Set per client class by `connect` (see `_parser_for`)."""

    def __init__(self, socket_read_size: int):
        super().__init__(socket_read_size=socket_read_size)
        self.reply_bytes = 0

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        self.reply_bytes = 0
        return await super().read_response(*args, **kwargs)

    async def read_from_socket(self) -> Any:
        assert self._stream is not None and self._reader is not None  # set by on_connect
        buffer = await self._stream.read(self._read_size)
        if not buffer or not isinstance(buffer, bytes):
            return await super().read_from_socket()  # raises the usual ConnectionError
        self.reply_bytes += len(buffer)
        if self.reply_bytes > self.budget_bytes:
            raise ReplyTooLarge(f"a reply passed {self.budget_bytes} bytes")
        self._reader.feed(buffer)
        return True

    @classmethod
    def parse_error(cls, response: str) -> ResponseError:
        if refusing(response):
            return Refusing(response)
        return cast(ResponseError, super().parse_error(response))


def _parser_for(budget_bytes: int) -> type[BudgetParser]:
    return type("BudgetParser", (BudgetParser,), {"budget_bytes": budget_bytes})


def connect(settings: Settings, *, blocking: bool = False) -> aioredis.Redis:
    """A client for the service. `blocking` clients carry the long XREADGROUP BLOCK calls.

    redis-py's default 5 s socket timeout would cut a blocking read short, so that
    client's timeout sits above the block time; both use TCP keepalive. Retries are
    ours (service loop, with backoff and one log line per state change), not redis-py's.
    """
    timeout_s = settings.block_ms / 1000 + 10 if blocking else 10.0
    kwargs: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": 5.0,
        "retry": Retry(NoBackoff(), 0),
        "client_name": f"p35:{settings.consumer_name}",
        "parser_class": _parser_for(settings.read_budget_bytes),
    }
    if not settings.url.startswith("unix://"):
        kwargs["socket_keepalive"] = True
    if settings.url.startswith("rediss://") and settings.redis_ca_file:
        kwargs["ssl_ca_certs"] = settings.redis_ca_file
    client = aioredis.from_url(settings.url, **kwargs)
    pool = client.connection_pool  # its class follows the URL's scheme (TCP, TLS, socket)
    pool.connection_class = _renewing(pool.connection_class)
    limits = (settings.max_entry_fields, settings.max_entry_bytes)
    client.set_response_callback(
        "XREADGROUP", cast(Any, functools.partial(parse_entries, limits=limits))
    )
    return client


def renew_connections(*clients: aioredis.Redis) -> None:
    """Make every connection of the clients' pools connect anew before its next command.
    After an outage the pooled connections are dead: left as they are, each would fail
    its next command, long after Redis came back, and count as a second outage. After a
    failover they lead to the old primary, now a replica, which refuses every write. A
    connection is replaced as the pool hands it out (`_Renewing.connect`), so none is
    closed under a command running on it."""
    for client in clients:
        cls = client.connection_pool.connection_class
        if issubclass(cls, _Renewing):
            cls.generation += 1


class _Renewing(AbstractConnection):
    """A connection that reconnects when the pool hands it out after `renew_connections`.
    redis-py's pool calls `connect()` on every connection it hands out (a no-op while
    connected); both are public API."""

    generation = 0
    """Bumped by renew_connections: one counter per client (see `_renewing`)."""
    _connected_in = -1

    async def connect(self) -> None:
        if self._connected_in != self.generation and self.is_connected:
            await self.disconnect()
        await super().connect()
        self._connected_in = self.generation


def _renewing(base: type[AbstractConnection]) -> type[AbstractConnection]:
    return type("Renewing" + base.__name__, (_Renewing, base), {})


def parse_entries(reply: Any, limits: tuple[int, int] | None = None, **_options: Any) -> Read:
    """XREADGROUP reply (RESP2 list or RESP3 map, one stream) as [(id, fields or None)].

    Replaces redis-py's parser for this command on our clients: the same result,
    built in one comprehension instead of a function call per entry. With `limits`
    (max fields, max bytes), entries are also measured as Redis sent them (names and
    values with their framing, as lua/read.lua counts): on the flat lists, in C, a bound
    costs a fraction of measuring each dict afterwards, and only a read that may hold an
    entry over a limit goes through them one by one.
    """
    if not reply:
        return Read((), None if limits is None else {})
    streams = reply.values() if isinstance(reply, dict) else [s[1] for s in reply]
    read = Read(  # a list comprehension: a generator here costs a resume per entry
        [
            # zip without strict=: the keyword alone is a quarter of this line's cost.
            (entry_id, None if flat is None else dict(zip(it := iter(flat), it)))  # noqa: B905
            for entries in streams
            for entry_id, flat in entries
        ]
    )
    if limits is not None:
        read.oversize = _oversize(streams, *limits)
    return read


def _oversize(streams: Any, max_fields: int, max_bytes: int) -> Sizes:
    lists = [flat for entries in streams for _, flat in entries if flat is not None]
    # A bound first, in C: the largest content and the most parts, each with the most
    # framing a part can have (model/admission.py's wire_size counts it exactly).
    if not lists or (
        (longest := max(map(len, lists))) <= 2 * max_fields
        and max(map(len, map(b"".join, lists))) + PART_OVERHEAD_MAX * longest + ENTRY_OVERHEAD
        <= max_bytes
    ):
        return {}
    over: Sizes = {}
    for entry_id, flat in (e for entries in streams for e in entries if e[1] is not None):
        if (size := over_limits(len(flat) // 2, flat, max_fields, max_bytes)) is not None:
            over[entry_id] = size
    return over


async def find_group(client: aioredis.Redis, stream: str, group: str) -> dict[str, Any] | None:
    """The group's state (`lua/group_state.lua`), keyed as XINFO GROUPS keys it, plus
    `oldest-pending-id`; None when the stream or the group is missing. `lag` is 0 once
    the group has delivered the stream's last ID, whatever Redis reports."""
    from decision_intel.store import scripts

    script = scripts.load(client, "group_state")
    try:
        row = await script(keys=[], args=[stream, group])
    except Refusing:
        raise
    except ResponseError:
        return None
    return group_row(row) if row else None


def group_row(row: list[Any]) -> dict[str, Any]:
    """group_state()'s reply (lib.lua) keyed as XINFO GROUPS keys it."""
    lag, pending, consumers, delivered, entries_read, last_id, oldest = (
        v.decode() if isinstance(v, bytes) else str(v) for v in row
    )
    return {
        "lag": int(lag) if lag else None,
        "pending": int(pending),
        "consumers": int(consumers),
        "last-delivered-id": delivered,
        "entries-read": int(entries_read) if entries_read else None,
        "last-generated-id": last_id,
        "oldest-pending-id": oldest or None,
    }
