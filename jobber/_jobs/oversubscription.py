"""Jobs started together that ask for more CPUs or memory than this host has.

A sweep of four ``--cpu 1`` jobs on a 2-core host starts all four at once: each gets half
the CPU it asked for, and four ``--memory 6G`` jobs on an 8 GiB host run it out of memory
before any job meets its own limit. :func:`oversubscription` adds up what this identity's
jobs that run or wait to start on this host ask for, with the new ones, and says so with
the fix: a queue that lets a few run at a time.

What a queue admits at once is counted, not all of its jobs: at most ``parallel`` of them
(the largest requests), and no more than its ``cpus``/``memory`` budget. A job that waits
for another (``after``) is not counted: it does not run alongside it. Jobs without a CPU or
memory limit ask for nothing in particular and are not counted either.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Any

from jobber._errors import JobError, JobNotFound
from jobber._jobs.job import spec_of
from jobber._limits import format_size, host_cpus, host_memory

__all__ = ["Oversubscription", "oversubscription", "SCAN"]

SCAN = 500  # the newest jobs looked at for running ones: a long history costs no more
_ACTIVE = ("running", "pending")


@dataclass(frozen=True)
class Oversubscription:
    """What the jobs that run at once ask for, against the host.

    Attributes:
        jobs: how many jobs were counted (the new ones and those already running or waiting).
        new: how many of them are the new ones.
        cpus / host_cpus: the CPUs they ask for together, and the host's.
        memory / host_memory: the same for memory, in bytes (0 when none was asked for).
        parallel: how many of the new jobs fit the host at once (at least 1).
    """

    jobs: int
    new: int
    cpus: float
    host_cpus: int
    memory: int
    host_memory: int
    parallel: int

    def describe(self, fix: str = "magics") -> str:
        """One sentence with the fix, for ``fix``: "magics" (``%jobber_queue NAME --parallel N``
        and ``--queue NAME``), "cli" (``jobber queue NAME --parallel N``) or "api"
        (``cert.set_queue(NAME, parallel=N)`` and ``queue=NAME``)."""
        asks = []
        if self.host_cpus and self.cpus > self.host_cpus:
            asks.append(f"{self.cpus:g} CPUs (this host has {self.host_cpus})")
        memory_over = bool(self.host_memory) and self.memory > self.host_memory
        if memory_over:
            asks.append(f"{format_size(self.memory)} of memory (this host has {format_size(self.host_memory)})")
        these = "this job" if self.new == 1 else f"these {self.new} jobs"
        counted = these if self.jobs == self.new else f"{these} and the {self.jobs - self.new} already running or waiting"
        n = self.parallel
        how = {"magics": f"`%jobber_queue NAME --parallel {n}` once, then `--queue NAME` on each run or sweep",
               "cli": f"`jobber queue NAME --parallel {n}` once, then `--queue NAME` on each run or sweep",
               "api": f"`cert.set_queue(NAME, parallel={n})` once, then `queue=NAME` for each job or sweep"}[fix]
        return (f"{counted} {'asks' if self.jobs == 1 else 'ask'} for {' and '.join(asks)} at once: they slow each other down"
                f"{' or run the host out of memory' if memory_over else ''}. "
                f"To run {n} at a time, use a queue: {how}")


def _demand(specs: list[Any], queue: dict[str, Any] | None) -> tuple[float, int]:
    """CPUs and memory that these jobs (of one queue, or of none) ask for at once."""
    cpus = sorted((float(s.limits.cpu) for s in specs if s.limits.cpu), reverse=True)
    memory = sorted((int(s.limits.memory) for s in specs if isinstance(s.limits.memory, int)), reverse=True)
    if queue is None:
        return sum(cpus), sum(memory)
    parallel = queue.get("parallel")
    cpu_total, memory_total = sum(cpus[:parallel]), sum(memory[:parallel])
    if queue.get("cpus"):
        cpu_total = min(cpu_total, float(queue["cpus"]))
    if queue.get("memory"):
        memory_total = min(memory_total, int(queue["memory"]))
    return cpu_total, memory_total


def oversubscription(session: Any, new_jobs: list[Any], *, host_cpu_count: int | None = None,
                     host_memory_bytes: int | None = None) -> Oversubscription | None:
    """What the new jobs and this identity's running or waiting jobs on this host ask for
    at once, when it is more CPUs or memory than the host has; else None.

    Args:
        session: the identity's jobs on this host (a ``Certificate`` or ``JobStore``).
        new_jobs: the jobs just made or started (a sweep's, or one ``%%jobber_run``'s).
        host_cpu_count / host_memory_bytes: the host's (default: this host's).

    Returns:
        The numbers (``describe()`` says them with the fix), or None when they fit, or
        when the new jobs ask for nothing in particular.
    """
    cpus_here = host_cpu_count or host_cpus() or 0
    memory_here = host_memory_bytes or host_memory() or 0
    new_ids = {job.id for job in new_jobs}
    new = [s for s in (spec_of(job) for job in new_jobs) if not s.after]  # one that waits runs later
    if not any(s.limits.cpu or isinstance(s.limits.memory, int) for s in new):
        return None
    others = []
    for job in islice(reversed(session.get_jobs()), SCAN):
        if job.id in new_ids:
            continue
        try:
            if job.backend == "local" and job.status().state in _ACTIVE:
                spec = spec_of(job)
                if not spec.after:
                    others.append(spec)
        except (JobError, JobNotFound):
            continue  # removed while we looked
    counted = new + others
    queues = session.queues() if any(s.queue for s in counted) else {}
    cpus, memory = 0.0, 0
    for name in {s.queue for s in counted}:
        asked = _demand([s for s in counted if s.queue == name], None if name is None else queues.get(name, {}))
        cpus, memory = cpus + asked[0], memory + asked[1]
    cpu_over = bool(cpus_here) and cpus > cpus_here + 1e-9
    memory_over = bool(memory_here) and memory > memory_here
    if not (cpu_over or memory_over):
        return None
    fits = []
    largest_cpu = max((float(s.limits.cpu) for s in new if s.limits.cpu), default=0.0)
    largest_memory = max((int(s.limits.memory) for s in new if isinstance(s.limits.memory, int)), default=0)
    if largest_cpu:
        fits.append(int(cpus_here // largest_cpu))
    if largest_memory:
        fits.append(int(memory_here // largest_memory))
    return Oversubscription(jobs=len(counted), new=len(new), cpus=round(cpus, 3), host_cpus=cpus_here,
                            memory=memory, host_memory=memory_here, parallel=max(1, min(fits) if fits else 1))
