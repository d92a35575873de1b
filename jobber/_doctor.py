"""``jobber doctor``: what confines jobs on this host, for this user, and how to get more.

Nothing here is guessed from the host's layout alone: the limits are checked by making
the cgroup a job would get (with every limit set) and removing it again, so the answer
is the one the next job will meet.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobber._backends.context import DEFAULT_NOFILE, job_nofile
from jobber._backends.local import isolation
from jobber._backends.local.launcher_build import launcher_command
from jobber._errors import JobberError
from jobber._jobs import store
from jobber._jobs.store import jobs_dir
from jobber._limits import Limits

__all__ = ["Check", "Diagnosis", "diagnose"]

_PROBE_LIMITS = Limits(cpu=1, memory="1G", pids=10_000, io_read_bps="1G", io_write_bps="1G")
_HASH = re.compile(r"^[0-9a-f]{64}$")
_LIMIT_NAMES = {"cpu": "cpu", "memory": "memory", "pids": "pids", "io": "io",
                "io_read_bps": "io", "io_write_bps": "io"}


@dataclass(frozen=True)
class Check:
    """One finding: ``ok`` or not, what was found, and the fix when it is not ok."""

    name: str
    ok: bool
    found: str
    fix: str = ""


@dataclass(frozen=True)
class Diagnosis:
    """What ``jobber.doctor()`` found.

    Attributes:
        isolation: what would confine the next job: "cgroup-v2", "cgroup-v1" or "none".
        confined: True when every limit (cpu, memory, pids, io) would be enforced.
        checks: the findings, in the order ``jobber doctor`` prints them.
        job_nofile: the ``RLIMIT_NOFILE`` (soft, hard) a sandboxed job started from this
            process gets (a server's jobs): jobber's default, or lower where this
            process's hard limit is lower.
    """

    isolation: str
    confined: bool
    checks: list[Check] = field(default_factory=list)
    job_nofile: tuple[int, int] = DEFAULT_NOFILE

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, as ``jobber doctor --json`` prints it."""
        return asdict(self)

    def __str__(self) -> str:
        width = max(len(check.name) for check in self.checks)
        lines = []
        for check in self.checks:
            lines.append(f"{'ok ' if check.ok else 'no '} {check.name:<{width}}  {check.found}")
            if check.fix:
                lines.append(f"    {'':<{width}}  fix: {check.fix}")
        verdict = ("jobs here are fully confined" if self.confined else
                   "jobs here run, but not every limit is enforced: see the fixes above")
        return "\n".join(lines + ["", verdict])


def diagnose(root: str | os.PathLike[str] | None = None) -> Diagnosis:
    """Look at this host and user as the next job will meet them.

    Args:
        root: the jobber root whose pool and identity to check (default: $JOBBER_ROOT,
            else ~/.jobber).

    Returns:
        The diagnosis; ``confined`` is True when every limit would be enforced.
    """
    checks = [Check("cgroup layout", True, _layout())]
    name, confined, more = _confinement()
    checks += more
    checks.append(_launcher())
    nofile = job_nofile()
    checks.append(_descriptors(nofile))
    checks.append(_jobs_dir())
    checks += _old_jobs_dir()
    checks += _identity(root)
    return Diagnosis(isolation=name, confined=confined, checks=checks, job_nofile=nofile)


def _layout() -> str:
    layout = isolation.detect()
    if layout == "cgroup-v2":
        from jobber._backends.local import cgroup_v2

        return f"cgroup v2 (unified) at {cgroup_v2.mountpoint()}"
    if layout == "cgroup-v1":
        from jobber._backends.local import cgroup_v1

        return f"cgroup v1 controllers: {', '.join(sorted(cgroup_v1.mounts()))}"
    return "no cgroup hierarchy is mounted"


def _confinement() -> tuple[str, bool, list[Check]]:
    """Make the cgroup the next job would get, with every limit, and read what held."""
    try:
        driver, reason = isolation.choose()
    except JobberError as err:
        return "none", False, [Check("isolation", False, str(err), "unset JOBBER_ISOLATION or fix its value")]
    probe_dir = str(jobs_dir()) if os.path.isdir(jobs_dir()) else "/tmp"
    if reason is not None:
        fix = _fix_for_none(reason)
        checks = [Check("isolation", False, f"none: {reason}", fix)]
        checks += [Check(f"{limit} limit", False, "not enforced without a cgroup", fix)
                   for limit in ("cpu", "memory", "pids", "io")]
        return "none", False, checks + _gpu_fence(_unconfined_gpu_record())
    try:
        record = isolation.prepare("doctor", os.getpid(), _PROBE_LIMITS, probe_dir)
    except JobberError as err:
        return driver.NAME, False, [Check("isolation", False, f"{driver.NAME}, but a job's cgroup cannot be made: {err}",
                                          "run `jobber doctor` as the user who starts jobs; see the message")]
    try:
        isolation.open_cgroup(record).remove()
    except OSError:
        pass
    where = record["dirs"].get("unified") or next(iter(record["dirs"].values()), "")
    found = f"{driver.NAME}, jobs go under {os.path.dirname(os.path.dirname(os.path.dirname(where)))}"
    if record.get("delegated_by"):
        found += f" ({record['delegated_by']})"
    checks = [Check("isolation", True, found)]
    why: dict[str, str] = {}
    fixes: dict[str, str] = {}
    for name in record.get("unenforced", []):
        limit = _LIMIT_NAMES.get(name, name)
        why.setdefault(limit, record.get("unenforced_why", {}).get(name, "not enforced"))
        fixes.setdefault(limit, record.get("fixes", {}).get(name) or _fix_for_limit(limit))
    for limit in ("cpu", "memory", "pids", "io"):
        if limit in why:
            checks.append(Check(f"{limit} limit", False, f"not enforced: {why[limit]}", fixes[limit]))
        else:
            checks.append(Check(f"{limit} limit", True, "enforced"))
    return driver.NAME, not why, checks + _gpu_fence(record)


def _unconfined_gpu_record() -> dict:
    """What a job without a cgroup would get for the host's GPUs (as ``isolation.prepare``)."""
    from jobber._backends.local import device_cover

    deny = isolation.fenced_gpus()
    record: dict = {"gpus": {"denied": deny, "fenced_by": None}, "notes": []}
    cannot = device_cover.fence(record, "/", deny) if deny else None
    if cannot is None:
        record["gpus"]["fenced_by"] = record.pop("devices_fenced_by", None)
    else:
        record["notes"].append(f"GPUs not fenced: without a cgroup there is no device controller, and {cannot}")
    return record


def _gpu_fence(record: dict) -> list[Check]:
    """Whether a job without ``gpus`` is kept from the host's GPUs (none: no GPU here)."""
    gpus = record.get("gpus")
    if not gpus or not gpus.get("denied"):
        return []
    count = f"the {len(gpus['denied'])} GPU node{'s' if len(gpus['denied']) != 1 else ''} of this host"
    if gpus.get("fenced_by"):
        return [Check("gpu fence", True, f"a job without gpus cannot open {count} (by {gpus['fenced_by']})")]
    why = next((note.removeprefix("GPUs not fenced: ").split("; the job")[0] for note in record.get("notes", [])
                if note.startswith("GPUs not fenced")), "no device fence here")
    return [Check("gpu fence", False, f"a job without gpus can open {count}: {why}",
                  "run jobs as root (or from `jobber serve`) for a device cgroup, or allow user namespaces "
                  "(sysctl kernel.unprivileged_userns_clone=1); to share the GPUs on purpose and silence this, "
                  "set JOBBER_GPU_FENCE=off")]


def _fix_for_none(reason: isolation.Unconfined) -> str:
    if reason.code == isolation.SWITCHED_OFF:
        return "unset JOBBER_ISOLATION"
    if os.path.isdir("/run/systemd/system"):
        return ("start Jupyter in a delegated scope: systemd-run --user --scope -p Delegate=yes jupyter lab; "
                "or as root: loginctl enable-linger $USER")
    return "run jobber as root, or on a host with systemd (it delegates cgroups to users)"


def _fix_for_limit(limit: str) -> str:
    if limit == "io":
        return ("io limits need the job directory on a block device (set JOBBER_JOBS_DIR to a disk-backed "
                "directory) and the io controller delegated")
    return f"delegate the {limit} controller to the cgroup jobber runs in"


def _launcher() -> Check:
    argv = launcher_command("JOB_DIR")
    if argv[0] == sys.executable:
        asked = os.environ.get("JOBBER_LAUNCHER") == "python"
        why = "JOBBER_LAUNCHER=python" if asked else "no C compiler to build the launcher"
        fix = "" if asked else "install a C compiler (apt-get install gcc) for faster starts"
        return Check("launcher", True, f"the Python supervisor ({why}): ~6 MB per job, slower start", fix)
    return Check("launcher", True, f"compiled ({argv[0]})")


def _descriptors(nofile: tuple[int, int]) -> Check:
    """What a server's job may open: jobber's default unless this process may give less."""
    soft, hard = nofile
    found = f"a server's jobs get ulimit -n {soft} (hard {hard})"
    if nofile == DEFAULT_NOFILE:
        return Check("job descriptors", True, found)
    want_soft, want_hard = DEFAULT_NOFILE
    return Check("job descriptors", False,
                 f"{found}, below jobber's default {want_soft} (hard {want_hard}): the hard limit (ulimit -Hn) "
                 f"of this process is {hard}",
                 f"raise the hard limit of whatever starts jobber: LimitNOFILE={want_hard} in its systemd unit, "
                 f"`ulimit -Hn {want_hard}` as root before it starts, or prlimit --nofile={want_soft}:{want_hard}")


def _jobs_dir() -> Check:
    path = jobs_dir()
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return Check("jobs directory", True, f"{path} (made on the first job, mode 0700)")
    except OSError as err:
        return Check("jobs directory", False, f"{path}: {err.strerror}", "set JOBBER_JOBS_DIR to a directory you own")
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        return Check("jobs directory", False, f"{path} is not a real directory", "remove it, or set JOBBER_JOBS_DIR")
    if st.st_uid != os.geteuid():
        return Check("jobs directory", False, f"{path} is owned by uid {st.st_uid}, not by you (uid {os.geteuid()})",
                     "set JOBBER_JOBS_DIR to a directory you own")
    if st.st_mode & 0o022:
        return Check("jobs directory", False, f"{path} is writable by others", f"chmod go-w {path}")
    return Check("jobs directory", True, f"{path} (yours, private)")


def _old_jobs_dir() -> list[Check]:
    """Jobs left under the old default ``/tmp/jobber/jobs``, and how to move them.

    A move while a job runs there would strand it (its supervisor writes to the old path,
    its cgroup is named after it), so the fix says to wait until none runs.
    """
    old = store.legacy_jobs_dir()
    if old is None or os.environ.get("JOBBER_JOBS_DIR"):
        return []
    new = store.preferred_jobs_dir()
    if os.path.lexists(new):
        if not any(_HASH.match(name) for name in _names(old)):
            return []
        found = f"jobs under the old default {old} are not listed: {new} is used now"
        fix = (f"when no job runs there, move each <cert hash> directory of {old} that {new} lacks into it, "
               f"or run `JOBBER_JOBS_DIR={old} jobber ls` to see them")
    else:
        found = (f"{old} (the old default) is still used: {old.parent} shadows the jobber package for "
                 "Python started in /tmp")
        fix = f"when no job runs there (jobber ls): mkdir -p {new.parent} && mv {old} {new} && rmdir {old.parent}"
    return [Check("old jobs directory", False, found, fix)]


def _names(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _identity(root: str | os.PathLike[str] | None) -> list[Check]:
    from jobber._certificates import Certificate, default_root, get_client_certificates

    pool_dir = default_root(root) / "pool"
    try:
        pool = get_client_certificates(root)
    except JobberError as err:
        return [Check("pool", False, str(err), f"fix the files in {pool_dir}")]
    checks = [Check("pool", bool(pool), f"{len(pool)} certificate{'s' if len(pool) != 1 else ''} in {pool_dir}",
                    "" if pool else f"put your CA or client certificate in {pool_dir} (or: jobber certs init-demo DIR)")]
    cert = os.environ.get("JOBBER_CERT")
    if not cert:
        checks.append(Check("identity", False, "JOBBER_CERT is not set",
                            "export JOBBER_CERT=/path/to/client.pem (or %jobber_cert PATH in a notebook)"))
        return checks
    try:
        identity = Certificate.from_file(cert, root)
    except JobberError as err:
        checks.append(Check("identity", False, f"{cert}: {err}", "use a client certificate the pool accepts"))
        return checks
    checks.append(Check("identity", True, f"{identity.subject} ({cert}), jobs under {identity.hash()[:12]}…"))
    warning = identity.expiry_warning()
    if warning:
        checks.append(Check("identity expiry", False, f"{cert}: {warning}",
                            "ask the pool's administrator for a new one (jobber certs issue NAME), then use it"))
    return checks
