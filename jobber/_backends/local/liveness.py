"""Is a process a job's files name still the one they mean?

Job files name the processes that act for a job, as (pid, start time in clock ticks since
boot): the supervisor in ``status.json``, the starter in ``started``, the launcher in
``launched``, the admission pass in ``admitted_by``. A pid alone is not enough (the kernel
reuses pids), so every reader asks :func:`alive`, and all get the same answer.
"""

from __future__ import annotations

from jobber._backends.local.supervisor import process_start_time

__all__ = ["alive"]


def alive(pid: int | None, start: int | None) -> bool:
    """Is the process recorded as (``pid``, ``start``) still running?

    A zombie has ended: it will write nothing more for the job, so it counts as gone.

    Without a start time (a file written where ``/proc/self/stat`` could not be read, or by
    an older jobber), any live process with that pid is taken to be the one recorded. The
    two possible mistakes are not alike: calling a live supervisor or launcher dead gets its
    job killed and a false ending recorded, while calling an unrelated process alive only
    delays the clean-up until that process ends (a pid comes back only after the kernel has
    handed out every other one, ``/proc/sys/kernel/pid_max``).

    Args:
        pid: the recorded pid; None or 0 for none.
        start: its recorded start time (``process_start_time``), or None when unknown.

    Returns:
        True while that process runs.
    """
    if not pid:
        return False
    now = process_start_time(pid)
    return now is not None and (start is None or now == start)
