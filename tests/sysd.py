"""The real systemd (PID 1 of its own namespaces) for the operator-path tests.

`SystemdNamespace.boot()` makes a child cgroup in every hierarchy, then runs
`tests/systemd/inner.sh` under `unshare --pid --fork --mount --uts --ipc --net --cgroup`:
private /run, /dev, /etc, /opt and /var (overlays whose upper layers live in the work
directory), read-only /proc/sys and /sys, fresh cgroup mounts, and a network namespace
with only loopback. systemd boots multi-user.target from a minimal unit directory
(journald and a test redis-server; none of sysinit.target's wants, whose tmpfiles would
clean /tmp). Commands run inside with `nsenter`; `stop()` ends it with `systemctl exit`.
Nothing on the host changes. Needs root: anything else is a clear failure, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
INNER = HERE / "systemd" / "inner.sh"
UNIT_SOURCES = Path("/lib/systemd/system")
TARGETS = [
    "basic.target",
    "sysinit.target",
    "multi-user.target",
    "sockets.target",
    "timers.target",
    "paths.target",
    "slices.target",
    "local-fs.target",
    "swap.target",
    "network.target",
    "network-online.target",
    "network-pre.target",
    "nss-user-lookup.target",
    "shutdown.target",
    "exit.target",
    "final.target",
    "umount.target",
    "systemd-exit.service",
    "systemd-journald.socket",
    "-.slice",
    "system.slice",
]
REDIS_PORT = 6379
SYSTEMD = os.path.realpath("/lib/systemd/systemd")


class BootError(RuntimeError):
    pass


class SystemdNamespace:
    def __init__(self, workdir: Path):
        self.w = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid: int | None = None  # systemd's PID on the host
        self.cgroups: list[Path] = []

    # -- boot ---------------------------------------------------------------------

    def _units(self) -> None:
        units = self.w / "units"
        units.mkdir(parents=True)
        for name in TARGETS:
            src = UNIT_SOURCES / name
            if src.exists():
                shutil.copy(src, units / name)
        journald = (UNIT_SOURCES / "systemd-journald.service").read_text()
        journald = "\n".join(
            "Sockets=systemd-journald.socket" if line.startswith("Sockets=") else line
            for line in journald.splitlines()
        )
        (units / "systemd-journald.service").write_text(journald + "\n")
        (units / "redis-test.service").write_text(
            "[Unit]\nDescription=Test Redis\n\n[Service]\nType=notify\n"
            f"ExecStart=/usr/bin/redis-server --port {REDIS_PORT} --bind 127.0.0.1 "
            "--supervised systemd --save '' --appendonly no --dir /var/lib/redis-test\n"
            "StateDirectory=redis-test\nTimeoutStartSec=30\n"
        )
        wants = units / "multi-user.target.wants"
        wants.mkdir()
        for name in ("systemd-journald.service", "redis-test.service"):
            (wants / name).symlink_to(units / name)

    def _enter_child_cgroups(self) -> str:
        """Shell lines that move the harness shell into a child cgroup of each hierarchy."""
        tag = f"p35-sysd-{uuid.uuid4().hex[:8]}"
        lines = []
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            _, controllers, path = line.split(":", 2)
            if controllers == "":
                roots = [Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup")]
            else:
                name = controllers.replace("name=", "")
                roots = [Path("/sys/fs/cgroup") / name]
            for root in roots:
                if (root / "cgroup.procs").exists() or (root / path.lstrip("/")).exists():
                    child = root / path.lstrip("/") / tag
                    self.cgroups.append(child)
                    lines.append(f"mkdir -p {child}")
                    for f in ("cpuset.cpus", "cpuset.mems"):  # empty ones refuse tasks
                        if (child.parent / f).exists():
                            lines.append(f"cat {child.parent / f} > {child / f}")
                    lines.append(f"echo $$ > {child}/cgroup.procs")
                    break
        return "\n".join(lines)

    def boot(self, timeout_s: float = 60) -> None:
        if os.geteuid() != 0:
            raise BootError("the systemd tier needs root (it boots systemd in namespaces)")
        if not Path("/lib/systemd/systemd").exists():
            raise BootError("systemd is not installed (apt-get install -y systemd)")
        self._units()
        outer = self.w / "outer.sh"
        outer.write_text(
            "set -e\n" + self._enter_child_cgroups() + "\n"
            f"exec unshare --pid --fork --mount --uts --ipc --net --cgroup "
            f"--propagation private --mount-proc {INNER} {self.w}\n"
        )
        self._log = open(self.w / "systemd.log", "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            ["setsid", "bash", str(outer)],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LIBMOUNT_UTAB": str(self.w / "utab")},
        )
        deadline = time.monotonic() + timeout_s
        while self.pid is None:
            self.pid = self._find_systemd()
            if self.pid is None:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise BootError(f"systemd did not start:\n{self.log()}")
                time.sleep(0.1)
        while True:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            if time.monotonic() > deadline:
                raise BootError(f"systemd is {state!r} after {timeout_s} s:\n{self.log()}")
            time.sleep(0.2)

    def _find_systemd(self) -> int | None:
        """The host PID of the namespace's PID 1: the shallowest systemd below the harness."""
        assert self.proc is not None
        level = [self.proc.pid]
        while level:
            for pid in level:
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{pid}/exe") == SYSTEMD:
                        return pid
            level = [c for pid in level for c in _children(pid)]
        return None

    def log(self) -> str:
        out = []
        for name in ("systemd.log", "console.log"):
            with contextlib.suppress(OSError):
                out.append((self.w / name).read_text(errors="replace")[-5000:])
        return "\n".join(out)

    # -- use ------------------------------------------------------------------------

    def run(
        self,
        *cmd: str,
        check: bool = True,
        timeout: float = 300,
        env: dict[str, str] | None = None,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """A command inside every namespace of the booted systemd."""
        assert self.pid is not None
        full = [
            "nsenter",
            "-t",
            str(self.pid),
            "-a",
            "env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG=C.UTF-8",
            "SYSTEMD_PAGER=",
            "HOME=/root",
            *[f"{k}={v}" for k, v in (env or {}).items()],
            *cmd,
        ]
        proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=stdin)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def write(self, path: str, text: str, mode: str = "0644") -> None:
        """A file inside (its /etc, /opt and /var are the namespace's own)."""
        self.run(
            "sh",
            "-c",
            f'mkdir -p "$(dirname {path})" && cat > {path} && chmod {mode} {path}',
            stdin=text,
        )

    def show(self, unit: str, prop: str) -> str:
        return self.systemctl("show", "-p", prop, "--value", unit).stdout.strip()

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.run("systemctl", "--no-pager", *args, check=check)

    def journal(self, unit: str, *args: str) -> str:
        return self.run("journalctl", "--no-pager", "-u", unit, *args, check=False).stdout

    def wait(self, cond: object, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not cond():  # type: ignore[operator]
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(0.2)

    # -- end ------------------------------------------------------------------------

    def stop(self) -> None:
        if self.pid is not None:
            with contextlib.suppress(Exception):
                self.systemctl("exit", check=False)
        if self.proc is not None:
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                # Killing PID 1 of the namespace ends every process in it.
                for pid in (self.pid, self.proc.pid):
                    with contextlib.suppress(ProcessLookupError, TypeError):
                        os.kill(pid, signal.SIGKILL)  # type: ignore[arg-type]
                self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()
        for child in self.cgroups:  # systemd made cgroups below ours: deepest first
            for sub in sorted(child.rglob("*"), key=lambda p: -len(p.parts)):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                child.rmdir()


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(p) for p in (task / "children").read_text().split()]
    return out
