"""sd_notify(3): READY/STATUS/WATCHDOG/STOPPING datagrams to systemd. No-op without NOTIFY_SOCKET."""

from __future__ import annotations

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
        try:
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError:
            pass  # systemd gone or socket full: never let notification stop the service

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
