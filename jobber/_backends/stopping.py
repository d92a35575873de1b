"""How a job is stopped, decided in one place: SIGTERM, the grace period, SIGKILL, the end.

The plan is sans-I/O, as h11 is for HTTP: :func:`stop_plan` yields the next step and is
sent the job's status once that step is done. It holds every decision; a driver does the
I/O. ``LocalBackend.stop`` drives it with blocking waits (:func:`drive`); a jobber server
sends the signals from a worker thread and waits on its event loop
(``jobber._server.stops``), so that no thread is held during the grace period.

    Signal(kill=False)     SIGTERM to every process of the job (SIGKILL at once if grace <= 0)
    Wait(grace)            for the end; SIGKILL follows if it does not come
    Signal(kill=True)      SIGKILL to every process
    Wait(KILL_WAIT_S)      for the end, which must come now

A signal is sent by the backend's ``signal(kill)`` (``jobber._backends.base``), which
first records the stop, and answers with the status as it was just before. A job that
waits in line leaves it there, unrun (its status has ended). A job between two attempts
has no process to signal: its stop is recorded, and the plan waits for the retry to end
it "stopped", or for the next attempt, which it then signals.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass

from jobber._errors import JobError
from jobber._jobs.status import JobStatus

__all__ = ["KILL_WAIT_S", "PENDING_WAIT_S", "Signal", "Wait", "drive", "stop_plan"]

# After SIGKILL, how long the job may take to be recorded as ended.
KILL_WAIT_S = 10.0
# Between two attempts: run_next_attempt.py ends the job within ~50 ms of the stop request, or has
# just started the next attempt.
PENDING_WAIT_S = 30.0


@dataclass(frozen=True)
class Signal:
    """Record the stop and signal every process of the job: SIGTERM, or SIGKILL with ``kill``."""

    kill: bool


@dataclass(frozen=True)
class Wait:
    """Wait up to ``seconds`` for the job's end.

    Attributes:
        seconds: how long at most.
        grace: this is the grace period: SIGKILL follows unless the job ends.
        pending: wait for the job to be no longer "pending" (between two attempts)
            rather than for its end.
    """

    seconds: float
    grace: bool = False
    pending: bool = False


Plan = Generator["Signal | Wait", JobStatus, JobStatus]


def stop_plan(job_id: int, grace: float) -> Plan:
    """The steps that stop job ``job_id``; send each step's status, get the next step.

    Returns:
        (as ``StopIteration.value``) the final status: "stopped", or how the job ended
        if it ended first.

    Raises:
        JobError: the job did not end after SIGKILL.
    """
    kill = grace <= 0
    status = yield Signal(kill)
    if status.state == "pending":  # between two attempts (one in line has ended, withdrawn)
        status = yield Wait(PENDING_WAIT_S, pending=True)
        if status.ended:
            return status
        status = yield Signal(kill)  # the next attempt, which had just started
    if status.ended:
        return status
    if not kill:
        status = yield Wait(grace, grace=True)
        if status.ended:
            return status
        status = yield Signal(True)
        if status.ended:
            return status
    status = yield Wait(KILL_WAIT_S)
    if not status.ended:
        raise JobError(f"job {job_id} did not end after SIGKILL (state {status.state})", job_id=job_id)
    return status


def drive(plan: Plan, signal: Callable[[bool], JobStatus], wait: Callable[[Wait], JobStatus]) -> JobStatus:
    """Run ``plan`` to its end in the calling thread, blocking in each wait.

    Args:
        plan: from :func:`stop_plan`.
        signal: sends a :class:`Signal` (the backend's ``signal``).
        wait: does a :class:`Wait`.

    Returns:
        The final status.
    """
    step = next(plan)
    while True:
        status = signal(step.kill) if isinstance(step, Signal) else wait(step)
        try:
            step = plan.send(status)
        except StopIteration as end:
            return end.value
