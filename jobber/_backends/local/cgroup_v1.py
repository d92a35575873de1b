"""cgroup v1 backend: legacy and hybrid hosts (one hierarchy per controller).

A job gets a directory ``<controller mount>/<starter's cgroup>/jobber/<owner>/<id>`` in
every hierarchy it needs, beneath the cgroup the starting process lives in, so whatever
confines the starter (a container, a Slurm allocation) still confines its jobs.
See https://docs.kernel.org/admin-guide/cgroup-v1/ for the files used here.
"""

from __future__ import annotations

import errno
import os
import signal

from jobber._backends.local import cgroupfs as fs

# typing costs ~15 ms to import and the supervisor's finishing half imports these modules
# on every job's end (stop latency): annotations only, so a constant stands in for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jobber._limits import Limits

NAME = "cgroup-v1"
# freezer makes killing reliable; cpuacct gives CPU seconds; cpuset is left alone (a new
# cpuset cgroup is unusable until cpuset.cpus and cpuset.mems are copied into it); devices
# fences off the GPUs a job was not given, for GPU jobs only (ON_DEMAND).
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio", "freezer", "devices")
ON_DEMAND = ("devices",)
_PERIOD_US = 100_000


def mounts() -> dict[str, str]:
    """Controller name -> mount point, for the v1 hierarchies mounted here."""
    found: dict[str, str] = {}
    for mountpoint, fstype, options in fs.mountinfo():
        if fstype == "cgroup":
            for controller in options & set(CONTROLLERS):
                found.setdefault(controller, mountpoint)
    return found


def unavailable() -> str | None:
    """Why this backend cannot run here, or None when it can."""
    found = mounts()
    if "memory" not in found:
        return "no cgroup v1 memory hierarchy is mounted"
    base = _base_dir(found["memory"], "memory")
    if not os.access(base, os.W_OK):
        return f"{base} is not writable by uid {os.geteuid()}: run as root to confine jobs on this host"
    return None


def _base_dir(mountpoint: str, controller: str) -> str:
    own = fs.self_cgroups().get(controller, "/")
    return os.path.join(mountpoint, own.lstrip("/"))


