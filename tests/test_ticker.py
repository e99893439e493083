"""A periodic job's schedule and failure streak (daemon/ticker.py), without Redis."""

from __future__ import annotations

from decision_intel.daemon.ticker import RETRY_CAP_S, RETRY_FIRST_S, Job


async def _nothing() -> None:
    return None


def test_a_failing_job_backs_off_doubling_up_to_the_cap_and_a_success_ends_the_streak() -> None:
    job = Job("progress", 10.0, _nothing, due_s=10.0)
    assert not job.due(9.9) and job.due(10.0)
    now = 10.0
    retries = []
    for _ in range(12):
        retries.append(job.failed(now))
        assert job.due_s == now + retries[-1] and not job.due(now)
        now = job.due_s
    assert retries[:3] == [RETRY_FIRST_S, 2 * RETRY_FIRST_S, 4 * RETRY_FIRST_S]
    assert max(retries) == RETRY_CAP_S == retries[-1]
    assert job.failures == 12 and job.failing_since_s == 10.0
    assert job.succeeded(now) == 12  # the streak it ended, for the recovery line
    assert job.failures == 0 and job.due_s == now + 10.0
    assert job.failed(now) == RETRY_FIRST_S  # a new streak starts from the first retry


def test_a_job_of_every_tick_is_due_again_at_once_after_a_success() -> None:
    job = Job("snapshot", 0.0, _nothing, due_s=0.0)
    assert job.succeeded(5.0) == 0
    assert job.due(5.0)
