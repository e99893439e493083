"""What the tests share: the real `p35 run` process, waiting on conditions (never on
luck), the group's state, and a snapshot rebuilt on demand."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import pytest
import redis

if TYPE_CHECKING:
    # The tests read raw RESP2 replies (bytes). redis-py 8 types each sync reply as the
    # union of every shape it could take (RESP2/RESP3, bytes/str, None); as src/ holds
    # its replies as Any, the tests' client gives replies mypy does not check.
    RawRedis: TypeAlias = Any
else:
    RawRedis = redis.Redis

STREAM = "quantum:stream:apply.result"
GROUP = "p35_decision_intel"


def p35_executable() -> str:
    exe = Path(sys.executable).parent / "p35"
    if not exe.exists():
        pytest.fail(
            "the p35 console script is not installed in this environment (pip install -e .)"
        )
    return str(exe)


def run_p35(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """One `p35 ...` CLI command (not the daemon), its output captured as text."""
    return subprocess.run(
        [p35_executable(), *args], env=env, capture_output=True, text=True, timeout=60
    )


def memory_cgroup(tmp_name: str, limit_bytes: int) -> Path | None:
    """A child of this process's memory cgroup (v1 or v2) limited to `limit_bytes`, as
    the unit's MemoryMax= limits the service; its `cgroup.procs`, or None when cgroups
    cannot be written here (not root)."""
    lines = Path("/proc/self/cgroup").read_text().splitlines()
    v1 = next((ln.split(":", 2)[2] for ln in lines if ":memory:" in ln), None)
    candidates = []
    if v1 is not None:
        candidates.append((Path("/sys/fs/cgroup/memory") / v1.lstrip("/"), "memory.limit_in_bytes"))
    v2 = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), None)
    if v2 is not None:
        for root in (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")):
            candidates.append((root / v2.lstrip("/"), "memory.max"))
    for parent, limit_file in candidates:
        child = parent / tmp_name
        try:
            child.mkdir(exist_ok=True)
            (child / limit_file).write_text(str(limit_bytes))
            return child / "cgroup.procs"
        except OSError:
            with contextlib.suppress(OSError):
                child.rmdir()
    return None


class Daemon:
    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        *,
        name: str | None = None,
        cgroup_procs: Path | None = None,
    ):
        self.env = dict(env)
        if name:
            self.env["P35_CONSUMER"] = name
        self.log_path = log_path
        self.cgroup_procs = cgroup_procs
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        procs = self.cgroup_procs

        def enter_cgroup() -> None:  # in the child, before exec: limited from its start
            if procs is not None:
                procs.write_text(str(os.getpid()))

        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [p35_executable(), "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=enter_cgroup if procs else None,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def terminate_and_wait(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; return (exit status, seconds it took to exit)."""
        t0 = time.monotonic()
        self.signal(signal.SIGTERM)
        rc = self.wait(timeout)
        return rc, time.monotonic() - t0

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self) -> list[dict[str, Any]]:
        """The JSON log lines it wrote so far."""
        out = []
        for line in self.output().splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def rss_kb(self, field: str = "VmRSS") -> int:
        """Resident memory now (VmRSS) or at its peak so far (VmHWM), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
        raise AssertionError(f"no {field}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def wait_for(cond: Callable[[], bool], timeout: float, what: str, every: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def group_info(r: RawRedis) -> dict[str, Any]:
    try:
        for g in r.xinfo_groups(STREAM):
            if g["name"] in (GROUP, GROUP.encode()):
                return g
    except redis.ResponseError:
        pass
    return {}


def entries_read(r: RawRedis) -> int:
    return int(group_info(r).get("entries-read") or 0)


def snapshot(url: str, now_ms: int, **overrides: object) -> None:
    """Rebuild the window snapshots once, as a daemon's ticker would, at Redis time now_ms."""
    import asyncio

    from decision_intel.daemon.snapshots import Snapshotter
    from decision_intel.settings import load
    from decision_intel.store.client import connect

    async def go() -> None:
        s = load(redis_url=url, **overrides)
        client = connect(s)
        await Snapshotter(s, client, "test").run(now_ms)
        await client.aclose()

    asyncio.run(go())


def drained(r: RawRedis, total: int) -> bool:
    """Every entry delivered, nothing pending, and every one counted."""
    g = group_info(r)
    if not g or g.get("lag") != 0 or g.get("pending") != 0:
        return False
    return int(r.hget("quantum:p35:status", "processed_total") or 0) >= total


def ready_consumers(r: RawRedis) -> int:
    return len(list(r.scan_iter("quantum:p35:status:consumer:*")))


class MovableAddress:
    """A TCP address in front of a Redis, as a failover's virtual IP or DNS name is: new
    connections go to `target_port`, connections already open stay where they are."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        for s in (src, dst):  # one side closed: close both, as a real connection ends
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()
