"""What a Redis error means for the service: wait (capped exponential backoff with
jitter, one log line per state change), or stop on a configuration error."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import (
    AskError,
    AuthenticationError,
    BusyLoadingError,
    ClusterCrossSlotError,
    ClusterDownError,
    ConnectionError,
    NoPermissionError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)

from decision_intel.text import describe


class Refusing(ResponseError):
    """Redis answered but refuses the command for now, for a reason a wait mends: out of
    memory (OOM), a failed save stopping writes (MISCONF, a full disk), a replica after a
    failover (READONLY, MASTERDOWN, ROLE_CHANGED), too few replicas (NOREPLICAS),
    another client's long script (BUSY). Raised by our clients' parser (client.py) in
    place of redis-py's own class for these codes; the message keeps Redis's text, code
    first.

    None of these leaves a script half applied: Redis refuses a script's first write,
    before it changed anything (a write it lets through lets the rest through)."""


REFUSING_CODES = frozenset({"OOM", "MISCONF", "READONLY", "MASTERDOWN", "NOREPLICAS", "BUSY"})

ROLE_CHANGED = "UNBLOCKED force unblock from blocking operation, instance state changed"
"""Redis's reply to a blocked command when it became a replica (it then closes the
connection). Not the UNBLOCKED of a stream deleted under a blocked read."""

NOT_PRIMARY_CODES = frozenset({"READONLY", "MASTERDOWN", "UNBLOCKED"})


def refusing(reply: str) -> bool:
    """Whether an error reply is one a wait mends (`Refusing`)."""
    return reply.split(" ", 1)[0] in REFUSING_CODES or reply.startswith(ROLE_CHANGED)


def not_primary(exc: BaseException) -> bool:
    """The server is a replica now, after a failover. Connections made again may reach
    the new primary behind an address that moved (a virtual IP, a DNS name): the ones
    open stay with the old server, which refuses every write for good."""
    return isinstance(exc, Refusing) and str(exc).split(" ", 1)[0] in NOT_PRIMARY_CODES


REDIS_DOWN = (ConnectionError, TimeoutError, BusyLoadingError, OSError, Refusing)
"""Errors that mean "Redis is not there right now", or not for writes: wait and retry,
never exit."""

ACCESS_DENIED = (AuthenticationError, NoPermissionError)
"""Errors that waiting will not fix (wrong password, missing ACL permission): a config error.
AuthenticationError is a ConnectionError: catch these before REDIS_DOWN."""

CONFIG_REPLIES = {
    "WRONGTYPE": (
        "stream.wrong_type",
        "P35_STREAM names a key that is not a stream: fix the setting, or the key",
    ),
    "DB index is out of range": (
        "redis.no_such_db",
        "P35_REDIS_URL names a database this Redis does not have (its `databases` "
        "setting): fix the URL",
    ),
}
"""Redis's replies at start-up that name a setting to fix: the event and its detail."""

CLUSTER_REPLIES = (AskError, ClusterCrossSlotError, ClusterDownError, TryAgainError)
"""Replies only a Redis Cluster node gives (MOVED is an AskError)."""


WRONG_KEY = (
    "{}: a key of the daemon's holds another type (written by hand or by another "
    "program); nothing was written. Check what wrote it, DEL it (the daemon makes it "
    "again), and start the service"
)


def config_error(exc: ResponseError, wrong_keys: list[str]) -> tuple[str, str] | None:
    """The event and detail for a reply that a restart cannot mend, else None.
    `wrong_keys`: the daemon's own keys found holding another type after a WRONGTYPE
    (Redis does not say which key; none found: it is the stream's)."""
    if wrong_keys:
        return "redis.key_wrong_type", WRONG_KEY.format("; ".join(wrong_keys))
    if isinstance(exc, CLUSTER_REPLIES):
        return (
            "redis.cluster_unsupported",
            "P35_REDIS_URL names a Redis Cluster node, which is not supported (the fixed "
            "key names do not share a hash slot): use a standalone Redis, or Sentinel",
        )
    return next((v for k, v in CONFIG_REPLIES.items() if k in str(exc)), None)


BASE_S = 0.25
CAP_S = 10.0


def delay_s(attempt: int, rng: random.Random | None = None) -> float:
    """Equal-jitter backoff: half the capped exponential, plus up to the other half at random."""
    ceiling = min(CAP_S, BASE_S * 2 ** max(0, attempt - 1))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class Connectivity:
    """Shared by every task of the service, so an outage is logged once, not once per task."""

    def __init__(
        self,
        log: Any,
        on_reconnect: Callable[[], None] | None = None,
        on_not_primary: Callable[[], None] | None = None,
    ):
        self.log = log
        self.on_reconnect = on_reconnect
        self.on_not_primary = on_not_primary
        """Called at each failure that says the server became a replica (`not_primary`)."""
        self.down_since: float | None = None
        self.attempt = 0
        self.reconnects = 0
        self.back = asyncio.Event()
        """Set when Redis answers again, so a task in backoff need not sleep out its delay."""

    def failed(self, exc: BaseException) -> float:
        """Record a failure; return how long to wait before the next try."""
        self.attempt += 1
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.back.clear()
            self.log.warning("redis.unavailable", error=describe(exc))
        if self.on_not_primary is not None and not_primary(exc):
            self.on_not_primary()
        return delay_s(self.attempt)

    def ok(self) -> None:
        if self.down_since is not None:
            self.reconnects += 1
            self.log.info(
                "redis.available",
                down_s=round(time.monotonic() - self.down_since, 1),
                attempts=self.attempt,
            )
            self.back.set()
            if self.on_reconnect is not None:
                self.on_reconnect()
        self.down_since = None
        self.attempt = 0
