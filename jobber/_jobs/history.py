"""What earlier runs with the same label used, and the memory limit that follows from it.

``last_runs(store, label)`` reads the few newest ended runs of a label that reported their
peak memory; ``RunHistory.describe()`` says it in one line ("last 3 runs of `train`
(jobs 4, 6, 7) peaked at 3.1-3.4 GiB, 1.8 cores"), ``suggest_memory()`` turns it into a
limit, and ``resolve_auto`` makes ``Limits(memory="auto")`` that limit when a job is
created, so the spec on disk only ever holds a size.

A run the OOM killer ended never shows its peak: it was stopped at its limit, and needed
more. Such runs are not counted as peaks; the largest limit one was killed at is kept as a
lower bound (``oom_bound``), which the suggestion does not go below and ``describe`` names.

A listing that shows history stays cheap: jobs are looked at newest first, and the look
stops after ``RUNS`` counted runs, or after ``SCAN`` jobs, whichever comes first.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING

from jobber._errors import JobError, LimitError
from jobber._limits import AUTO, Limits, format_size

if TYPE_CHECKING:
    from jobber._jobs.job import Job
    from jobber._jobs.status import JobStatus

__all__ = ["RunHistory", "last_runs", "resolve_auto", "tidy_size", "RUNS", "HEADROOM"]

RUNS = 3  # runs a history covers: enough to see a spread, few enough to stay current
SCAN = 200  # newest jobs looked at for them, so that a label seen long ago costs no more
HEADROOM = 1.25  # memory="auto" is the largest peak x this, rounded up by tidy_size
_MIB = 1 << 20
_GIB = 1 << 30


@dataclass(frozen=True)
class RunHistory:
    """The newest ended runs of a label that reported their peak memory.

    Attributes:
        label: the label.
        job_ids: the runs' job ids, newest first.
        peak_min / peak_max: the smallest and largest of their peaks, in bytes.
        cores_min / cores_max: the range of their mean CPU use (CPU seconds / running
            time), or None when no run reported both.
        oom_job_ids: runs among (or newer than) them that the OOM killer ended, newest
            first: not peaks (each needed more than its limit).
        oom_bound: the largest memory such a run was killed at: a lower bound of what the
            job needs; None without one. peak_min/peak_max are 0 when only such runs were found.
    """

    label: str
    job_ids: tuple[int, ...]
    peak_min: int
    peak_max: int
    cores_min: float | None = None
    cores_max: float | None = None
    oom_job_ids: tuple[int, ...] = ()
    oom_bound: int | None = None

    @property
    def runs(self) -> int:
        """How many runs this history covers."""
        return len(self.job_ids)

    def describe(self) -> str:
        """One line for people, naming the runs: "last 3 runs of `train` (jobs 4, 6, 7)
        peaked at 3.1-3.4 GiB, 1.8 cores", and, for runs the OOM killer ended, "job 9 was
        OOM-killed at 4 GiB (a lower bound: it needed more)"."""
        parts = []
        if self.job_ids:
            runs = "last run" if self.runs == 1 else f"last {self.runs} runs"
            text = f"{runs} of `{self.label}` ({_jobs(self.job_ids)}) peaked at {_size_range(self.peak_min, self.peak_max)}"
            if self.cores_min is not None and self.cores_max is not None:
                low, high = f"{self.cores_min:.1f}", f"{self.cores_max:.1f}"
                text += f", {high if low == high else f'{low}-{high}'} cores"
            parts.append(text)
        if self.oom_job_ids and self.oom_bound:
            killed = len(self.oom_job_ids)
            verb = "was" if killed == 1 else "were"
            at = "at" if killed == 1 else "at up to"
            where = "" if self.job_ids else f" (`{self.label}`)"
            parts.append(f"{_jobs(self.oom_job_ids)}{where} {verb} OOM-killed {at} {format_size(self.oom_bound)} "
                         "(a lower bound: it needed more)")
        return "; ".join(parts)

    def suggest_memory(self, headroom: float = HEADROOM) -> int:
        """A memory limit for the next run: the largest peak of a run that was not OOM-killed,
        or the OOM bound when larger (a newer run needed more), x ``headroom``, by :func:`tidy_size`."""
        return tidy_size(math.ceil(max(self.peak_max, self.oom_bound or 0) * headroom))


