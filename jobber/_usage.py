"""A job's usage history: memory, CPU and tasks sampled by its supervisor, kept with the job.

The supervisor (``launcher.c``, or the Python twin in ``logcap.supervise``) reads the
job's cgroup every ``interval`` seconds and appends one line to ``<job dir>/usage``::

    # jobber usage 1: seconds-since-start memory-bytes cpu-seconds tasks
    0.500 10485760 0.120000 3
    1.000 12582912 0.610000 -

("-": not measured, a controller the job does not have). The file outlives the kernel
that started the job, so any later view draws the job's charts from its start.

It stays small whatever the job's length: at ``CAPACITY`` lines the supervisor rewrites
it with every two neighbours merged into one (the later time and CPU total, the larger
memory and task count, so peaks survive) and doubles its interval. A 3-day job's file
holds at most ``CAPACITY`` lines (~50 bytes each: under 256 KiB, see ``MAX_BYTES``).

Standard library only: part of the supervisor island (see ``supervisor.py``).
"""

from __future__ import annotations

import os
from collections import namedtuple

__all__ = ["CAPACITY", "FIRST_INTERVAL_S", "HEADER", "MAX_BYTES", "USAGE", "UsageSample", "UsageWriter",
           "merge_pairs", "peak_tasks", "read_usage"]

USAGE = "usage"  # the file's name in the job directory
HEADER = "# jobber usage 1: seconds-since-start memory-bytes cpu-seconds tasks\n"
CAPACITY = 1024  # lines; launcher.c's USAGE_CAPACITY is the same
FIRST_INTERVAL_S = 0.5  # launcher.c's USAGE_FIRST_NS is the same
MAX_BYTES = 256 * 1024  # what a reader reads at most (a file longer than this was not ours)


# A named tuple, not a dataclass: the supervisor's finishing half imports this module, and
# dataclasses costs it ~10 ms (inspect) on every job's end.
UsageSample = namedtuple("UsageSample", ["t", "memory_bytes", "cpu_seconds", "tasks"], defaults=[None])
UsageSample.__doc__ = """One reading of a job's cgroup.

Attributes:
    t: seconds since the job (its attempt) started.
    memory_bytes: memory in use (the larger of two merged readings), or None.
    cpu_seconds: CPU time used so far by every process of the job, or None.
    tasks: processes and threads (what ``pids.max`` counts), or None.
"""


def _larger(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else max(a, b)


def merge_pairs(samples: list[UsageSample]) -> list[UsageSample]:
    """Every two neighbours as one: the later time and CPU total (a running total, so the
    later one is exact), the larger memory and task count (peaks survive the thinning)."""
    merged = []
    for i in range(0, len(samples) - 1, 2):
        a, b = samples[i], samples[i + 1]
        merged.append(UsageSample(b.t, _larger(a.memory_bytes, b.memory_bytes),
                                  b.cpu_seconds if b.cpu_seconds is not None else a.cpu_seconds,
                                  _larger(a.tasks, b.tasks)))
    if len(samples) % 2:
        merged.append(samples[-1])
    return merged


def _field(text: str, kind: type) -> int | float | None:
    return None if text == "-" else kind(text)


def _line(sample: UsageSample) -> str:
    memory = "-" if sample.memory_bytes is None else str(sample.memory_bytes)
    cpu = "-" if sample.cpu_seconds is None else f"{sample.cpu_seconds:.6f}"
    tasks = "-" if sample.tasks is None else str(sample.tasks)
    return f"{sample.t:.3f} {memory} {cpu} {tasks}\n"


def read_usage(path: str | os.PathLike[str]) -> list[UsageSample]:
    """The samples of a usage file, oldest first; [] when there is none (a job without a
    cgroup, a job never started). A line still being written, or one that does not parse,
    is skipped: the file is read while the supervisor appends to it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    try:
        data = os.read(fd, MAX_BYTES)
    finally:
        os.close(fd)
    samples = []
    for line in data.decode("ascii", errors="replace").split("\n")[:-1]:  # the last: unfinished, or ""
        if line.startswith("#"):
            continue
        try:
            t, memory, cpu, tasks = line.split()
            samples.append(UsageSample(float(t), _field(memory, int), _field(cpu, float), _field(tasks, int)))
        except ValueError:
            continue
    return samples


def peak_tasks(path: str | os.PathLike[str]) -> int | None:
    """The most tasks any sample of a usage file saw (sampled: a burst between two samples
    is missed), or None without one."""
    return max((s.tasks for s in read_usage(path) if s.tasks is not None), default=None)


class UsageWriter:
    """The Python supervisor's sampler (``launcher.c``'s usage_* functions are its twin).

    Args:
        job_dir: the job's directory (the file is ``<job_dir>/usage``).
        sources: (kind, path) pairs from the launcher's ``--usage KIND=PATH`` options:
            ``memory`` (a file holding bytes), ``cpu-ns`` (nanoseconds, cgroup v1
            cpuacct.usage), ``cpu-stat`` (cgroup v2 cpu.stat, its usage_usec line),
            ``tasks`` (pids.current).
        started: the job's start, ``time.monotonic()``.
    """

    def __init__(self, job_dir: str, sources: list[tuple[str, str]], started: float) -> None:
        self.path = os.path.join(job_dir, USAGE)
        self.sources = sources
        self.started = started
        self.interval = FIRST_INTERVAL_S
        self.next_at = started + FIRST_INTERVAL_S
        self.samples: list[UsageSample] = []
        self.broken = not sources

    def wake_in(self, now: float) -> float | None:
        """Seconds until the next sample is due (None: this writer samples nothing)."""
        return None if self.broken else max(0.0, self.next_at - now)

    def read(self, now: float) -> UsageSample:
        """One reading of the cgroup's files (a file that cannot be read: None there)."""
        values: dict[str, int | float | None] = {"memory": None, "cpu": None, "tasks": None}
        for kind, path in self.sources:
            try:
                with open(path, "rb") as f:
                    text = f.read(4096).decode()
                if kind == "cpu-stat":
                    stat = dict(line.split() for line in text.splitlines() if line.count(" ") == 1)
                    values["cpu"] = int(stat["usage_usec"]) / 1e6
                elif kind == "cpu-ns":
                    values["cpu"] = int(text) / 1e9
                elif kind in ("memory", "tasks"):
                    values[kind] = int(text)
            except (OSError, ValueError, KeyError):
                continue
        return UsageSample(round(now - self.started, 3), values["memory"], values["cpu"], values["tasks"])  # type: ignore[arg-type]

    def sample_if_due(self, now: float) -> None:
        """Append a reading when one is due; rewrite the file, thinned, when it is full."""
        if self.broken or now < self.next_at:
            return
        self.next_at = now + self.interval
        sample = self.read(now)
        if sample.memory_bytes is None and sample.cpu_seconds is None and sample.tasks is None:
            return  # the cgroup is gone: the job is ending
        self.samples.append(sample)
        try:
            if len(self.samples) >= CAPACITY:
                self.samples = merge_pairs(self.samples)
                self.interval *= 2
                self._rewrite()
            else:
                self._append(HEADER + _line(sample) if len(self.samples) == 1 else _line(sample))
        except OSError:
            self.broken = True  # best effort: a full disk must not stop the job's supervision

    def _append(self, text: str) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def _rewrite(self) -> None:
        temporary = self.path + ".tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (HEADER + "".join(_line(s) for s in self.samples)).encode())
        finally:
            os.close(fd)
        os.rename(temporary, self.path)
