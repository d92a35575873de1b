"""Choosing what confines a job, in one place, and translating cgroupfs errors.

Backends (``_cgroup_v2``, ``_cgroup_v1``, ``_unconfined``) share one small protocol:
``prepare(owner, job_id, limits, job_dir) -> record`` makes the confinement (the cgroup
drivers also take ``deny_devices``, the GPUs' device nodes the job must not open), and
``Cgroup(record)`` rebuilt from that record (by any process: the supervisor, a restarted
kernel, the CLI) offers ``join``, ``pids``, ``signal_all``, ``kill_all``, ``stats`` and
``remove``.

When no cgroup can be had, ``choose`` says why as an :class:`Unconfined`: a reason code
for programs to branch on (``jobber doctor`` picks its fix by it) and a sentence for people.
"""

from __future__ import annotations

import errno
import os
from types import ModuleType

from jobber._backends.local import cgroup_v1 as _cgroup_v1
from jobber._backends.local import cgroup_v2 as _cgroup_v2
from jobber._backends.local import unconfined as _unconfined
from jobber._errors import JobError

# typing and _limits cost ~15 ms to import and the supervisor's finishing half imports this module
# on every job's end (stop latency): annotations only, so a constant stands in for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jobber._limits import Limits

__all__ = ["choose", "prepare", "open_cgroup", "DRIVERS", "Unconfined", "SWITCHED_OFF", "NO_HIERARCHY",
           "NOT_WRITABLE"]

# Why a job would run unconfined (``Unconfined.code``):
SWITCHED_OFF = "switched-off"  # JOBBER_ISOLATION=none asks for no cgroup
NO_HIERARCHY = "no-hierarchy"  # no cgroup hierarchy is mounted on this host
NOT_WRITABLE = "not-writable"  # a hierarchy is mounted, but no cgroup in it may be written


class Unconfined:
    """Why the next job would run without a cgroup.

    Attributes:
        code: ``SWITCHED_OFF``, ``NO_HIERARCHY`` or ``NOT_WRITABLE``.
        text: the reason for people, as job notes and ``jobber doctor`` show it (``str()``).
    """

    __slots__ = ("code", "text")

    def __init__(self, code: str, text: str) -> None:
        self.code = code
        self.text = text

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Unconfined({self.code!r}, {self.text!r})"


DRIVERS: dict[str, ModuleType] = {
    _cgroup_v2.NAME: _cgroup_v2,
    _cgroup_v1.NAME: _cgroup_v1,
    _unconfined.NAME: _unconfined,
}


def detect() -> str:
    """The host's layout: "cgroup-v2" (unified), "cgroup-v1" (legacy/hybrid) or "none"."""
    try:
        if _cgroup_v1.mounts().get("memory"):
            return _cgroup_v1.NAME
        if _cgroup_v2.mountpoint():
            return _cgroup_v2.NAME
    except OSError:
        pass
    return _unconfined.NAME


def choose() -> tuple[ModuleType, Unconfined | None]:
    """Pick the backend for a new job.

    Returns:
        (backend module, why it is unconfined, or None when it is not).

    Raises:
        JobError: ``$JOBBER_ISOLATION`` names an unknown backend.
    """
    wanted = os.environ.get("JOBBER_ISOLATION", "").strip()
    if wanted and wanted not in DRIVERS:
        raise JobError(f"JOBBER_ISOLATION={wanted!r} is not one of {', '.join(DRIVERS)}")
    name = wanted or detect()
    if name == _unconfined.NAME:
        if wanted:
            return _unconfined, Unconfined(SWITCHED_OFF, "JOBBER_ISOLATION=none")
        return _unconfined, Unconfined(NO_HIERARCHY, "no cgroup hierarchy is mounted on this host")
    why = DRIVERS[name].unavailable()
    if why is None:
        return DRIVERS[name], None
    return _unconfined, Unconfined(NOT_WRITABLE, f"no writable cgroup: {why}")