def tidy_size(size: int) -> int:
    """Round a byte count up to a size people write: a multiple of 16 MiB below 1 GiB, of
    64 MiB below 4 GiB, of 256 MiB from there on (69 MiB -> 80 MiB, 1.1 GiB -> 1.125 GiB,
    4.1 GiB -> 4.25 GiB).

    Finer steps would pretend a precision that a few runs' peaks do not have; coarser ones
    would waste much of a small job's memory (64 MiB steps nearly double a 40 MiB job).
    """
    step = 16 * _MIB if size < _GIB else 64 * _MIB if size < 4 * _GIB else 256 * _MIB
    return max(step, -(-size // step) * step)


def last_runs(store: object, label: str, *, runs: int = RUNS, before: int | None = None) -> RunHistory | None:
    """The newest ended runs with this label that reported their peak memory.

    Running, waiting and never-started jobs are not counted, nor are unlabelled ones. At
    most the ``SCAN`` newest jobs are looked at (their specs, and the statuses of those with
    the label).

    Args:
        store: where the jobs are: a ``JobStore``, a ``Certificate`` or a remote session
            (anything with ``get_jobs()``, oldest first).
        label: the label.
        runs: how many runs at most.
        before: only jobs with a smaller id (a job's own view leaves itself out).

    Returns:
        The history, or None when no such run is found.

    Raises:
        JobError: the jobs cannot be listed.
    """
    found: list[tuple[int, JobStatus]] = []
    killed: list[tuple[int, JobStatus]] = []
    jobs: list[Job] = store.get_jobs()  # type: ignore[attr-defined]
    if before is not None:
        jobs = [job for job in jobs if job.id < before]
    for job in islice(reversed(jobs), SCAN):
        try:
            if job.label != label:
                continue
            status = job.status()
        except JobError:
            continue  # removed, or being written, while we looked: not a run to count
        if not status.ended or not status.peak_memory_bytes:
            continue
        if status.oom_killed or status.state == "oom-killed":
            if len(killed) < runs:
                killed.append((job.id, status))  # its "peak" is where it was stopped: a lower bound
            continue
        found.append((job.id, status))
        if len(found) == runs:
            break
    if not found and not killed:
        return None
    peaks = [status.peak_memory_bytes or 0 for _, status in found] or [0]
    cores = [status.cpu_seconds / status.elapsed for _, status in found
             if status.cpu_seconds is not None and status.elapsed]
    bounds = [status.limits.memory or status.peak_memory_bytes or 0 for _, status in killed]
    return RunHistory(label=label, job_ids=tuple(job_id for job_id, _ in found), peak_min=min(peaks),
                      peak_max=max(peaks), cores_min=min(cores) if cores else None,
                      cores_max=max(cores) if cores else None, oom_job_ids=tuple(job_id for job_id, _ in killed),
                      oom_bound=max(bounds) if bounds else None)


def resolve_auto(store: object, limits: Limits | None, label: str | None) -> Limits | None:
    """``limits`` with ``memory="auto"`` replaced by :meth:`RunHistory.suggest_memory`.

    Called as a job is created, before its spec is written. Limits without "auto" (or
    None) come back unchanged.

    Args:
        store: the jobs to learn from (see :func:`last_runs`).
        limits: the limits given to ``new_job``.
        label: the new job's label.

    Returns:
        The limits with a memory size.

    Raises:
        LimitError: "auto" without a label, or without an earlier ended run of that label
            that reported its peak memory.
    """
    if limits is None or limits.memory != AUTO:
        return limits
    if not label:
        raise LimitError("--memory auto needs a label (--label NAME, or new_job(label=...)): the size is picked "
                         "from earlier runs with the same label; give a label, or give a size such as 2G")
    history = last_runs(store, label)
    if history is None:
        raise LimitError(f"--memory auto needs an earlier run of a job with the same label ({label!r}) that "
                         "reported its peak memory: run it once with a limit, or give a size")
    if not history.job_ids:
        bound = history.oom_bound or 0
        raise LimitError(f"--memory auto needs an earlier run of `{label}` that was not OOM-killed: "
                         f"{_jobs(history.oom_job_ids)} {'was' if len(history.oom_job_ids) == 1 else 'were'} killed "
                         f"at {format_size(bound)}, a lower bound and not a peak; give a size above it, "
                         f"e.g. --memory {_flag_size(tidy_size(2 * bound))}")
    return dataclasses.replace(limits, memory=history.suggest_memory())


def _size_range(low: int, high: int) -> str:
    """"3.1-3.4 GiB", "900 MiB-1.2 GiB", or one size when both read the same."""
    low_text, high_text = format_size(low), format_size(high)
    if low_text == high_text:
        return high_text
    low_number, _, low_unit = low_text.partition(" ")
    high_number, _, high_unit = high_text.partition(" ")
    if low_unit == high_unit:
        return f"{low_number}-{high_number} {high_unit}"
    return f"{low_text}-{high_text}"


def _jobs(ids: tuple[int, ...]) -> str:
    """ "job 7", "jobs 4, 6, 7" (oldest first)."""
    return f"job {ids[0]}" if len(ids) == 1 else "jobs " + ", ".join(str(i) for i in sorted(ids))


def _flag_size(size: int) -> str:
    """A size as a --memory flag takes it: "320M", "2G"."""
    return f"{size // _GIB}G" if size % _GIB == 0 else f"{-(-size // _MIB)}M"
