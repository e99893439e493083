"""The ticker's periodic jobs, each on its own schedule and its own failure streak.

A job that raises is tried again after RETRY_FIRST_S, then twice as long each time, at
most RETRY_CAP_S: it neither stays due and runs first every tick, nor holds up the jobs
after it (issue 29: one failing job stopped snapshots, alerts and cleanup while
`tick.failed` was logged every second). The service logs a streak's first failure and
its end, not each try. Redis down is not a job's failure: the service waits that out
for all of them (service.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

RETRY_FIRST_S = 1.0
RETRY_CAP_S = 30.0


@dataclass
class Job:
    name: str
    every_s: float
    """0: every tick."""
    run: Callable[[], Awaitable[bool | None]]
    """True back: a bounded job with more to do, due again a tick later."""
    due_s: float
    """Monotonic time it is due at."""
    failures: int = 0
    """Failures in a row (0: it last ran, or has not run yet)."""
    failing_since_s: float = 0.0

    def due(self, now_s: float) -> bool:
        return now_s >= self.due_s

    def succeeded(self, now_s: float, again_s: float | None = None) -> int:
        """It ran: due again after its interval (after `again_s` when it has more to do).
        Returns the failure streak it ended."""
        ended, self.failures = self.failures, 0
        self.due_s = now_s + (self.every_s if again_s is None else again_s)
        return ended

    def failed(self, now_s: float) -> float:
        """It raised: due again after its backoff, which this returns (seconds)."""
        if not self.failures:
            self.failing_since_s = now_s
        self.failures += 1
        retry_s = min(RETRY_CAP_S, RETRY_FIRST_S * 2 ** min(self.failures - 1, 16))
        self.due_s = now_s + retry_s
        return retry_s
