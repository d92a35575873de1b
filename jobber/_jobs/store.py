"""Where one identity's jobs live: ``$JOBBER_JOBS_DIR/<cert hash>/<job id>/``.

The store hands out ids, creates job directories (``jobber._jobs.jobdir``) and lists
them; each ``Job`` it returns holds the backend its spec names (``jobber._backends``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import pwd
import re
import stat
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jobber._backends import DeferredBackend, check_lifecycle_for, check_options, default_backend, open_backend
from jobber._backends.context import check_cwd, check_env
from jobber._errors import CertificateError, JobError, JobNotFound
from jobber._files import disk_full
from jobber._jobs.history import resolve_auto
from jobber._jobs.job import Job, spec_of
from jobber._jobs.jobdir import JobDir, ensure_private_dir
from jobber._jobs.options import check_label, check_lifecycle, grows_on_retry, parse_duration
from jobber._jobs.queues import check_after, check_queue, read_settings, write_settings
from jobber._jobs.selection import JobIds, Pruned
from jobber._jobs.spec import AFTER, LIFECYCLE_DEFAULTS, LIFECYCLE_OPTIONS, OOM_GROWTH, QUEUE, RETRIES, RETRY_ON, JobSpec, check_command
from jobber._limits import Limits
from jobber._session import Session, lookup
from jobber._states import FINAL_STATES
from jobber._text import format_elapsed

__all__ = ["JobStore", "default_jobs_dir", "jobs_dir", "legacy_jobs_dir", "preferred_jobs_dir",
           "validate_job_id"]

DEFAULT_JOBS_DIR = "/tmp/jobber-jobs"
"""Root's (and so a root server's) jobs directory: not ``/tmp/jobber``, which Python started
in /tmp would import as a namespace package called ``jobber`` instead of this package."""
LEGACY_JOBS_DIR = "/tmp/jobber/jobs"
"""The default before each ordinary user got their own: still used where it is this user's
and the new default does not exist yet, so that jobs running there stay visible."""
_HASH = re.compile(r"^[0-9a-f]{64}$")
# A job id is a decimal int without leading zeros: only such names are ever listed, so a
# stray or hostile directory name can never become a job.
_ID = re.compile(r"^[1-9][0-9]{0,17}$")
_COUNTER = ".next-id"
STALE_CREATED = 86400.0
"""A job never started is pruned once this old (seconds), unless ``older_than`` says otherwise."""
log = logging.getLogger(__name__)
_RERUN_FIELDS = {"command", "limits", "env", "cwd", *LIFECYCLE_OPTIONS, "options"}


def jobs_dir() -> Path:
    """The root of all job directories: ``$JOBBER_JOBS_DIR``, else :func:`default_jobs_dir`."""
    return Path(os.environ.get("JOBBER_JOBS_DIR") or default_jobs_dir())


def default_jobs_dir() -> Path:
    """Where jobs live without ``$JOBBER_JOBS_DIR``.

    Root: ``/tmp/jobber-jobs``. An ordinary user: ``$XDG_STATE_HOME/jobber/jobs`` (default
    ``~/.local/state/jobber/jobs``), private, and kept across logouts and reboots, unlike
    /tmp (cleaned) or ``$XDG_RUNTIME_DIR`` (removed at logout, when linger would keep jobs
    running). Either way, the old default ``/tmp/jobber/jobs`` is kept while it is this
    user's and the new one does not exist yet: `jobber doctor` says how to move it.
    """
    new = preferred_jobs_dir()
    if not os.path.lexists(new) and legacy_jobs_dir() is not None:
        return Path(LEGACY_JOBS_DIR)
    return new


def preferred_jobs_dir() -> Path:
    """The default jobs directory this user gets once the old one is moved (or never was)."""
    return Path(DEFAULT_JOBS_DIR) if os.geteuid() == 0 else _user_jobs_dir()


def legacy_jobs_dir() -> Path | None:
    """``/tmp/jobber/jobs`` when it is a real directory of this user's, else None."""
    try:
        st = os.lstat(LEGACY_JOBS_DIR)
    except OSError:
        return None  # missing, or inside another user's /tmp/jobber
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        return None
    return Path(LEGACY_JOBS_DIR)


