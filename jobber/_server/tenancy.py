"""Who runs a tenant's jobs on a jobber server: by default, a uid of each tenant's own.

A tenant is a client certificate (its SHA-256). Run as root, ``jobber serve`` gives each
tenant one uid from ``--uid-range`` (default: a free 65536 below 0x7FFE0000, found at each
start outside every account and /etc/subuid and /etc/subgid range; the gid is the same number),
allocated the first time the tenant starts a job, recorded in ``<state dir>/tenants.json``
(written atomically under ``flock`` of ``tenants.lock``, so two servers sharing a state
directory never hand out one uid twice), and never given to anyone else. No passwd entry
is needed, as with systemd's DynamicUser: a uid with a passwd or group entry, one that
owns a running process, or one whose tenant directory exists is skipped
(``tenant_uids.py``).

Each tenant has ``<state dir>/tenants/<uid>/`` (root's, mode 0711, so the tenant cannot
swap what is inside for a link; ``tenant_dirs.py``) holding ``home`` and ``tmp`` (the
tenant's, 0700). A job starts as that uid and gid, with no supplementary groups, in
``home``, with the clean environment and limits of ``context.Sandbox``, and, where the
host allows mount namespaces, with ``tmp`` mounted on ``/tmp`` and a ``/proc`` that
shows only its own uid's processes.

``--single-tenant`` is the operator's word that every certificate of the pool belongs to
one party: jobs then run as ``--job-user`` (root only; default nobody) or as the server's
own user, with the same clean environment but nothing kept apart between certificates.
Without it the server refuses to run tenants' jobs as one shared uid.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import stat
import threading
from pathlib import Path
from typing import Any

from jobber._backends.context import Sandbox
from jobber._errors import JobberError, JobError
from jobber._jobs.job import spec_of, start_sandboxed
from jobber._server.function_files import give_call
from jobber._server.tenant_dirs import check_state_dir, mkdir_owned, private_mounts_fail, reachable_by_others
from jobber._server.tenant_uids import UidRegistry, default_uid_range, subordinate_ranges

__all__ = ["DEFAULT_STATE_DIR", "PerTenantUids", "SingleTenant", "Tenancy",
           "parse_uid_range", "resolve_job_user", "resolve_tenancy"]

log = logging.getLogger("jobber.server")

DEFAULT_STATE_DIR = "/var/lib/jobber"
_MAX_ID = 2**32 - 2
_RANGE = re.compile(r"^\s*([0-9]{1,10})\s*-\s*([0-9]{1,10})\s*$")


class Tenancy:
    """How the server starts a tenant's job (``SingleTenant`` or ``PerTenantUids``)."""

    label = ""
    """Who runs the jobs, for the banner."""

    def setup(self) -> None:
        """Make and check what the jobs need, before the server listens (idempotent)."""

    def start(self, job: Any, owner: str) -> None:
        """Start ``job`` of the tenant ``owner`` (a certificate hash).

        Raises:
            JobError: the job did not start (why), or it is not a job of this host.
        """
        raise NotImplementedError

    def check_secret(self, path: str, what: str) -> None:
        """Refuse to serve when ``path`` (the server's key) could be read by tenants' jobs."""

    def function_jobs_refused(self) -> str | None:
        """Why this server cannot run function jobs, or None when it can."""
        return None

    def function_dir(self, owner: str, job_id: int) -> tuple[Path, int] | None:
        """Where a function job of ``owner`` finds its call and leaves its result, and the
        uid that owns it (``function_files.py``); None: in its job directory."""
        return None


def _start_local(job: Any, user: str | None, sandbox: Sandbox) -> None:
    if job.backend != "local":
        raise JobError(f"job {job.id} is a {job.backend} job: this server runs jobs on its own host only",
                       job_id=job.id)
    start_sandboxed(job, user, sandbox)


def resolve_job_user(job_user: str | None) -> tuple[str | None, str]:
    """Decide who runs the jobs of a single-tenant server: ``--job-user``, else nobody
    when root, else ourselves.

    Returns:
        (user to pass to ``Job.start``, or None for the server's user; the user's name).

    Raises:
        JobberError: the user does not exist, or switching to it needs root.
    """
    me = _own_name()
    if job_user is None:
        job_user = "nobody" if os.geteuid() == 0 else me
    try:
        entry = pwd.getpwnam(job_user)
    except KeyError:
        raise JobberError(f"--job-user {job_user!r}: no such user on this host; name an existing user") from None
    if entry.pw_uid == os.geteuid():
        return None, job_user
    if os.geteuid() != 0:
        raise JobberError(
            f"--job-user {job_user!r} needs the server to run as root (it runs as {me}); "
            "leave --job-user out to run jobs as yourself"
        )
    return job_user, job_user


