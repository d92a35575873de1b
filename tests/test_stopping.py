"""The stop plan (``jobber._backends.stopping``): every decision, without a process.

The plan is driven for real by ``Job.stop`` (tests/test_jobs.py, tests/test_retries.py)
and by the server's stop (tests/test_server.py, tests/test_server_limits.py); here each
path through it is walked with made-up statuses.
"""

from __future__ import annotations

import pytest

from jobber import JobError, JobStatus
from jobber._backends.stopping import KILL_WAIT_S, PENDING_WAIT_S, Signal, Wait, drive, stop_plan

RUNNING = JobStatus(state="running")
PENDING = JobStatus(state="pending")
STOPPED = JobStatus(state="stopped")
EXITED = JobStatus(state="exited")


def walk(grace: float, answers: list[JobStatus]) -> tuple[list[object], JobStatus]:
    """The steps the plan takes when each step is answered with the next status."""
    steps: list[object] = []
    left = iter(answers)

    def answer(step: object) -> JobStatus:
        steps.append(step)
        return next(left)

    final = drive(stop_plan(7, grace), lambda kill: answer(Signal(kill)), answer)
    assert next(left, None) is None, "the plan ended before every answer was used"
    return steps, final


@pytest.mark.parametrize(("grace", "answers", "steps", "final"), [
    pytest.param(5, [RUNNING, STOPPED], [Signal(False), Wait(5, grace=True)], STOPPED, id="ends-in-its-grace"),
    pytest.param(5, [RUNNING, RUNNING, RUNNING, STOPPED],
                 [Signal(False), Wait(5, grace=True), Signal(True), Wait(KILL_WAIT_S)], STOPPED, id="killed"),
    pytest.param(5, [RUNNING, RUNNING, EXITED], [Signal(False), Wait(5, grace=True), Signal(True)], EXITED,
                 id="ended-before-the-kill"),
    pytest.param(0, [RUNNING, STOPPED], [Signal(True), Wait(KILL_WAIT_S)], STOPPED, id="no-grace"),
    pytest.param(-1, [RUNNING, STOPPED], [Signal(True), Wait(KILL_WAIT_S)], STOPPED, id="negative-grace"),
    pytest.param(5, [EXITED], [Signal(False)], EXITED, id="already-ended"),
    pytest.param(5, [STOPPED], [Signal(False)], STOPPED, id="withdrawn-from-its-line"),
    pytest.param(5, [PENDING, STOPPED], [Signal(False), Wait(PENDING_WAIT_S, pending=True)], STOPPED,
                 id="between-attempts"),
    pytest.param(5, [PENDING, RUNNING, RUNNING, STOPPED],
                 [Signal(False), Wait(PENDING_WAIT_S, pending=True), Signal(False), Wait(5, grace=True)], STOPPED,
                 id="next-attempt-just-started"),
])
def test_each_path(grace, answers, steps, final):
    assert walk(grace, answers) == (steps, final)


def test_a_job_alive_after_sigkill_is_an_error():
    with pytest.raises(JobError, match=r"job 7 did not end after SIGKILL \(state running\)") as caught:
        walk(1, [RUNNING, RUNNING, RUNNING, RUNNING])
    assert caught.value.job_id == 7


def test_a_refused_signal_ends_the_plan():
    def refuse(kill: bool) -> JobStatus:
        raise JobError("job 7 was never started: nothing to stop", job_id=7)

    with pytest.raises(JobError, match="never started"):
        drive(stop_plan(7, 5), refuse, lambda step: pytest.fail("no wait after a refusal"))