def _user_jobs_dir() -> Path:
    """``$XDG_STATE_HOME/jobber/jobs`` (if absolute, as the XDG spec says), else
    ``<home>/.local/state/jobber/jobs``.

    The home is ``$HOME`` only when that is this user's directory: ``runuser`` and ``su``
    without ``-l`` keep root's ``$HOME``, which would put the kernel's jobs in one place
    and the CLI's in another. Otherwise the passwd entry's home; a user without a usable
    home (``/nonexistent``) gets ``/tmp/jobber-<uid>/jobs``.
    """
    state = os.environ.get("XDG_STATE_HOME", "")
    if os.path.isabs(state):
        return Path(state) / "jobber" / "jobs"
    uid = os.geteuid()
    for home in (os.environ.get("HOME", ""), _passwd_home(uid)):
        try:
            if os.path.isabs(home) and home != "/" and os.stat(home).st_uid == uid:
                return Path(home) / ".local" / "state" / "jobber" / "jobs"
        except OSError:
            continue
    return Path(f"/tmp/jobber-{uid}/jobs")


def _passwd_home(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_dir
    except KeyError:
        return ""


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


class JobStore(Session):
    """The jobs of one identity, on disk: the `Session` of this host.

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
        try:
            return self._next_id(base)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):
                raise disk_full(str(base / _COUNTER), err) from err
            raise

    def _next_id(self, base: Path) -> int:
        fd = os.open(base / _COUNTER, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            raw = os.pread(fd, 32, 0).strip()
            candidate = int(raw) if raw.isdigit() else 1
            while True:
                try:
                    os.mkdir(base / str(candidate), 0o700)
                    os.chmod(base / str(candidate), 0o700)  # not whatever the umask left of it
                    break
                except FileExistsError:
                    candidate += 1  # a counter reset or lost: skip ids already used
            counter = str(candidate + 1).encode()
            os.pwrite(fd, counter, 0)  # over its own block first: a full disk cannot lose the counter
            os.ftruncate(fd, len(counter))
            return candidate
        finally:
            os.close(fd)

    def new_job(self, command: str, limits: Limits | None = None, *, env: Mapping[str, str] | None = None,
                cwd: str | os.PathLike[str] | None = None, label: str | None = None,
                timeout: float | str | None = None, log_max: int | str | None = None, retries: int = 0,
                retry_on: Sequence[str] | None = None, oom_growth: float | None = None, notify: bool = False,
                queue: str | None = None, after: Any = None, **options: object) -> Job:
        return self._new_job(command, limits, env=env, cwd=cwd, label=label, timeout=timeout, log_max=log_max,
                             retries=retries, retry_on=retry_on, oom_growth=oom_growth, notify=notify, queue=queue,
                             after=after, options=options)

    def _new_job(self, command: str, limits: Limits | None, *, env: Mapping[str, str] | None = None,
                 cwd: str | os.PathLike[str] | None = None, label: str | None = None,
                 timeout: float | str | None = None, log_max: int | str | None = None, retries: int = 0,
                 retry_on: Sequence[str] | None = None, oom_growth: float | None = None, notify: bool = False,
                 queue: str | None = None, after: Any = None, options: dict[str, object],
                 function: tuple[bytes, dict[str, Any]] | None = None) -> Job:
        """`new_job`; with ``function`` (the call and the spec's ``python`` and
        ``result_max``) a function job's (``jobber._jobs.function_jobs``)."""
        lifecycle = check_lifecycle(label=label, timeout=timeout, log_max=log_max, retries=retries,
                                    retry_on=retry_on, oom_growth=oom_growth, notify=notify,
                                    backend=options.get("backend") or default_backend())
        lifecycle.update(self._waits(queue, after))
        spec = self._spec(command, limits, env=env, cwd=cwd, options=options, lifecycle=lifecycle)
        return self._create(spec, function)

    def new_function_job(self, call: bytes, limits: Limits | None = None, *, python: str | None = None,
                         result_max: int | str | None = None, **new_job_options: Any) -> Job:
        from jobber._jobs.function_jobs import new_function_job

        return new_function_job(self, call, limits, python=python, result_max=result_max, **new_job_options)

    def _waits(self, queue: Any, after: Any) -> dict[str, Any]:
        """The spec fields of ``queue`` and ``after`` (whose jobs must exist).

        Raises:
            JobError: a malformed name, or an ``after`` job this identity does not have.
        """
        fields: dict[str, Any] = {}
        if queue is not None:
            fields[QUEUE] = check_queue(queue)
        deps = check_after(after)
        for dep, _mode in deps:
            if not (self.path / str(dep)).is_dir():
                raise JobError(f"after: there is no job {dep} (see `jobber ls`)")
        if deps:
            fields[AFTER] = deps
        return fields

    def set_queue(self, name: str, *, parallel: int | None = None, memory: int | str | None = None,
                  cpus: float | None = None, gpus: int | None = None) -> dict[str, Any]:
        settings = write_settings(self._ensure(), name, parallel=parallel, memory=memory, cpus=cpus, gpus=gpus)
        from jobber._backends.local.admission import run_pass
        from jobber._backends.local.backend import start_admitted

        run_pass(self.path, self.owner, start_admitted)  # more room may let waiting jobs start now
        return settings

    def queues(self) -> dict[str, dict[str, Any]]:
        """Every queue set here, and how many of its jobs run and wait: name -> info."""
        out: dict[str, dict[str, Any]] = {}
        try:
            names = sorted(p.stem for p in (self.path / "queues").glob("*.json"))
        except OSError:
            names = []
        for name in names:
            out[name] = {**read_settings(self.path, name), "running": 0, "waiting": 0}
        for job in self.get_jobs():
            try:
                queue = spec_of(job).queue
                state = None if queue is None else job.status().state
            except (JobNotFound, JobError):  # removed since the listing, or unreadable: not counted
                continue
            if queue is None:
                continue
            info = out.setdefault(queue, {**read_settings(self.path, queue), "running": 0, "waiting": 0})
            if state == "running":
                info["running"] += 1
            elif state == "pending":
                info["waiting"] += 1
        return out

    def _spec(self, command: str, limits: Limits | None, *, env: Mapping[str, str] | None,
              cwd: str | os.PathLike[str] | None, options: dict[str, object],
              lifecycle: dict[str, Any]) -> JobSpec:
        check_command(command)
        if limits is not None and not isinstance(limits, Limits):
            raise JobError(f"limits must be a jobber.Limits, not {type(limits).__name__}")
        spec = JobSpec(command, **lifecycle)
        limits = resolve_auto(self, limits, spec.label)  # memory="auto": from the label's runs
        spec = spec.replace(limits=limits or Limits(), options=check_options(options))
        check_lifecycle_for(spec)
        if spec.backend == "local" and limits is not None and limits.gpus:
            from jobber._backends.local.gpus import check_request

            check_request(limits.gpus)  # a GPU-less host refuses now, rather than let it wait for ever
        if env:
            spec = spec.replace(extra_env=check_env(env))
        if cwd is not None:
            spec = spec.replace(cwd=check_cwd(cwd))
        return spec

    def _create(self, spec: JobSpec, function: tuple[bytes, dict[str, Any]] | None = None) -> Job:
        jobdir = JobDir(self.path, self.owner, self.generate_job_id())
        try:
            jobdir.reserve_space()  # its final record must never need space it may not get
            if function is not None:
                from jobber._jobs.function_jobs import with_call

                spec = with_call(spec, jobdir, function)
            jobdir.write_spec(spec.replace(created_at=time.time()))
        except BaseException:
            jobdir.remove_tree()  # no half-made job is left behind
            raise
        return Job(open_backend(jobdir, self))

    def rerun(self, job: Job, **overrides: Any) -> Job:
        spec = spec_of(job)
        unknown = set(overrides) - _RERUN_FIELDS
        if unknown:
            raise JobError(f"rerun: {', '.join(sorted(unknown))} cannot be changed; change "
                           f"{', '.join(sorted(_RERUN_FIELDS))}")
        given = {name: getattr(spec, name) for name in LIFECYCLE_OPTIONS}
        if spec.retry_on == LIFECYCLE_DEFAULTS[RETRY_ON]:
            given[RETRY_ON] = None  # never chosen (or not kept): oom_growth given now may add oom-killed
        if spec.oom_growth_max:
            given[OOM_GROWTH] = (spec.oom_growth, spec.oom_growth_max)
        given.update(overrides)
        if OOM_GROWTH not in overrides and not grows_on_retry(given[RETRIES], given[RETRY_ON]):
            given[OOM_GROWTH] = None  # retries=0 (say) made the growth it had moot: dropped, not refused
        options = {**spec.options, **given.pop("options", {})}
        command, limits = given.pop("command", spec.command), given.pop("limits", spec.limits)
        env, cwd = given.pop("env", spec.extra_env), given.pop("cwd", spec.cwd)
        lifecycle = check_lifecycle(**given, backend=options.get("backend") or default_backend())
        new = self._spec(command, limits, env=env, cwd=cwd, options=options, lifecycle=lifecycle)
        function = None
        if spec.is_function and "command" not in overrides:  # the same call again (a new command makes a command job)
            from jobber._jobs.function_jobs import read_call

            function = (read_call(JobDir(self.path, self.owner, job.id)), {"python": spec.python, "result_max": spec.result_max})
        return self._create(new.replace(rerun_of=job.id), function)

    def find_job(self, ref: int | str) -> Job:
        return lookup(self, ref, hint="(see `jobber ls` for ids and labels)")

    find = find_job  # its name before the Session protocol

    def prune(self, *, older_than: float | str | None = None, states: str | Iterable[str] | None = None,
              keep_last: int | None = None, dry_run: bool = False, label: str | None = None,
              ids: Any = None) -> Pruned:
        wanted = set(FINAL_STATES if states is None else ([states] if isinstance(states, str) else states))
        if not wanted <= FINAL_STATES:
            raise JobError(f"states {sorted(wanted - FINAL_STATES)} are not final states: choose among "
                           f"{', '.join(sorted(FINAL_STATES))} (running jobs are never pruned)")
        age = None if older_than is None else parse_duration(older_than, "older_than")
        if keep_last is not None and (isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 0):
            raise JobError(f"keep_last must be a whole number >= 0, not {keep_last!r}")
        chosen = None if ids is None else JobIds.parse(ids)
        if label is not None:
            check_label(label)
        now = time.time()
        matching, kept = [], {}
        for job in self.get_jobs(label=label):
            if chosen is not None and job.id not in chosen:
                continue
            try:
                status = job.status()
            except JobNotFound:  # removed since the listing (another prune, %jobber_rm)
                continue
            if status.state == "created":
                # Never started: abandoned once older than the threshold (a day without one),
                # while a job created a moment ago is likely about to be started.
                created = spec_of(job).created_at or now
                if states is None and now - created >= (STALE_CREATED if age is None else age):
                    matching.append(job)
                else:
                    kept[job.id] = f"never started, created {format_elapsed(now - created)} ago"
                continue
            if status.state not in FINAL_STATES:
                kept[job.id] = status.state + (f": {status.note}" if status.state == "pending" and status.note else "")
                continue
            if status.state not in wanted:
                continue
            if age is not None and (status.ended_at is None or now - status.ended_at.timestamp() < age):
                continue
            matching.append(job)
        if keep_last:
            matching = matching[:-keep_last]
        removed = []
        for job in matching:
            if not dry_run:
                try:
                    job.remove()
                except JobError as err:
                    kept[job.id] = str(err)  # started again, or removed, meanwhile
                    continue
            removed.append(job.id)
        return Pruned(removed, dict(sorted(kept.items())))

    def get_job(self, job_id: int) -> Job:
        job_id = validate_job_id(job_id)
        try:
            found = stat.S_ISDIR(os.stat(self.path / str(job_id)).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            found = False
        except OSError as err:  # another user's jobs directory: say so, as get_jobs does
            raise JobError(f"cannot open {self.path / str(job_id)}: {err.strerror}") from err
        if not found:
            raise JobNotFound(job_id)
        return Job(open_backend(JobDir(self.path, self.owner, job_id), self))

    def get_jobs(self, label: str | None = None) -> list[Job]:
        # Only the directory's names are read: each job's files when it is first used.
        base = self.path
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return []
        except OSError as err:
            raise JobError(f"cannot list {base}: {err.strerror}") from err
        ids = sorted(int(n) for n in names if _ID.match(n))
        owner = self.owner
        jobs = [Job(DeferredBackend(JobDir(base, owner, job_id), self)) for job_id in ids]
        if label is not None:
            jobs = [job for job in jobs if _labelled(job, label)]
        return jobs


def _labelled(job: Job, label: str) -> bool:
    """Whether ``job`` has this label; not when its spec cannot be read (it has no label
    it could match, and one damaged job must not fail the whole listing)."""
    try:
        return job.label == label
    except JobNotFound:
        return False  # removed since the listing
    except JobError as err:
        log.debug("jobber: job %s left out of the listing of label %r: %s", job.id, label, err)
        return False