def _own_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


class SingleTenant(Tenancy):
    """Every job as one user (``--single-tenant``): the operator vouches for the pool."""

    def __init__(self, job_user: str | None) -> None:
        self.user, name = resolve_job_user(job_user)
        self.label = f"{name} (--single-tenant: one user for every certificate)"

    def start(self, job: Any, owner: str) -> None:
        # HOME and the working directory: the user's home, or / when it has none.
        _start_local(job, self.user, Sandbox())

    def function_jobs_refused(self) -> str | None:
        if self.user is None:
            return None  # the jobs run as the server's user: they reach their directories
        return (f"this server runs every job as {self.user} (--single-tenant --job-user), which cannot reach a "
                "function job's files: run function jobs on a server that gives each certificate a uid of its "
                "own (the default as root), or one whose jobs run as its own user")


def parse_uid_range(text: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"LOW-HIGH"`` (inclusive) as numbers; None is the default range, found now
    (``tenant_uids.default_uid_range``).

    Raises:
        JobberError: malformed, empty, holding uid 0 or the server's own uid, or
            overlapping a subordinate range.
    """
    if text is None:
        return default_uid_range()
    if isinstance(text, tuple):
        low, high = text
    else:
        match = _RANGE.match(text)
        if not match:
            raise JobberError(f"--uid-range {text!r}: write LOW-HIGH, e.g. 2147287040-2147352575")
        low, high = int(match.group(1)), int(match.group(2))
    if not 0 < low <= high <= _MAX_ID:
        raise JobberError(f"--uid-range {low}-{high}: give 0 < LOW <= HIGH <= {_MAX_ID}, e.g. 2147287040-2147352575")
    if low <= os.geteuid() <= high:
        raise JobberError(f"--uid-range {low}-{high} holds the server's own uid {os.geteuid()}: choose another range")
    overlap = _subordinate_overlap(low, high)
    if overlap:
        raise JobberError(f"--uid-range {low}-{high} overlaps {overlap}: that user's containers could run "
                          "processes as a tenant's uid; choose a range outside every /etc/subuid and /etc/subgid "
                          "entry")
    return low, high


def _subordinate_overlap(low: int, high: int, files: tuple[str, ...] = ("/etc/subuid", "/etc/subgid")) -> str | None:
    """The first ``/etc/subuid`` or ``/etc/subgid`` entry (``name:start:count``) that
    shares an id with ``low``-``high``, or None."""
    for path, name, first, last in subordinate_ranges(files):
        if first <= high and low <= last:
            return f"{path}'s {name}:{first}:{last - first + 1} ({first}-{last})"
    return None


def resolve_tenancy(*, single_tenant: bool = False, job_user: str | None = None,
                    uid_range: str | tuple[int, int] | None = None, state_dir: str | os.PathLike[str] | None = None,
                    private_tmp: bool = True) -> Tenancy:
    """The tenancy ``jobber serve``'s options ask for, or a refusal that says what to pass.

    Raises:
        JobberError: tenants' jobs would run as one shared uid (not root, or
            ``--job-user``) without ``--single-tenant``, or the options contradict.
    """
    if single_tenant:
        if uid_range is not None or state_dir is not None:
            raise JobberError("--single-tenant runs every job as one user; --uid-range and --state-dir give each "
                              "certificate a uid of its own: choose one of the two")
        return SingleTenant(job_user)
    if job_user is not None:
        raise JobberError(
            f"--job-user {job_user} would run every tenant's jobs as that one user, so each tenant's jobs could "
            "read, trace and kill the others'. Leave --job-user out to give each certificate a uid of its own "
            "(the default when the server runs as root), or pass --single-tenant as well if every certificate "
            "of the pool belongs to one party")
    if os.geteuid() != 0:
        me = _own_name()
        raise JobberError(
            f"jobber serve runs as {me} (uid {os.geteuid()}), not root, so it could only run every tenant's "
            f"jobs as {me}: they could read, trace and kill each other's jobs and read this server's files "
            "(its TLS key, every job's log). Run it as root (each certificate then gets a uid of its own from "
            "--uid-range, by default a free range found at start), or pass --single-tenant if "
            "every certificate of the pool belongs to one party (jobs then run as you)")
    low, high = parse_uid_range(uid_range)
    return PerTenantUids(Path(os.path.abspath(state_dir or DEFAULT_STATE_DIR)), low, high, private_tmp=private_tmp)


class PerTenantUids(Tenancy):
    """A uid of its own for each tenant, its home and /tmp under ``state_dir``.

    Args:
        state_dir: where the registry (``tenants.json``) and ``tenants/<uid>/`` live.
        low, high: the uid range (inclusive).
        private_tmp: use a mount namespace per job (private /tmp, /proc hidepid=2) when
            the host allows it.
    """

    def __init__(self, state_dir: Path, low: int, high: int, *, private_tmp: bool = True) -> None:
        self.state_dir = state_dir
        self.tenants_dir = state_dir / "tenants"
        self.low, self.high = low, high
        self.want_private_tmp = private_tmp
        self.private_tmp = False
        self.label = f"a uid of each tenant's own from {low}-{high} (homes in {self.tenants_dir})"
        self._uids = UidRegistry(state_dir, self.tenants_dir, low, high)
        self._mutex = threading.Lock()
        self._ready = False

    def setup(self) -> None:
        """Make the state directory (0711) and ``tenants/`` (0711), check that tenants'
        jobs can reach their homes, and find out whether mount namespaces work here.

        Raises:
            JobberError: the state directory is unusable (saying how to fix it).
        """
        with self._mutex:
            if self._ready:
                return
            check_state_dir(self.state_dir, self.want_private_tmp, DEFAULT_STATE_DIR)
            self._uids.check()  # a user added since may hold a recorded tenant's uid
            tenants = mkdir_owned(self.tenants_dir, 0, 0, 0o711, enforce_mode=True)
            self.private_tmp = False
            if self.want_private_tmp:
                why = private_mounts_fail(str(tenants))
                if why is None:
                    self.private_tmp = True
                else:
                    log.warning("jobs share this host's /tmp and see every process in /proc: this host does not "
                                "let jobber give each job a mount namespace (%s)", why)
            self._ready = True

    def check_secret(self, path: str, what: str) -> None:
        """Refuse a key that tenants' jobs could read: readable by others (or by a group of
        the uid range) in a directory everyone can reach.

        Raises:
            JobberError: saying which ``chmod`` fixes it.
        """
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError:
            return  # loading it will say why
        readable = st.st_mode & 0o004 or (st.st_mode & 0o040 and self.low <= st.st_gid <= self.high)
        if not readable or not reachable_by_others(os.path.dirname(path)):
            return
        raise JobberError(f"{what} {path} can be read by other users (mode {stat.S_IMODE(st.st_mode):o}), and "
                          f"tenants' jobs run as other users: run `chmod 600 {path}`")

    def uid_of(self, owner: str) -> int:
        """The tenant's uid: recorded, or allocated now and recorded (``tenant_uids``).

        Raises:
            JobberError: the state directory is unusable. JobError: the range is used up,
                or the registry is unreadable or corrupt.
        """
        self.setup()
        return self._uids.uid_of(owner)

    def dirs(self, uid: int) -> tuple[str, str]:
        """The tenant's home and tmp, made if missing (``tenants/<uid>`` is root's, 0711)."""
        base = mkdir_owned(self.tenants_dir / str(uid), 0, 0, 0o711, enforce_mode=True)
        home = mkdir_owned(base / "home", uid, uid, 0o700)
        tmp = mkdir_owned(base / "tmp", uid, uid, 0o700)
        return str(home), str(tmp)

    def function_dir(self, owner: str, job_id: int) -> tuple[Path, int] | None:
        uid = self.uid_of(owner)
        base = mkdir_owned(self.tenants_dir / str(uid), 0, 0, 0o711, enforce_mode=True)
        # root's: a tenant cannot rename or replace a job's function directory in it
        functions = mkdir_owned(base / "functions", 0, 0, 0o711, enforce_mode=True)
        return functions / str(job_id), uid

    def start(self, job: Any, owner: str) -> None:
        uid = self.uid_of(owner)
        home, tmp = self.dirs(uid)
        function_dir = None
        if spec_of(job).is_function and job.status().state == "created":  # never under a running job
            where = self.function_dir(owner, job.id)
            assert where is not None
            function_dir = str(where[0])
            give_call(job.path, where[0], uid)
        _start_local(job, f"#{uid}:{uid}", Sandbox(home=home, tmpdir=tmp, private_tmp=self.private_tmp,
                                                    hide_pids=self.private_tmp, function_dir=function_dir))


