"""Reconnect backoff: grows, is capped, is jittered; outages are logged once per change."""

from __future__ import annotations

import random

from decision_intel.backoff import CAP_S, Connectivity, delay_s


def test_delay_grows_then_caps_with_jitter() -> None:
    rng = random.Random(1)
    delays = [delay_s(a, rng) for a in range(1, 30)]
    assert delays[0] < 0.3
    assert all(CAP_S / 2 <= d <= CAP_S for d in delays[10:])
    assert len({round(d, 6) for d in delays[10:]}) > 10, "no jitter"


class Log:
    def __init__(self) -> None:
        self.events: list[str] = []

    def warning(self, event: str, **_: object) -> None:
        self.events.append(event)

    info = warning


def test_one_line_per_state_change() -> None:
    log = Log()
    c = Connectivity(log)
    for _ in range(5):
        c.failed(ConnectionError("refused"))
    c.ok()
    c.ok()
    c.failed(ConnectionError("refused"))
    assert log.events == ["redis.unavailable", "redis.available", "redis.unavailable"]
    assert c.reconnects == 1
