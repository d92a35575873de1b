"""Where jobs live on disk: ``$JOBBER_JOBS_DIR/<cert hash>/<job id>/``.

The default jobs directory sits under /tmp, where anyone may have created a path first,
so every directory jobber owns is checked after it is made or found: a real directory
(not a symlink), owned by this user, not writable by anyone else. Below such a directory
nobody else can rename or replace anything, so only the top needs the checks.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import stat
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from jobber._errors import CertificateError, JobError, JobNotFound
from jobber._limits import Limits

if TYPE_CHECKING:
    from jobber._jobs.job import Job

__all__ = ["JobStore", "jobs_dir", "ensure_private_dir", "write_atomic"]

DEFAULT_JOBS_DIR = "/tmp/jobber/jobs"
_HASH = re.compile(r"^[0-9a-f]{64}$")
# A job id is a decimal int without leading zeros: only such names are ever listed, so a
# stray or hostile directory name can never become a job.
_ID = re.compile(r"^[1-9][0-9]{0,17}$")
_COUNTER = ".next-id"
BACKENDS = ("local", "slurm")


def jobs_dir() -> Path:
    """The root of all job directories: ``$JOBBER_JOBS_DIR``, else /tmp/jobber/jobs."""
    return Path(os.environ.get("JOBBER_JOBS_DIR") or DEFAULT_JOBS_DIR)


def ensure_private_dir(path: Path, *, uid: int | None = None) -> Path:
    """Create ``path`` (and missing parents) with mode 0700, or check the existing one.

    Args:
        path: the directory.
        uid: the owner it must have (default: this process's effective uid).

    Returns:
        The path.

    Raises:
        JobError: a component is a symlink, owned by another user, or writable by others.
    """
    uid = os.geteuid() if uid is None else uid
    path = Path(os.path.abspath(path))
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    # Existing ancestors only need to be real directories; the ones we create are ours.
    for created in reversed(missing):
        try:
            os.mkdir(created, 0o700)
        except FileExistsError:
            pass  # somebody raced us: it is checked below like any existing directory
        except OSError as err:
            raise JobError(
                f"cannot create the jobs directory {created}: {err.strerror}; set JOBBER_JOBS_DIR "
                "to a directory you own"
            ) from err
    _check_private(path, uid)
    # Every ancestor must be owned by this user or by root, and not be replaceable by
    # others: a hostile user who made /tmp/jobber could otherwise swap `jobs` inside it.
    for parent in path.parents:
        st = os.lstat(parent)
        if st.st_uid not in (uid, 0):
            raise JobError(
                f"{parent} is owned by uid {st.st_uid}, not by uid {uid} (this user) or root: "
                "remove it, or set JOBBER_JOBS_DIR to a directory you own"
            )
        if st.st_uid == uid and stat.S_ISLNK(st.st_mode):
            raise JobError(f"{parent} is a symlink: refusing to keep jobs beneath it; set JOBBER_JOBS_DIR")
        if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            raise JobError(
                f"{parent} is writable by everyone and not sticky, so another user could replace "
                "the jobs directory beneath it: set JOBBER_JOBS_DIR elsewhere"
            )
    return path


def _check_private(path: Path, uid: int) -> None:
    try:
        st = os.lstat(path)
    except OSError as err:
        raise JobError(f"cannot inspect {path}: {err.strerror}") from err
    fix = "remove it, or set JOBBER_JOBS_DIR to a directory you own"
    if stat.S_ISLNK(st.st_mode):
        raise JobError(f"{path} is a symlink (someone may be hijacking the jobs directory): {fix}")
    if not stat.S_ISDIR(st.st_mode):
        raise JobError(f"{path} exists but is not a directory: {fix}")
    if st.st_uid != uid:
        raise JobError(f"{path} is owned by uid {st.st_uid}, not by uid {uid} (this user): {fix}")
    if st.st_mode & 0o022:
        raise JobError(
            f"{path} is writable by other users (mode {stat.S_IMODE(st.st_mode):o}): "
            f"run `chmod go-w {path}` or {fix}"
        )


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, whole."""
    # Unique per thread too: a widget's thread and the notebook may write at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


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

    def new_job(self, command: str, limits: Limits | None = None, **options: object) -> Job:
        """Create a job (not started yet) with a freshly reserved id.

        Args:
            command: the shell command (run as ``/bin/sh -c COMMAND``).
            limits: resource limits; None means unlimited.
            **options: backend options (``backend="slurm"``, ``partition=...``).

        Returns:
            The new job, in state "created".

        Raises:
            JobError: the command is empty or not text, or the directory cannot be made.
        """
        from jobber._jobs.job import Job

        if not isinstance(command, str) or not command.strip():
            raise JobError("the command is empty: give the shell command the job should run")
        if "\0" in command:
            raise JobError("the command contains a NUL byte, which no shell can run")
        if limits is not None and not isinstance(limits, Limits):
            raise JobError(f"limits must be a jobber.Limits, not {type(limits).__name__}")
        backend = options.setdefault("backend", os.environ.get("JOBBER_BACKEND") or "local")
        if backend not in BACKENDS:
            raise JobError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)} (or set JOBBER_BACKEND)")
        if backend != "slurm" and set(options) - {"backend"}:
            names = ", ".join(sorted(set(options) - {"backend"}))
            raise JobError(f"{names}: only Slurm jobs take these; choose the Slurm backend (--backend slurm, backend=\"slurm\")")
        if backend == "slurm":
            from jobber._backends.slurm.backend import validate_options

            validate_options(options)  # refuse bad Slurm options now, not at start()
        job_id = self.generate_job_id()
        job = Job(self, job_id)
        spec = {"command": command, "limits": (limits or Limits()).to_dict(), "options": options}
        write_atomic(job.path / "spec.json", json.dumps(spec).encode())
        return job

    def get_job(self, job_id: int) -> Job:
        """The job with this id.

        Raises:
            JobNotFound: this identity has no such job (another identity's look the same).
        """
        from jobber._jobs.job import Job

        job_id = validate_job_id(job_id)
        path = self.path / str(job_id)
        if not path.is_dir():
            raise JobNotFound(job_id)
        return Job(self, job_id)

    def get_jobs(self) -> list[Job]:
        """Every job of this identity, sorted by id (files are read lazily)."""
        from jobber._jobs.job import Job

        try:
            names = os.listdir(self.path)
        except FileNotFoundError:
            return []
        except OSError as err:
            raise JobError(f"cannot list {self.path}: {err.strerror}") from err
        return [Job(self, job_id) for job_id in sorted(int(n) for n in names if _ID.match(n))]
