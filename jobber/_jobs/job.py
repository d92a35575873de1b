"""``jobber.Job``: one job, wherever it runs, through the backend it holds.

The job's truth lives with its backend (a job directory on this host, Slurm, a jobber
server), so any process (a restarted kernel, the CLI, the server) sees the same state.
``Job`` holds that backend and delegates each verb to it in one line: it never asks
which backend it holds (``jobber._backends.base`` draws the interface).

Nothing outside this module touches a job's backend. What jobber's own layers need of it
beyond the public verbs (a jobber server starts jobs sandboxed, signals them and reads
their logs with offsets; a sweep starts its jobs together) are the functions below the
class, each one line of delegation too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobber._errors import JobError
from jobber._jobs.logs import check_offset
from jobber._jobs.spec import JobSpec
from jobber._jobs.status import FINAL_STATES, STATES, JobStatus
from jobber._limits import Limits
from jobber._usage import UsageSample

if TYPE_CHECKING:
    import threading

    from jobber._backends.base import Backend
    from jobber._backends.context import Sandbox

__all__ = ["Job", "JobStatus", "FINAL_STATES", "STATES", "log_length", "read_log", "signal", "spec_of",
           "start_sandboxed", "start_together"]


class Job:
    """A job of one identity. Get one from ``Certificate.new_job`` or ``get_job``
    (or from a ``jobber.connect`` session: a remote job is a ``Job`` too).

    Args:
        backend: where the job runs (made by the store or the remote session).
    """

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        self.id: int = backend.job_id

    def __repr__(self) -> str:
        return f"<jobber.Job {self.id} {self.command!r}{self._backend.where()}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other._backend.key() == self._backend.key()

    def __hash__(self) -> int:
        return hash(self._backend.key())

    @property
    def owner(self) -> str:
        """The SHA-256 of the owner's certificate."""
        return self._backend.owner

    @property
    def command(self) -> str:
        """The shell command."""
        return spec_of(self).command

    @property
    def limits(self) -> Limits:
        """The resource limits."""
        return spec_of(self).limits

    @property
    def options(self) -> dict[str, Any]:
        """Backend options given to ``new_job`` (``backend``, Slurm's ``partition``...)."""
        return dict(spec_of(self).options)

    @property
    def env(self) -> dict[str, str]:
        """The environment variables given to ``new_job(env=...)`` (not the inherited ones)."""
        return dict(spec_of(self).extra_env)

    @property
    def label(self) -> str | None:
        """The job's short name (``new_job(label=...)``), or None."""
        return spec_of(self).label

    @property
    def notify(self) -> bool:
        """Whether the job asked to be announced when it ends (``new_job(notify=True)``)."""
        return spec_of(self).notify

    @property
    def attempt(self) -> int:
        """Which attempt runs (or ran last): 1, then 2, ... as ``retries`` start it again."""
        return self.status().attempt

    @property
    def attempts(self) -> list[JobStatus]:
        """Every attempt's status, oldest first; the last is the current :meth:`status`.

        Each attempt keeps its own log: ``<job dir>/attempts/<n>/log`` for the ended ones.
        """
        return self._backend.attempts()

    @property
    def rerun_of(self) -> int | None:
        """The id of the job this one re-ran (``job.rerun()``), or None."""
        return spec_of(self).rerun_of

    @property
    def backend(self) -> str:
        """Where the job runs: "local" (this host), "slurm" or "remote" (a jobber server)."""
        return self._backend.name

    @property
    def path(self) -> Path | None:
        """The job's directory on this host (None for a job on a jobber server)."""
        return self._backend.path

    @property
    def log_path(self) -> Path | None:
        """The log file (stdout and stderr together); None for a job on a jobber server."""
        return None if self._backend.path is None else self._backend.path / "log"

    def start(self, *, user: str | None = None, cwd: str | None = None) -> None:
        """Start the job: ``/bin/sh -c COMMAND``, confined, output to the log.

        Returns once the command runs (or, on Slurm, is queued). The job does not depend
        on the calling process: it keeps running, and its outcome is recorded, after the
        caller exits or is killed. A failed start leaves the job startable again.

        Args:
            user: run as this user instead of the caller (needs root; local jobs only).
            cwd: working directory (default: the caller's).

        Raises:
            JobError: already started, no usable isolation while
                ``limits.require_isolation`` is set, or it could not be started (why).
        """
        self._backend.start(user=user, cwd=cwd)

    def status(self) -> JobStatus:
        """The job's state now (live CPU and memory while it runs on this host).

        Raises:
            JobNotFound: the job was removed. JobError: the job's files are unreadable.
                JobberError: its server or scheduler cannot be reached.
        """
        return self._backend.status()

    def usage(self) -> list[UsageSample]:
        """The job's memory, CPU and task readings from its start (its current attempt's),
        oldest first, as its supervisor sampled them into the job directory: at first every
        0.5 s, thinned as the run grows so that a long run keeps a few hundred readings.

        Returns:
            The readings; [] for a job without a cgroup, never started, or not on this
            host (a jobber server's or Slurm's job: their history is not served yet).
        """
        return self._backend.usage()

    def tail(self, buf: bytearray | memoryview, offset: int = 0) -> int:
        """Copy log bytes starting at ``offset`` into ``buf`` (readinto semantics).

        Args:
            buf: where to copy; at most ``len(buf)`` bytes are copied.
            offset: byte offset in the log; negative counts back from the current end.

        Returns:
            The number of bytes copied.

        Raises:
            JobError: ``buf`` is not a writable buffer or ``offset`` is not an int.
        """
        return self._backend.tail(buf, offset)

    def follow(self, offset: int = 0, *, heartbeat: float | None = None) -> Iterator[bytes]:
        """Yield the log as it is written, until the job has ended and the log is drained.

        Args:
            offset: where to start; negative counts back from the current end.
            heartbeat: if set, also yield ``b""`` after this many quiet seconds, so a
                consumer (a widget) can look at its own state while the job is silent.

        Yields:
            Chunks of bytes, exactly as the job wrote them.

        Raises:
            JobError: ``offset`` is not an int.
        """
        check_offset(offset)
        return self._backend.follow(offset, heartbeat)

    def wait(self, timeout: float | None = None) -> JobStatus:
        """Block until the job has ended, or ``timeout`` seconds have passed.

        Returns:
            The status: final, or still "created"/"pending"/"running" if the timeout came first.
        """
        return self._backend.wait(timeout)

    def on_end(self, fn: Callable[[JobStatus], object]) -> threading.Thread:
        """Call ``fn(status)`` once, in a daemon thread, when the job has ended.

        For scripts and notebooks that want to be told (``fn`` runs in a thread: have it
        send a message or write a file, not print into a notebook cell). Not called if the
        job is removed before it ends. Local and remote jobs alike (it waits with `wait`).

        Returns:
            The watching thread (started).
        """
        from jobber._jobs.ending import on_end

        return on_end(self, fn)

    def result(self, timeout: float | None = None) -> Any:
        """What a function job's function returned; its exception re-raised if it raised.

        Waits for the job to end first. Any process may ask, as often as it likes, until
        the job is removed: a restarted kernel does ``cert.get_job(12).result()``. The
        result is unpickled here, in the owner's process (and nowhere else).

        Args:
            timeout: seconds to wait for the job's end; None waits as long as it takes.

        Returns:
            The function's return value.

        Raises:
            TimeoutError: the job had not ended within ``timeout``.
            JobError: a command job (it has no result), one never started, or one that
                ended without a result (OOM-killed, timed out, stopped, over
                ``result_max``), saying which.
            RemoteError: the function raised an exception that cannot be rebuilt here.
            BaseException: the function's own exception, with the job's traceback attached.
        """
        from jobber._jobs.pycall import load_result

        if not spec_of(self).is_function:
            raise JobError(f"job {self.id} is a command job: it has no result (its output is in its log)",
                           job_id=self.id)
        if self.status().state == "created":
            raise JobError(f"job {self.id} was never started, so it has no result: start it (job.start())",
                           job_id=self.id)
        status = self.wait(timeout)
        if not status.ended:
            raise TimeoutError(f"job {self.id} is still {status.state} after {timeout} s")
        meta, data = self._backend.read_result()
        return load_result(meta, data, self.id)

    def result_info(self) -> dict[str, Any] | None:
        """What a function job's result is, without unpickling it: ``{"ok": bool, "type":
        "numpy.ndarray", "size": bytes, "traceback": str | None, "python": "3.11",
        "error": str | None}``; None for a command job or before the function has returned.

        Raises:
            JobError: the job's files cannot be read.
        """
        return self._backend.result_meta()

    def rerun(self, **overrides: Any) -> Job:
        """A new job with this one's command, limits and options, changed by ``overrides``.

        This job is left as it is; the new one records that it re-ran it (``rerun_of``)
        and is not started yet. ``job.rerun(limits=jobber.Limits(memory="16G")).start()``

        Args:
            **overrides: any of ``command``, ``limits``, ``env``, ``cwd``, ``label``,
                ``timeout``, ``log_max``, ``retries``, ``retry_on``, ``oom_growth``,
                ``options`` (backend options, merged).

        Returns:
            The new job, in state "created".

        Raises:
            JobError: an override that ``new_job`` would refuse.
        """
        return self._backend.session.rerun(self, **overrides)

    def remove(self) -> None:
        """Remove this job and its files (log included); it must have ended, or never started.

        Raises:
            JobError: the job is running (stop it first), or its files cannot be removed.
        """
        self._backend.remove()

    def stop(self, grace: float = 5.0) -> JobStatus:
        """Stop the whole job: SIGTERM to every process, SIGKILL after ``grace`` seconds.

        Processes that left the process group (setsid, double fork) are found through
        the cgroup, which is removed once the job is gone. Stopping an ended job changes
        nothing.

        Returns:
            The final status ("stopped", or how it ended if it ended first).

        Raises:
            JobError: the job was never started, or it could not be killed.
        """
        return self._backend.stop(grace)


