"""Where a job runs, decided in one place.

A job made on this host names its backend in ``options["backend"]`` ("local" unless
``new_job(backend=...)`` or ``$JOBBER_BACKEND`` says otherwise); ``open_backend`` reads
it back, so every process that opens the job runs it the same way. A job of a jobber
server gets its ``RemoteBackend`` from the session (``jobber.connect``) instead.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from jobber._errors import JobError

if TYPE_CHECKING:
    from jobber._backends.base import Backend
    from jobber._jobs.jobdir import JobDir
    from jobber._jobs.spec import JobSpec

__all__ = ["NAMES", "can_start_together", "check_lifecycle_for", "check_options", "default_backend", "open_backend",
           "start_together"]

NAMES = ("local", "slurm")
"""The backends a job made on this host can name."""


def default_backend() -> str:
    """The backend of a job that names none: ``$JOBBER_BACKEND`` when set (and not empty),
    else "local". Not checked here: ``check_options`` refuses an unknown one."""
    return os.environ.get("JOBBER_BACKEND") or "local"


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """Fill in the backend and check the options of a new job, before it is created.

    Returns:
        The options to record in the job's spec.

    Raises:
        JobError: an unknown backend, or options that backend does not take.
    """
    options = dict(options)
    backend = options.setdefault("backend", default_backend())
    if backend not in NAMES:
        raise JobError(f"unknown backend {backend!r}: use one of {', '.join(NAMES)} (or set JOBBER_BACKEND)")
    if backend == "slurm":
        from jobber._backends.slurm.backend import validate_options

        validate_options(options)  # refuse bad Slurm options now, not at start()
    elif set(options) - {"backend"}:
        names = ", ".join(sorted(set(options) - {"backend"}))
        raise JobError(f"{names}: only Slurm jobs take these; choose the Slurm backend (--backend slurm, backend=\"slurm\")")
    return options


def check_lifecycle_for(spec: JobSpec) -> None:
    """Refuse the lifecycle options the job's backend cannot honour (its options checked).

    Slurm maps ``timeout`` to ``--time`` and takes ``label``; the rest it cannot do.

    Raises:
        JobError: naming the option and why.
    """
    if spec.backend != "slurm":
        return
    # Not imported above: the supervisor island imports this package, and must not pay for the spec.
    from jobber._jobs.spec import LOG_MAX, OOM_GROWTH, QUEUE, RETRIES

    # What a Slurm job cannot have, and why: Slurm writes the log itself, and re-queues a job
    # only when a node fails (its --requeue), never after the job's own failure.
    not_on_slurm = {
        RETRIES: "Slurm re-queues a job only when its node fails; jobber's retries run on this host's backend",
        OOM_GROWTH: "oom_growth grows the memory of a retried attempt, and Slurm jobs are not retried",
        LOG_MAX: "Slurm's own slurmstepd writes a Slurm job's log, so jobber cannot cap it",
        QUEUE: "Slurm's partitions are its queues (partition=...), and Slurm admits its jobs itself",
    }
    for name, why in not_on_slurm.items():
        if getattr(spec, name):
            raise JobError(f"{name} is not available for Slurm jobs: {why}. Drop {name}, or run the job "
                           "on this host (backend=\"local\")")


def can_start_together(backends: list[Any]) -> bool:
    """Can these jobs start as one unit? Slurm jobs of this host can: one job array."""
    from jobber._backends.slurm.backend import SlurmBackend

    return bool(backends) and all(type(backend) is SlurmBackend for backend in backends)


def start_together(backends: list[Any], parallel: int | None = None) -> None:
    """Start jobs that :func:`can_start_together` as one Slurm job array, at most
    ``parallel`` tasks at once (see ``jobber._backends.slurm.array``)."""
    from jobber._backends.slurm.array import start_array

    start_array(backends, parallel)


def open_backend(jobdir: JobDir, session: Any = None) -> Backend:
    """The backend that runs the job in ``jobdir``, as its spec names it.

    Args:
        jobdir: the job's directory.
        session: the store that holds it (re-runs are made there).
    """
    if jobdir.read_spec().backend == "slurm":
        from jobber._backends.slurm.backend import SlurmBackend

        return SlurmBackend(jobdir, session)
    from jobber._backends.local.backend import LocalBackend

    return LocalBackend(jobdir, session)


class DeferredBackend:
    """A job of a listing: its backend is chosen on first use, not when listed.

    ``get_jobs`` over 10,000 jobs must not read 10,000 specs; identity (``key``, ``path``)
    needs none, and the first verb opens the real backend through ``open_backend``.
    """

    def __init__(self, jobdir: JobDir, session: Any = None) -> None:
        self._dir = jobdir
        self.session = session
        self._real: Backend | None = None
        self.job_id = jobdir.job_id
        self.owner = jobdir.owner

    @property
    def path(self) -> Any:
        return self._dir.path

    def _backend(self) -> Backend:
        if self._real is None:
            self._real = open_backend(self._dir, self.session)
        return self._real

    @property
    def name(self) -> str:
        return self._backend().name

    def key(self) -> tuple[Any, ...]:
        return (self._dir.path, self.job_id)

    def where(self) -> str:
        return ""

    def spec(self) -> JobSpec:
        return self._dir.read_spec()

    def start(self, *, user: str | None, cwd: str | None, sandbox: Any = None) -> None:
        self._backend().start(user=user, cwd=cwd, sandbox=sandbox)

    def signal(self, kill: bool) -> Any:
        return self._backend().signal(kill)

    def read_log(self, buf: bytearray, offset: int) -> tuple[int, int]:
        return self._backend().read_log(buf, offset)

    def log_length(self) -> int:
        return self._backend().log_length()

    def status(self) -> Any:
        return self._backend().status()

    def stop(self, grace: float) -> Any:
        return self._backend().stop(grace)

    def wait(self, timeout: float | None) -> Any:
        return self._backend().wait(timeout)

    def tail(self, buf: Any, offset: int) -> int:
        return self._backend().tail(buf, offset)

    def follow(self, offset: int, heartbeat: float | None) -> Any:
        return self._backend().follow(offset, heartbeat)

    def remove(self) -> None:
        self._backend().remove()

    def attempts(self) -> Any:
        return self._backend().attempts()

    def read_result(self) -> Any:
        return self._backend().read_result()

    def result_meta(self) -> Any:
        return self._backend().result_meta()
