"""A stop asked for over the API: the one stop plan (``jobber._backends.stopping``), driven
on the event loop.

The plan is the library's (``Job.stop``): SIGTERM, the grace period, SIGKILL, the end. Here
each signal is sent from a worker thread (it reads and writes the job's files) and each
wait is on the server's inotify (``watch.py``), so a stop holds no thread during its grace
period. The caller runs it as a task of its own, which ends the stop (SIGKILL after the
grace) even if the client hangs up. When the server is stopping, the rest of a stop that
has not sent SIGKILL yet goes to a thread of its own, which the process waits for before it
exits.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable

from jobber._backends.stopping import Signal, stop_plan
from jobber._jobs.job import Job
from jobber._jobs.status import JobStatus
from jobber._server.watch import WatchHub, wait_for_end

__all__ = ["stop"]

# As watch.py's waits: inotify wakes them, this bounds how soon a dead supervisor is noticed.
_LIVENESS_CHECK_S = 1.0


async def stop(hub: WatchHub, signal: Callable[[bool], Awaitable[JobStatus]], job: Job, grace: float) -> JobStatus:
    """Stop ``job`` as ``job.stop(grace)`` does, waiting on the event loop.

    Args:
        hub: the server's watch hub.
        signal: sends one signal step in a worker thread (``jobber._jobs.job.signal``).
        job: the job.
        grace: seconds between SIGTERM and SIGKILL.

    Returns:
        The final status; or, when the server began to stop meanwhile, the status then.

    Raises:
        JobError: never started, its processes cannot be signalled, or it did not end.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    plan = stop_plan(job.id, grace)
    step = next(plan)
    while True:
        if isinstance(step, Signal):
            status = await signal(step.kill)
        else:
            wait = _while_pending if step.pending else wait_for_end
            status = await wait(hub, job, step.seconds)
            if hub.closed and not status.ended:
                if step.grace or step.pending:  # SIGKILL is yet to come: a thread sees to it
                    left = max(0.0, deadline - loop.time())
                    threading.Thread(target=job.stop, args=(left,), name=f"jobber-stop-{job.id}", daemon=False).start()
                return status
        try:
            step = plan.send(status)
        except StopIteration as end:
            return end.value


async def _while_pending(hub: WatchHub, job: Job, timeout: float) -> JobStatus:
    """The job's status once it is no longer "pending" (between two attempts: the retry
    ended it, or started the next attempt), or after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sub = hub.subscribe(job.path)
    try:
        while (status := job.status()).state == "pending" and not hub.closed:
            left = deadline - loop.time()
            if left <= 0:
                break
            await sub.wait(min(left, _LIVENESS_CHECK_S))
        return status
    finally:
        hub.unsubscribe(sub)