def spec_of(job: Job) -> JobSpec:
    """What ``job`` is: its command, limits, options and lifecycle (``jobber._jobs.spec``).

    Raises:
        JobError: the job's spec cannot be read.
    """
    return job._backend.spec()


def start_sandboxed(job: Job, user: str | None, sandbox: Sandbox) -> None:
    """``job.start(user=user)`` with nothing of this process: how a jobber server starts
    a tenant's job (``context.Sandbox``).

    Raises:
        JobError: as ``Job.start``; or the job's backend starts nothing on this host.
    """
    job._backend.start(user=user, cwd=None, sandbox=sandbox)


def signal(job: Job, kill: bool) -> JobStatus:
    """One step of a stop (``jobber._backends.stopping``): record it, and SIGTERM (SIGKILL
    with ``kill``) every process of the job without waiting.

    Returns:
        The status just before.

    Raises:
        JobError: the job was never started, or its processes cannot be signalled.
    """
    return job._backend.signal(kill)


def read_log(job: Job, buf: bytearray, offset: int) -> tuple[int, int]:
    """``job.tail(buf, offset)``, and where it read from.

    Returns:
        (the logical offset of the first byte copied, how many bytes were copied).
    """
    return job._backend.read_log(buf, offset)


def log_length(job: Job) -> int:
    """The job's log's logical length now (0 before it has one)."""
    return job._backend.log_length()


def start_together(jobs: list[Job], parallel: int | None = None) -> bool:
    """Start ``jobs`` as one unit if their backend can (a Slurm job array, at most
    ``parallel`` tasks at once).

    Returns:
        True if they were started; False if they cannot start together (none was started).
    """
    from jobber._backends import can_start_together
    from jobber._backends import start_together as start_backends

    backends = [job._backend for job in jobs]
    if not can_start_together(backends):
        return False
    start_backends(backends, parallel)
    return True
