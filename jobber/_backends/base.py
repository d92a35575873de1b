"""The one private interface behind ``jobber.Job``: every place a job can run implements it.

    jobber.Job  --holds-->  Backend
                              |- LocalBackend   (this host: cgroup v2 | cgroup v1 | none)
                              |- SlurmBackend   (sbatch / scontrol / scancel)
                              '- RemoteBackend  (a jobber server, over HTTPS + mTLS)

A backend is made for one job and answers for it alone; ``Job`` delegates each verb in
one line and never asks which backend it holds. Backends that keep the job in a job
directory (local, Slurm) share ``DirectoryBackend``: the spec, the start claim and the
log readers. Where a job runs is decided in one place, ``jobber._backends.open_backend``.

A jobber server reaches its jobs through this interface too: it starts them sandboxed,
stops them by ``signal`` (driving ``jobber._backends.stopping``'s plan on its event loop)
and reads their logs by ``read_log``. Those three are offered by the backends of jobs
kept on this host (local, Slurm), the ones a server serves; a remote job is a server's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from jobber._errors import JobError
from jobber._jobs import logcut, logs
from jobber._jobs.jobdir import JobDir
from jobber._jobs.spec import JobSpec
from jobber._jobs.status import JobStatus

if TYPE_CHECKING:
    from jobber._backends.context import Sandbox

__all__ = ["Backend", "DirectoryBackend"]


class Backend(Protocol):
    """What ``jobber.Job`` needs from wherever its job runs."""

    name: str
    """"local", "slurm" or "remote"."""
    job_id: int
    owner: str
    """The SHA-256 of the owner's certificate."""
    path: Path | None
    """The job's directory on this host (None for a remote job)."""
    session: Any
    """What made the job (a job store, a remote session): re-runs are made there."""

    def key(self) -> tuple[Any, ...]:
        """What tells this job apart from every other (equality and hashing)."""

    def where(self) -> str:
        """Where the job lives, for ``repr`` ("" on this host)."""

    def spec(self) -> JobSpec:
        """What the job is: ``command``, ``limits``, ``options`` and its lifecycle (``jobber._jobs.spec``)."""

    def start(self, *, user: str | None, cwd: str | None, sandbox: Sandbox | None = None) -> None:
        """Start the job; on any failure the job is left startable (or ended, with the reason).

        ``sandbox``: how a jobber server starts a tenant's job, with nothing of its own
        process (``context.Sandbox``); a backend that starts nothing here refuses one.
        """

    def status(self) -> JobStatus:
        """The job's state now."""

    def stop(self, grace: float) -> JobStatus:
        """SIGTERM to every process of the job, SIGKILL after ``grace``; the final status."""

    def signal(self, kill: bool) -> JobStatus:
        """Record the stop and signal every process (SIGTERM, or SIGKILL with ``kill``)
        without waiting; the status just before. One step of ``stopping.stop_plan``."""

    def wait(self, timeout: float | None) -> JobStatus:
        """Block until the job has ended or ``timeout`` passed."""

    def tail(self, buf: bytearray | memoryview, offset: int) -> int:
        """Copy log bytes from ``offset`` into ``buf`` (readinto semantics)."""

    def read_log(self, buf: bytearray, offset: int) -> tuple[int, int]:
        """``tail``, and where the bytes start: (the logical offset of the first, how many)."""

    def log_length(self) -> int:
        """The log's logical length now: where a read from its end starts."""

    def follow(self, offset: int, heartbeat: float | None) -> Iterator[bytes]:
        """Live log chunks until the job has ended and the log is drained."""

    def remove(self) -> None:
        """Remove an ended (or never started) job and its files; JobError while it runs."""

    def attempts(self) -> list[JobStatus]:
        """Every attempt's status, oldest first (one, for a job that was never retried)."""

    def read_result(self) -> tuple[dict[str, Any], bytes]:
        """An ended function job's outcome: (``result.json``'s object, ``result.pkl``'s bytes).

        Nothing is unpickled here. JobError for a command job ("job N is a command job: it
        has no result"), and for a function job that ended without writing a result
        (killed, OOM-killed, timed out, stopped), saying which.
        """

    def result_meta(self) -> dict[str, Any] | None:
        """A function job's ``result.json`` object (never the pickle), or None: a command
        job, or no result written (yet)."""


class DirectoryBackend:
    """The part of the local and Slurm backends that is the job directory.

    Args:
        jobdir: the job's directory.
    """

    name = "local"

    def __init__(self, jobdir: JobDir, session: Any = None) -> None:
        self.dir = jobdir
        self.session = session
        self.job_id = jobdir.job_id
        self.owner = jobdir.owner
        self.path: Path | None = jobdir.path

    def key(self) -> tuple[Any, ...]:
        return (self.dir.path, self.job_id)

    def where(self) -> str:
        return ""

    def spec(self) -> JobSpec:
        return self.dir.read_spec()

    def tail(self, buf: bytearray | memoryview, offset: int) -> int:
        return logs.tail(self.dir.log, buf, offset)

    def read_log(self, buf: bytearray, offset: int) -> tuple[int, int]:
        try:
            fd = os.open(self.dir.log, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return max(0, offset), 0  # not started yet: an empty log
        try:
            return logcut.read_logical(fd, memoryview(buf), offset)
        finally:
            os.close(fd)

    def log_length(self) -> int:
        try:
            fd = os.open(self.dir.log, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return 0
        try:
            return logcut.find_cut(fd).length
        finally:
            os.close(fd)

    def follow(self, offset: int, heartbeat: float | None) -> Iterator[bytes]:
        return logs.follow(self.dir.log, offset, lambda: self.status().ended, heartbeat=heartbeat)

    def signal(self, kill: bool) -> JobStatus:
        """Refused: this backend stops its jobs only as a whole (``stop``)."""
        status = self.status()
        if status.ended:
            return status
        if status.state == "created":
            raise JobError(f"job {self.job_id} was never started: nothing to stop", job_id=self.job_id)
        raise JobError(f"job {self.job_id} is a {self.name} job: only job.stop() stops it", job_id=self.job_id)

    def remove(self) -> None:
        status = self.status()
        if not status.ended and (status.state != "created" or self.dir.exists("started")):
            raise JobError(f"job {self.job_id} is {status.state}: stop it first (a running job's files are "
                           "never removed)", job_id=self.job_id)
        self.dir.remove_tree()

    def attempts(self) -> list[JobStatus]:
        return [self.status()]

    def read_result(self) -> tuple[dict[str, Any], bytes]:
        from jobber._jobs.results import read_result

        return read_result(self.dir, self.job_id, self.spec(), self.status())

    def result_meta(self) -> dict[str, Any] | None:
        from jobber._jobs.results import read_meta

        return read_meta(self.dir) if self.spec().is_function else None

    def status(self) -> JobStatus:  # pragma: no cover - every backend defines it
        raise NotImplementedError
