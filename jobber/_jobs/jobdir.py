"""One job's directory, and the checks every directory jobber owns must pass.

    <jobs dir>/<owner hash>/<job id>/
      spec.json         command, limits, options; cwd, env and user once started
      started           claimed by the one start() that wins (O_EXCL), whatever the backend
      status.json       written atomically: running, then the outcome
      stop-requested    written by stop(), so the outcome reads "stopped"
      log               stdout and stderr
      .reserve          space set aside for the final status.json (a full disk), until it is written
    and what each backend keeps beside them (local: confinement.json, pid; Slurm:
    slurm-id, script).

The default jobs directory sits under /tmp, where anyone may have created a path first,
so every directory jobber owns is checked after it is made or found: a real directory
(not a symlink), owned by this user, not writable by anyone else. Below such a directory
nobody else can rename or replace anything, so only the top needs the checks.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from jobber._errors import JobError, LimitError
from jobber._files import RESERVE, free_reserve, read_json, read_regular, reserve_space, write_atomic
from jobber._jobs.spec import JobSpec
from jobber._jobs.status import check_record
from jobber._states import FINAL_STATES

__all__ = ["JobDir", "ensure_private_dir"]


class JobDir:
    """The files of one job, as every backend keeps them.

    Args:
        owner_dir: ``<jobs dir>/<owner hash>``.
        owner: the owner's certificate hash.
        job_id: the job's id (its directory's name).
    """

    def __init__(self, owner_dir: Path, owner: str, job_id: int) -> None:
        self.owner = owner
        self.job_id = job_id
        self._owner_dir = owner_dir
        self._path: Path | None = None
        self._spec: dict[str, Any] | None = None
        self._job_spec: JobSpec | None = None

    @property
    def path(self) -> Path:
        """The job's directory (made on first use: a listing of 10,000 jobs needs none)."""
        if self._path is None:
            self._path = self._owner_dir / str(self.job_id)
        return self._path

    @property
    def log(self) -> Path:
        """The log file (stdout and stderr together)."""
        return self.path / "log"

    def spec(self) -> dict[str, Any]:
        """``spec.json`` as its JSON object (read once, then cached); :meth:`read_spec` types it."""
        if self._spec is None:
            spec = self.read("spec.json")
            if spec is None:
                return {"command": "", "limits": {}, "options": {}}
            self._spec = spec
        return self._spec

    def read_spec(self) -> JobSpec:
        """What the job is (``spec.json``, read once, then cached); an empty job while the
        directory has no spec yet.

        Raises:
            JobError: ``spec.json`` cannot be read or parsed, or a field has the wrong type.
            LimitError: its limits are not limits.
        """
        if self._job_spec is None:
            raw = self.spec()
            try:
                spec = JobSpec.from_json(raw)
            except LimitError:
                raise
            except JobError as err:  # a field of the wrong type: say which file
                raise JobError(f"job {self.job_id}: unreadable spec.json {self.path / 'spec.json'}: {err}",
                               job_id=self.job_id) from err
            if self._spec is None:
                return spec  # no spec.json (yet): nothing to keep
            self._job_spec = spec
        return self._job_spec

    def write_spec(self, spec: JobSpec | dict[str, Any]) -> None:
        """Replace ``spec.json`` (at creation, and with the run context at start)."""
        raw = spec.to_json() if isinstance(spec, JobSpec) else spec
        self.write("spec.json", raw)
        self._spec = raw
        self._job_spec = spec if isinstance(spec, JobSpec) else None

    def read(self, name: str) -> dict[str, Any] | None:
        """A JSON file of the job, or None when it does not exist.

        Raises:
            JobError: it exists but cannot be read or parsed (or, a status file, holds
                fields of the wrong types: ``check_record``).
        """
        try:
            data = read_json(self.path / name, name)
            if data is not None and name.endswith("status.json"):
                try:
                    check_record(data)
                except JobError as err:
                    raise JobError(f"unreadable {name} {self.path / name}: {err}") from err
            return data
        except JobError as err:
            raise JobError(f"job {self.job_id}: {err}", job_id=self.job_id) from err

    def write(self, name: str, data: dict[str, Any]) -> None:
        """Replace a JSON file of the job atomically.

        A final ``status.json`` (an ended state) may use the job's reserve on a full
        disk, and gives the reserve back; any other write leaves the reserve alone, so
        that a job queued on a full disk still has it for its ending.

        Raises:
            DiskFull: the filesystem is full (a ``JobError`` naming it).
        """
        final = name == "status.json" and data.get("state") in FINAL_STATES
        try:
            write_atomic(self.path / name, json.dumps(data).encode(), reserve=self.path / RESERVE if final else None)
        except JobError as err:
            err.job_id = self.job_id
            raise
        if final:
            free_reserve(self.path)

    def reserve_space(self) -> None:
        """Set aside the space the job's final status needs (when the job is made).

        Raises:
            DiskFull: not even that is left (a ``JobError`` naming the filesystem).
        """
        reserve_space(self.path)

    def exists(self, name: str) -> bool:
        """Whether the job has this file."""
        return os.path.lexists(self.path / name)

    def remove(self, name: str) -> None:
        """Remove a file of the job if it is there."""
        try:
            os.unlink(self.path / name)
        except FileNotFoundError:
            pass

    def claim_start(self) -> None:
        """Win the one start of this job (O_EXCL), whichever backend runs it.

        Raises:
            JobError: already started, or the job's directory is gone.
        """
        try:
            claim = os.open(self.path / "started", os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            raise JobError(f"job {self.job_id} was already started: create a new job to run it again",
                           job_id=self.job_id) from None
        except FileNotFoundError:
            raise JobError(f"job {self.job_id} no longer exists (its directory {self.path} is gone)",
                           job_id=self.job_id) from None
        try:
            os.write(claim, f"{os.getpid()} {_start_ticks()}\n".encode())  # who claimed it: see claim()
        finally:
            os.close(claim)

    def mark_launching(self) -> None:
        """Note in the claim that the launcher is being started (from here on a dead
        claimer may have left a launcher on its way, which will record the job)."""
        write_atomic(self.path / "started", f"{os.getpid()} {_start_ticks()} launching\n".encode())

    def launcher(self) -> tuple[int, int | None] | None:
        """The launcher that took this attempt's gate (``launched``): (pid, start), or None."""
        try:
            words = read_regular(self.path / "launched", 100).split()
            return int(words[0]), (int(words[1]) if words[1:2] and words[1].isdigit() else None)
        except (OSError, IndexError, ValueError):  # (OSError: a FIFO or a link, not jobber's)
            return None

    def claim(self) -> tuple[int, int | None, bool, float] | None:
        """The start claim: (claimer pid, its start time, launching?, age in s), or None."""
        try:
            with open(self.path / "started", "rb") as f:
                words = f.read(200).split()
                age = time.time() - os.fstat(f.fileno()).st_mtime
        except FileNotFoundError:
            return None
        try:
            return int(words[0]), int(words[1]) if words[1:2] else None, b"launching" in words, age
        except (IndexError, ValueError):
            return 0, None, True, age  # an old or foreign claim: trust only its age

    def release_start(self) -> None:
        """Give the start claim back: the start failed before anything ran."""
        self.remove("started")

    def remove_tree(self) -> None:
        """Remove the whole job directory: renamed aside first (atomic: no process sees
        half a job), then deleted without following any link in it."""
        aside = self._owner_dir / f".removed-{self.job_id}-{os.getpid()}-{time.monotonic_ns()}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return  # removed by someone else meanwhile
        except OSError as err:
            raise JobError(f"job {self.job_id}: cannot remove {self.path}: {err.strerror}", job_id=self.job_id) from err
        shutil.rmtree(aside, ignore_errors=True)  # fd-based on Linux: safe against symlink races

    def request_stop(self) -> None:
        """Record that a stop was asked for, so the outcome reads "stopped"."""
        write_atomic(self.path / "stop-requested", f"{time.time()}\n".encode())


_own_start: tuple[int, int | None] | None = None  # (pid, start ticks): read once per process


def _start_ticks() -> int | None:
    """This process's start time in clock ticks since boot (tells a reused pid apart).

    Read once per process (a fork reads its own): /proc/self/stat of a big kernel takes
    a millisecond, twice per start."""
    global _own_start
    pid = os.getpid()
    if _own_start is None or _own_start[0] != pid:
        try:
            with open("/proc/self/stat", "rb") as f:
                data = f.read()
            _own_start = (pid, int(data[data.rindex(b")") + 2 :].split()[19]))
        except (OSError, ValueError, IndexError):
            return None
    return _own_start[1]


def ensure_private_dir(path: Path | str, *, uid: int | None = None) -> Path:
    """Create ``path`` (and missing parents) with mode 0700, or check the existing one.

    The path is walked from ``/`` one component at a time, relative to the directory
    file descriptor of the previous one and with O_NOFOLLOW (as systemd's ``chase()``
    does), and every check is made before anything is created below a component: a link
    or a hostile directory planted anywhere on the way is refused with nothing made
    through it.

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
    names = path.parts[1:]
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        here = Path("/")
        _check_ancestor(here, os.fstat(fd), uid)
        for index, name in enumerate(names):
            here = here / name
            last = index == len(names) - 1
            made = False
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                try:
                    os.mkdir(name, 0o700, dir_fd=fd)
                    made = True
                except FileExistsError:
                    pass  # somebody raced us: it is checked below like any existing directory
                except OSError as err:
                    raise JobError(f"cannot create the jobs directory {here}: {err.strerror}; set JOBBER_JOBS_DIR "
                                   "to a directory you own") from err
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            follow = stat.S_ISLNK(st.st_mode) and not last and st.st_uid == 0 != uid  # e.g. /var/run -> /run
            if last:
                _check_private(here, st, uid)
            elif stat.S_ISLNK(st.st_mode) and not follow:
                raise JobError(f"{here} is a symlink: refusing to keep jobs beneath it; set JOBBER_JOBS_DIR")
            try:
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW),
                                dir_fd=fd)
            except OSError as err:
                raise JobError(f"cannot open {here}: {err.strerror}; set JOBBER_JOBS_DIR to a directory you own") from err
            os.close(fd)
            fd = child
            if made:
                os.fchmod(fd, 0o700)  # not whatever the umask left of it
            if not last:
                _check_ancestor(here, os.fstat(fd), uid)
    finally:
        os.close(fd)
    return path


def _check_ancestor(path: Path, st: os.stat_result, uid: int) -> None:
    """An ancestor must be this user's or root's, and not replaceable by others: a hostile
    user who made /tmp/jobber could otherwise swap ``jobs`` inside it."""
    if st.st_uid not in (uid, 0):
        raise JobError(
            f"{path} is owned by uid {st.st_uid}, not by uid {uid} (this user) or root: "
            "remove it, or set JOBBER_JOBS_DIR to a directory you own"
        )
    if st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        raise JobError(
            f"{path} is writable by everyone and not sticky, so another user could replace "
            "the jobs directory beneath it: set JOBBER_JOBS_DIR elsewhere"
        )


def _check_private(path: Path, st: os.stat_result, uid: int) -> None:
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
