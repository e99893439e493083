"""sd_notify(3): READY, STATUS, WATCHDOG and STOPPING datagrams; a no-op without NOTIFY_SOCKET."""

from __future__ import annotations

import contextlib
import socket


class Notifier:
    def __init__(self, address: str | None):
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        if address:
            # An abstract socket is spelled with a leading '@' in the environment.
            self._address = "\0" + address[1:] if address.startswith("@") else address
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *lines: str) -> None:
        if self._sock is None or self._address is None:
            return
        # systemd gone or its socket full: never let a notification stop the service
        with contextlib.suppress(OSError):
            self._sock.sendto("\n".join(lines).encode(), self._address)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
