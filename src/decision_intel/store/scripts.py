"""The Lua scripts in `lua/`: one registry for every module that runs one.

`load(client, name)` gives redis-py's Script for `lua/<name>.lua`, with `lua/lib.lua`
(the helpers the scripts share) in front. redis-py sends EVALSHA and, when Redis has
lost the script (a restart, SCRIPT FLUSH), loads it again and retries, so NOSCRIPT
never reaches a caller. docs/design.md says which module owns each script.
"""

from __future__ import annotations

import functools
from importlib import resources

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

NAMES = (
    "heartbeat",
    "flush",
    "read",
    "lease",
    "release",
    "forget_departed",
    "group_state",
    "snapshot",
    "alert",
    "recent",
    "entry",
    "roll",
    "group_start",
    "audit",
    "consumers",
)


@functools.cache
def source(name: str) -> str:
    """The text sent to Redis for a script: lib.lua, then the script itself."""
    if name not in NAMES:
        raise KeyError(f"no script {name!r} (lua/{name}.lua)")
    lua = resources.files("decision_intel.store") / "lua"
    return (lua / "lib.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def load(client: aioredis.Redis, name: str) -> AsyncScript:
    return client.register_script(source(name))