def prepare(owner: str, job_id: int, limits: Limits, job_dir: str,
            devices: list[int] | None = None) -> dict[str, Any]:
    """Make the confinement of a new job.

    Args:
        devices: the indices of the GPUs the job was given (``gpus.claim``); every other
            GPU of the host is fenced off by the device controller (v1 ``devices.deny``,
            v2 a BPF device program). None: a job that asked for no GPUs, fenced off
            every GPU of the host, unless ``JOBBER_GPU_FENCE=off`` (a host that shares
            its GPUs among jobs that did not ask for them).

    Returns:
        The record to save beside the job (``isolation``, ``notes`` and backend data;
        ``gpus`` = {"given", "denied", "fenced_by"} when ``devices`` was given or a GPU
        was fenced off).

    Raises:
        JobError: the cgroup could not be made, or ``limits.require_isolation`` is set
            and the job would run unconfined or with a limit not enforced.
    """
    backend, reason = choose()
    deny = _other_gpus(devices)
    if backend is _unconfined:
        if limits.require_isolation:
            raise JobError(
                f"job {job_id} needs isolation but would run unconfined ({reason}); run as root "
                "or in a delegated cgroup, or drop require_isolation",
                job_id=job_id,
            )
        record = _unconfined.prepare(owner, job_id, limits, job_dir, reason.text if reason else "unknown")
        if devices is not None or deny:
            record["gpus"] = {"given": list(devices or []), "denied": [], "fenced_by": None}
            if deny:
                from jobber._backends.local import device_cover

                cannot = device_cover.fence(record, job_dir, deny)
                if cannot is None:
                    record["gpus"].update(denied=[f"{major}:{minor}" for major, minor in deny],
                                          fenced_by=record.pop("devices_fenced_by"))
                else:
                    _not_fenced(record, devices, f"without a cgroup there is no device controller, and {cannot}")
        return record
    owner = cgroup_owner(owner, job_dir)
    for attempt in range(3):
        try:
            record = backend.prepare(owner, job_id, limits, job_dir, deny_devices=deny)
            break
        except FileNotFoundError as err:
            # Another job's clean-up removed an empty parent between our mkdirs: redo.
            if attempt == 2:
                _remove_quietly(backend, owner, job_id)
                raise _translate(backend, job_id, err) from err
        except OSError as err:
            _remove_quietly(backend, owner, job_id)
            raise _translate(backend, job_id, err) from err
        except BaseException:
            _remove_quietly(backend, owner, job_id)
            raise
    if devices is not None or deny:
        fenced_by = record.pop("devices_fenced_by", None)
        record["gpus"] = {"given": list(devices or []), "denied": [f"{major}:{minor}" for major, minor in deny or []],
                          "fenced_by": fenced_by}
        if deny and fenced_by is None:
            _not_fenced(record, devices, record.pop("devices_why", "the device controller is unavailable"))
    if limits.require_isolation and record["unenforced"]:
        open_cgroup(record).remove()
        raise JobError(
            f"job {job_id} needs isolation but these limits would not be enforced: "
            f"{', '.join(record['unenforced'])} ({'; '.join(record['notes'])})",
            job_id=job_id,
        )
    return record


FENCE_ENV = "JOBBER_GPU_FENCE"
"""``off``: jobs that asked for no GPUs may open every GPU (a host that shares them)."""


def fenced_gpus() -> list[tuple[int, int]]:
    """The GPUs a job without ``gpus`` is to be kept from (none with ``JOBBER_GPU_FENCE=off``)."""
    return _other_gpus(None) or []


def _other_gpus(devices: list[int] | None) -> list[tuple[int, int]] | None:
    """The (major, minor) of every GPU of the host not in ``devices`` (None: no fence)."""
    if devices is None and os.environ.get(FENCE_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return None
    from jobber._backends.local import gpus

    # A job given no GPU is fenced from all: "exclusive" means no job that was not given a
    # GPU reaches it (discovery is cached; a host without GPUs finds none and fences nothing).
    found = gpus.discover()
    devices = devices or []
    given = {(gpu.major, gpu.minor) for gpu in found if gpu.index in devices}
    return [(gpu.major, gpu.minor) for gpu in found if gpu.index not in devices and (gpu.major, gpu.minor) not in given]


def _not_fenced(record: dict[str, Any], devices: list[int] | None, why: str) -> None:
    """Say, in the record's notes (and ``unenforced``, for a job that asked for GPUs), that
    other GPUs stay within reach."""
    given = (f"the job is pointed at GPU {','.join(str(d) for d in devices)} by CUDA_VISIBLE_DEVICES only"
             if devices else "the job asked for no GPU")
    if devices is not None:  # a job without gpus= is not refused by require_isolation for it
        record["unenforced"].append("gpus")
        record["unenforced_why"]["gpus"] = why
    record["notes"].append(f"GPUs not fenced: {why}; {given}, and could open the other GPUs' device nodes")


def cgroup_owner(owner: str, job_dir: str) -> str:
    """The name of the owner's cgroup: its hash and a key of the jobs directory.

    Two jobs directories (two ``$JOBBER_JOBS_DIR``) may hold the same certificate's job 3;
    their cgroups must not be the same ``jobber/<owner>/3``.
    """
    import hashlib

    jobs_root = os.path.dirname(os.path.dirname(os.path.realpath(job_dir)))
    return f"{owner}.{hashlib.sha256(jobs_root.encode(errors='surrogateescape')).hexdigest()[:8]}"


def _translate(backend: ModuleType, job_id: int, err: OSError) -> JobError:
    hint = " (run as root, or in a delegated cgroup)" if err.errno in (errno.EACCES, errno.EPERM) else ""
    where = f" at {err.filename}" if err.filename else ""
    return JobError(
        f"{backend.NAME}: cannot set up the cgroup of job {job_id}: {err.strerror or err}{where}{hint}",
        job_id=job_id,
    )


def _remove_quietly(backend: ModuleType, owner: str, job_id: int) -> None:
    """Undo a half-made cgroup: rmdir whatever exists of it."""
    tail = os.path.join("jobber", owner, str(job_id))
    try:
        if backend is _cgroup_v1:
            paths = {os.path.join(_cgroup_v1._base_dir(mount, controller), tail)
                     for controller, mount in _cgroup_v1.mounts().items()}
        else:
            paths = {os.path.join(_cgroup_v2.anchor(), tail)}
    except OSError:
        return
    for path in paths:
        try:
            os.rmdir(path)
        except OSError:
            pass


def open_cgroup(record: dict[str, Any], pid: int | None = None) -> Any:
    """Rebuild a job's confinement from its saved record.

    Args:
        record: what :func:`prepare` returned.
        pid: the job's main process, which the "none" backend signals as a group.
    """
    backend = DRIVERS.get(record.get("isolation", ""))
    if backend is None:
        raise JobError(f"unknown isolation {record.get('isolation')!r} in the job record")
    return backend.Cgroup({**record, "pid": pid})
