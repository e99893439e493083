"""The Lua scripts in `lua/`: one registry for every module that runs one.

`load(client, name)` gives redis-py's Script for `lua/<name>.lua`, with `lua/lib.lua`
(the helpers the scripts share) and the script's own library, if it has one, in front
(`library(name)`: what tests run a script's steps with). redis-py sends EVALSHA and, when Redis has
lost the script (a restart, SCRIPT FLUSH), loads it again and retries, so NOSCRIPT
never reaches a caller. docs/design.md says which module owns each script.
"""

from __future__ import annotations

import functools
from importlib import resources

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from decision_intel.store import flush

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


LIBRARIES = {"flush": (flush.lua_prelude, "flush_lib")}
"""Scripts whose steps are functions of their own: a prelude Python writes (the names of
the arguments) and the file that defines them."""

_LUA = resources.files("decision_intel.store") / "lua"


@functools.cache
def library(name: str) -> str:
    """What a script's body runs on: lib.lua, then the script's own library, if any."""
    if name not in NAMES:
        raise KeyError(f"no script {name!r} (lua/{name}.lua)")
    text = (_LUA / "lib.lua").read_text() + "\n"
    if name in LIBRARIES:
        prelude, file = LIBRARIES[name]
        text += prelude() + (_LUA / f"{file}.lua").read_text() + "\n"
    return text


@functools.cache
def source(name: str) -> str:
    """The text sent to Redis for a script: its library, then the script itself."""
    return library(name) + (_LUA / f"{name}.lua").read_text()


def load(client: aioredis.Redis, name: str) -> AsyncScript:
    return client.register_script(source(name))