def prepare(owner: str, job_id: int, limits: Limits, job_dir: str,
            deny_devices: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Create the job's cgroups and write its limits.

    Args:
        deny_devices: character devices (major, minor) the job may not open or mknod: a
            devices cgroup of its own gets a ``devices.deny`` line for each (a new devices
            cgroup starts with its parent's list, "a *:* rwm" on most hosts). The record
            then says ``devices_fenced_by``, or ``devices_why`` not.

    Returns:
        The record the other calls take (saved in the job directory).

    Raises:
        OSError: cgroupfs refused a directory or a value.
    """
    found = mounts()
    dirs: dict[str, str] = {}
    for controller in CONTROLLERS:
        if controller in ON_DEMAND and not deny_devices:
            continue
        if controller in found:
            # Co-mounted controllers (cpu,cpuacct) share one directory: mkdir is idempotent.
            dirs[controller] = fs.mkdir_path(
                _base_dir(found[controller], controller), ["jobber", owner, str(job_id)]
            )
    by_file = {}
    for path in set(dirs.values()):
        for name in os.listdir(path):
            by_file.setdefault(name, os.path.join(path, name))
    notes: list[str] = []
    unenforced: list[str] = []
    why: dict[str, str] = {}

    def put(file: str, value: str, limit: str) -> bool:
        if file not in by_file:
            unenforced.append(limit)
            why[limit] = f"{file} is missing (controller not mounted)"
            notes.append(f"{limit} limit not enforced: {file} is missing (controller not mounted)")
            return False
        fs.write(by_file[file], value)
        return True

    if limits.memory is not None:
        put("memory.limit_in_bytes", str(limits.memory), "memory")
        # Without memsw the job could swap past its limit; hosts booted without
        # swapaccount=1 lack the file, which is fine as long as the note says so.
        if "memory.memsw.limit_in_bytes" in by_file:
            fs.write(by_file["memory.memsw.limit_in_bytes"], str(limits.memory))
        else:
            notes.append("swap is not limited (memory.memsw.limit_in_bytes is missing)")
    if limits.cpu is not None:
        if put("cpu.cfs_period_us", str(_PERIOD_US), "cpu"):
            fs.write(by_file["cpu.cfs_quota_us"], str(max(1000, round(limits.cpu * _PERIOD_US))))
    if limits.pids is not None:
        put("pids.max", str(limits.pids), "pids")
    for attr, file in (("io_read_bps", "blkio.throttle.read_bps_device"),
                       ("io_write_bps", "blkio.throttle.write_bps_device")):
        value = getattr(limits, attr)
        if value is None:
            continue
        disk = fs.whole_disk(job_dir)
        if disk is None:
            unenforced.append(attr)
            why[attr] = f"{job_dir} is not on a block device"
            notes.append(f"{attr} not enforced: {job_dir} is not on a block device")
        else:
            put(file, f"{disk} {value}", attr)
    record = {"isolation": NAME, "dirs": dirs, "notes": notes, "unenforced": unenforced,
              "unenforced_why": why}
    if deny_devices:
        if "devices" in dirs:
            deny = os.path.join(dirs["devices"], "devices.deny")
            for major, minor in deny_devices:
                fs.write(deny, f"c {major}:{minor} rwm")  # one rule per write(2)
            record["devices_fenced_by"] = "devices.deny"
        else:
            record["devices_why"] = "no cgroup v1 devices hierarchy is mounted"
    return record


class Cgroup:
    """A job's cgroups, rebuilt from the record ``prepare`` returned."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.dirs: dict[str, str] = record["dirs"]
        for controller in ("freezer", "pids", "memory", "cpuacct", "cpu", "blkio"):
            if controller in self.dirs:
                self.procs = os.path.join(self.dirs[controller], "cgroup.procs")
                break

    def launch_args(self) -> list[str]:
        """Launcher options that put the job in every hierarchy before it runs."""
        return [arg for path in sorted(set(self.dirs.values())) for arg in ("--join", os.path.join(path, "cgroup.procs"))]

    def usage_args(self) -> list[str]:
        """Launcher options naming the files its usage history samples (``jobber._usage``)."""
        sources = [("memory", "memory", "memory.usage_in_bytes"), ("cpu-ns", "cpuacct", "cpuacct.usage"),
                   ("tasks", "pids", "pids.current")]
        return [arg for kind, controller, name in sources if controller in self.dirs
                for arg in ("--usage", f"{kind}={os.path.join(self.dirs[controller], name)}")]

    def pids(self) -> list[int]:
        """Every process of the job, setsid escapees included, and any process moved into a
        cgroup beneath the job's. One hierarchy tells them all: a process of the job is in
        the job's cgroup, or beneath it, in every hierarchy (only root could move it out)."""
        return fs.tree_pids(os.path.dirname(self.procs))

    def signal_all(self, sig: int) -> int:
        """Send ``sig`` to every process of the job."""
        return fs.signal_pids(self.pids(), sig)

    def kill_all(self) -> None:
        """SIGKILL every process; freeze first so none can fork while we iterate (the v1
        freezer is hierarchical: a cgroup beneath the job's freezes with it)."""
        freezer = self.dirs.get("freezer")
        if freezer is None:
            fs.wait_until(lambda: fs.signal_pids(self.pids(), signal.SIGKILL) == 0, 5.0)
            return
        state = os.path.join(freezer, "freezer.state")
        try:
            fs.write(state, "FROZEN")
            fs.wait_until(lambda: fs.read(state) == "FROZEN", 1.0)
            fs.signal_pids(self.pids(), signal.SIGKILL)
        except OSError as err:
            # The supervisor removed the cgroup: its last process ended while we looked
            # (ENOENT once it is gone, ENODEV while a file of it was open as it went).
            if err.errno not in (errno.ENOENT, errno.ENODEV) or os.path.isdir(freezer):
                raise
            return
        finally:
            # A frozen task cannot die: the kill is delivered when it thaws.
            try:
                fs.write(state, "THAWED")
            except OSError as err:
                if err.errno not in (errno.ENOENT, errno.ENODEV):
                    raise
        fs.wait_until(lambda: not self.pids(), 5.0)

    def stats(self) -> dict[str, Any]:
        """Memory now and at peak, CPU seconds, OOM kills so far, and CPU throttling.

        ``cpu_throttled_seconds`` is the cpu controller's cpu.stat throttled_time (ns),
        which exists where the kernel has CFS bandwidth control. PSI is per cgroup on v2
        only, so no pressure is reported here.
        """
        out: dict[str, Any] = {}
        memory = self.dirs.get("memory")
        if memory:
            out["memory_bytes"] = int(fs.read(os.path.join(memory, "memory.usage_in_bytes")))
            out["peak_memory_bytes"] = int(fs.read(os.path.join(memory, "memory.max_usage_in_bytes")))
            control = dict(
                line.split() for line in fs.read(os.path.join(memory, "memory.oom_control")).splitlines()
            )
            out["oom_kills"] = int(control.get("oom_kill", 0))
        pids = self.dirs.get("pids")
        if pids:
            # v1 keeps no high-water mark of tasks; a fork refused at the limit proves the
            # job reached it (pids.events "max N": N refusals).
            try:
                refused = dict(line.split() for line in fs.read(os.path.join(pids, "pids.events")).splitlines())
                if int(refused.get("max", 0)) > 0:
                    out["peak_pids"] = int(fs.read(os.path.join(pids, "pids.max")))
            except (FileNotFoundError, ValueError):
                pass
        cpuacct = self.dirs.get("cpuacct")
        if cpuacct:
            out["cpu_seconds"] = int(fs.read(os.path.join(cpuacct, "cpuacct.usage"))) / 1e9
        cpu = self.dirs.get("cpu")
        if cpu:
            try:
                stat = dict(line.split() for line in fs.read(os.path.join(cpu, "cpu.stat")).splitlines())
            except FileNotFoundError:
                stat = {}  # a kernel without CONFIG_CFS_BANDWIDTH: no throttling to report
            if "throttled_time" in stat:
                out["cpu_throttled_seconds"] = int(stat["throttled_time"]) / 1e9
        return out

    def remove(self) -> None:
        """rmdir the job's cgroups (any cgroup beneath them first), and the owner's and
        jobber's if they became empty."""
        for path in set(self.dirs.values()):
            fs.rmdir_tree(path)
            fs.rmdir_quietly(os.path.dirname(path))
            fs.rmdir_quietly(os.path.dirname(os.path.dirname(path)))
