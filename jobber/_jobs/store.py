"""Where one identity's jobs live: ``$JOBBER_JOBS_DIR/<cert hash>/<job id>/``.

The store hands out ids, creates job directories (``jobber._jobs.jobdir``) and lists
them; each ``Job`` it returns holds the backend its spec names (``jobber._backends``).
"""

from __future__ import annotations

import fcntl
import os
import re
from collections.abc import Mapping
from pathlib import Path

from jobber._backends import DeferredBackend, check_options, open_backend
from jobber._backends.context import check_cwd, check_env
from jobber._errors import CertificateError, JobError, JobNotFound
from jobber._jobs.job import Job
from jobber._jobs.jobdir import JobDir, ensure_private_dir
from jobber._limits import Limits

__all__ = ["JobStore", "jobs_dir", "validate_job_id"]

DEFAULT_JOBS_DIR = "/tmp/jobber/jobs"
_HASH = re.compile(r"^[0-9a-f]{64}$")
# A job id is a decimal int without leading zeros: only such names are ever listed, so a
# stray or hostile directory name can never become a job.
_ID = re.compile(r"^[1-9][0-9]{0,17}$")
_COUNTER = ".next-id"


def jobs_dir() -> Path:
    """The root of all job directories: ``$JOBBER_JOBS_DIR``, else /tmp/jobber/jobs."""
    return Path(os.environ.get("JOBBER_JOBS_DIR") or DEFAULT_JOBS_DIR)


def validate_job_id(job_id: object) -> int:
    """Accept only ints (or decimal strings) as job ids; anything else is not found."""
    if isinstance(job_id, bool):
        raise JobNotFound(-1, f"{job_id!r} is not a job id: ids are positive whole numbers")
    if isinstance(job_id, int):
        if job_id < 1:
            raise JobNotFound(job_id)
        return job_id
    if isinstance(job_id, str) and _ID.match(job_id.strip()):
        return int(job_id.strip())
    raise JobNotFound(-1, f"{job_id!r} is not a job id: ids are positive whole numbers (see `jobber ls`)")


class JobStore:
    """The jobs of one identity, on disk.

    Args:
        owner: the lowercase hex SHA-256 of the owner's certificate.
        root: the jobs directory (default: :func:`jobs_dir`).
    """

    def __init__(self, owner: str, root: Path | str | None = None) -> None:
        if not _HASH.match(owner):
            raise CertificateError(f"{owner!r} is not a certificate hash (64 lowercase hex digits)")
        self.owner = owner
        self.root = Path(root) if root is not None else jobs_dir()

    @property
    def path(self) -> Path:
        """This identity's directory: ``<jobs dir>/<hash>``."""
        return self.root / self.owner

    def _ensure(self) -> Path:
        ensure_private_dir(self.root)
        ensure_private_dir(self.path)
        return self.path

    def generate_job_id(self) -> int:
        """Reserve a new job id, unique even under concurrent callers.

        Ids count this identity's jobs: 1, 2, 3... short enough to type in a magic. The
        counter file is read and bumped under ``flock`` (which also serialises threads, each
        holding its own open file), and the id's directory is made with ``mkdir``, which
        fails if it exists: an id is never handed out twice, nothing is overwritten.

        Returns:
            The id; its directory exists and is empty.
        """
        base = self._ensure()
        fd = os.open(base / _COUNTER, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 32, 0).strip()
            candidate = int(raw) if raw.isdigit() else 1
            while True:
                try:
                    os.mkdir(base / str(candidate), 0o700)
                    break
                except FileExistsError:
                    candidate += 1  # a counter reset or lost: skip ids already used
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(candidate + 1).encode(), 0)
            return candidate
        finally:
            os.close(fd)

    def new_job(self, command: str, limits: Limits | None = None, *, env: Mapping[str, str] | None = None,
                cwd: str | os.PathLike[str] | None = None, **options: object) -> Job:
        """Create a job (not started yet) with a freshly reserved id.

        Args:
            command: the shell command (run as ``/bin/sh -c COMMAND``).
            limits: resource limits; None means unlimited.
            env: environment variables to set for the job, on top of what it inherits.
            cwd: its working directory (default: the caller's at start); must exist.
            **options: backend options (``backend="slurm"``, ``partition=...``).

        Returns:
            The new job, in state "created".

        Raises:
            JobError: the command is empty or not text, options the backend does not
                take, or the directory cannot be made.
        """
        if not isinstance(command, str) or not command.strip():
            raise JobError("the command is empty: give the shell command the job should run")
        if "\0" in command:
            raise JobError("the command contains a NUL byte, which no shell can run")
        if limits is not None and not isinstance(limits, Limits):
            raise JobError(f"limits must be a jobber.Limits, not {type(limits).__name__}")
        options = check_options(options)
        spec: dict[str, object] = {"command": command, "limits": (limits or Limits()).to_dict(), "options": options}
        if env:
            spec["extra_env"] = check_env(env)
        if cwd is not None:
            spec["cwd"] = check_cwd(cwd)
        jobdir = JobDir(self.path, self.owner, self.generate_job_id())
        jobdir.write_spec(spec)
        return Job(open_backend(jobdir))

    def get_job(self, job_id: int) -> Job:
        """The job with this id.

        Raises:
            JobNotFound: this identity has no such job (another identity's look the same).
        """
        job_id = validate_job_id(job_id)
        if not (self.path / str(job_id)).is_dir():
            raise JobNotFound(job_id)
        return Job(open_backend(JobDir(self.path, self.owner, job_id)))

    def get_jobs(self) -> list[Job]:
        """Every job of this identity, sorted by id (files are read lazily)."""
        base = self.path
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return []
        except OSError as err:
            raise JobError(f"cannot list {base}: {err.strerror}") from err
        ids = sorted(int(n) for n in names if _ID.match(n))
        owner = self.owner
        return [Job(DeferredBackend(JobDir(base, owner, job_id))) for job_id in ids]
