"""cgroup v2 backend: the unified hierarchy most hosts have today.

Jobs are leaves of a jobber subtree beneath the cgroup the starting process lives in:
``<anchor>/jobber/<owner>/<id>``. cgroup v2 lets only leaves hold processes (the root
excepted), and controllers must be enabled in every ancestor's ``cgroup.subtree_control``,
so when the anchor is not the root its processes are first moved into a leaf
``<anchor>/jobber.leaf``, as container runtimes do under delegation.
See https://docs.kernel.org/admin-guide/cgroup-v2.html
"""

from __future__ import annotations

import os

from jobber._backends.local import cgroupfs as fs

# typing costs ~15 ms to import and the supervisor's finishing half imports these modules
# on every job's end (stop latency): annotations only, so a constant stands in for it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from jobber._limits import Limits

NAME = "cgroup-v2"
WANTED = ("cpu", "memory", "pids", "io")
LEAF = "jobber.leaf"
_PERIOD_US = 100_000


def mountpoint() -> str | None:
    """Where the unified hierarchy with controllers is mounted, if anywhere."""
    for mount, fstype, _options in fs.mountinfo():
        if fstype == "cgroup2" and fs.read(os.path.join(mount, "cgroup.controllers")):
            return mount
    return None


def systemd_drop_in() -> str:
    """The drop-in that makes systemd delegate every controller jobber uses."""
    from jobber._backends.local import systemd

    return f"{systemd.DROP_IN} containing \"{systemd.DROP_IN_TEXT.replace(chr(10), ' ')}\""


def own_cgroup() -> str:
    """The cgroup jobber's subtree goes under by default: the starter's own (or its leaf's parent)."""
    mount = mountpoint()
    if mount is None:
        raise FileNotFoundError("no cgroup2 hierarchy with controllers is mounted")
    own = os.path.join(mount, fs.self_cgroups().get("", "/").lstrip("/")).rstrip("/")
    # A starter already moved into our leaf anchors at the leaf's parent, so the subtree
    # does not nest one level deeper with every kernel restart.
    return os.path.dirname(own) if os.path.basename(own) == LEAF else own


def placement() -> tuple[str, str | None]:
    """Where jobber's subtree goes, and who delegated it when it is not our own cgroup.

    Our own cgroup when we may write it (root, or a delegated scope we were started in);
    else, on a systemd host, the cgroup of a unit the user's manager delegates to us.

    Returns:
        (the anchor cgroup, the systemd note or None).

    Raises:
        FileNotFoundError: no cgroup2 hierarchy with controllers is mounted.
    """
    own = own_cgroup()
    if os.geteuid() == 0 or _writable(own):
        return own, None
    from jobber._backends.local import systemd  # subprocess: only when it can help

    delegated, note = systemd.delegated_cgroup(mountpoint() or "/sys/fs/cgroup")
    return (delegated, note) if delegated else (own, None)


def anchor() -> str:
    """The cgroup jobber's subtree goes under (see :func:`placement`)."""
    return placement()[0]


def _may_move_into(path: str) -> bool:
    """Can this process move a child of its own into ``path``? cgroup v2 wants write access
    to ``cgroup.procs`` of the common ancestor of the two cgroups (cgroup-v2.rst, "Delegation
    Containment"): from an SSH session's scope or a system service, the user's own
    ``user@UID.service`` subtree is out of reach, and the supervisor must be started inside
    it by the user's manager (``systemd-run --user --scope``)."""
    common = os.path.commonpath([own_cgroup(), path])
    return os.access(os.path.join(common, "cgroup.procs"), os.W_OK)


def _writable(path: str) -> bool:
    return os.access(os.path.join(path, "cgroup.subtree_control"), os.W_OK)


def unavailable() -> str | None:
    """Why this backend cannot run here, or None when it can."""
    try:
        own = own_cgroup()
    except (FileNotFoundError, OSError) as err:
        return str(err)
    if os.geteuid() == 0 or _writable(own):
        return None
    from jobber._backends.local import systemd

    delegated, note = systemd.delegated_cgroup(mountpoint() or "/sys/fs/cgroup")
    if delegated is not None:
        return None
    fix = ("run as root, or start Jupyter in a delegated scope (systemd-run --user --scope -p Delegate=yes "
           "jupyter lab)" if systemd.manager_reachable() is None or os.path.isdir("/run/systemd/system")
           else "run as root, or start jobber in a cgroup delegated to uid "
           f"{os.geteuid()} (e.g. a container's own cgroup namespace): this host has no systemd to ask")
    return f"{own} is not writable by uid {os.geteuid()} and no delegated cgroup could be had ({note}): {fix}"


def _enable_controllers(parent: str, undelegated: list[str]) -> None:
    """Enable the controllers jobber uses below ``parent``; list those it does not have."""
    available = set(fs.read(os.path.join(parent, "cgroup.controllers")).split())
    enabled = set(fs.read(os.path.join(parent, "cgroup.subtree_control")).split())
    missing = [c for c in WANTED if c in available and c not in enabled]
    if missing:
        fs.write(os.path.join(parent, "cgroup.subtree_control"), " ".join(f"+{c}" for c in missing))
    for controller in WANTED:
        if controller not in available and controller not in undelegated:
            undelegated.append(controller)  # named in the notes of the limits that need it


def _evacuate(base: str, mount: str) -> None:
    """Move every process of ``base`` into its leaf (the no-internal-processes rule)."""
    if base.rstrip("/") == mount.rstrip("/"):
        return  # the root cgroup may hold processes and still enable controllers
    pids = fs.read_pids(os.path.join(base, "cgroup.procs"))
    if not pids:
        return
    leaf = fs.mkdir_path(base, [LEAF])
    for pid in pids:
        try:
            fs.write(os.path.join(leaf, "cgroup.procs"), str(pid))
        except ProcessLookupError:
            pass


def prepare(owner: str, job_id: int, limits: Limits, job_dir: str,
            deny_devices: list[tuple[int, int]] | None = None) -> dict[str, Any]:
    """Create the job's leaf cgroup and write its limits.

    Args:
        deny_devices: character devices (major, minor) the job may not open or mknod:
            a BPF device program attached to the leaf before anything joins it
            (``bpf_devices``); for a user the kernel refuses one (EPERM without
            CAP_SYS_ADMIN), their nodes covered in a user and mount namespace of the job's
            own (``device_cover``, ``hide_devices`` in the record). The record then says
            ``devices_fenced_by``, or ``devices_why`` neither could be.

    Returns:
        The record the other calls take (saved in the job directory).

    Raises:
        OSError: cgroupfs refused a directory or a value.
    """
    mount = mountpoint() or "/sys/fs/cgroup"
    base, delegated_by = placement()
    notes: list[str] = [delegated_by] if delegated_by else []
    unenforced: list[str] = []
    why: dict[str, str] = {}
    fixes: dict[str, str] = {}
    missing: list[str] = []
    _evacuate(base, mount)
    path = fs.mkdir_path(base, ["jobber", owner, str(job_id)], lambda p: _enable_controllers(p, missing))
    files = set(os.listdir(path))

    def put(file: str, value: str, limit: str) -> None:
        if file not in files:
            unenforced.append(limit)
            if delegated_by and limit in missing:
                why[limit] = f"systemd's user manager does not delegate the {limit} controller"
                fixes[limit] = (f"as root write {systemd_drop_in()} and run `systemctl daemon-reload`, then log "
                                "in again (or restart user@UID.service)")
                notes.append(f"{limit} limit not enforced: {why[limit]}; to fix, {fixes[limit]}")
            else:
                why[limit] = f"{file} is missing (the {limit} controller is not delegated to {base})"
                notes.append(f"{limit} limit not enforced: {why[limit]}")
        else:
            fs.write(os.path.join(path, file), value)

    if limits.memory is not None:
        put("memory.max", str(limits.memory), "memory")
        if "memory.swap.max" in files:
            fs.write(os.path.join(path, "memory.swap.max"), "0")
    if "memory.oom.group" in files:
        # One OOM kill takes the whole job, not a random process of it: a half-killed
        # training job is worse than a dead one.
        fs.write(os.path.join(path, "memory.oom.group"), "1")
    if limits.cpu is not None:
        put("cpu.max", f"{max(1000, round(limits.cpu * _PERIOD_US))} {_PERIOD_US}", "cpu")
    if limits.pids is not None:
        put("pids.max", str(limits.pids), "pids")
    io = []
    if limits.io_read_bps is not None:
        io.append(f"rbps={limits.io_read_bps}")
    if limits.io_write_bps is not None:
        io.append(f"wbps={limits.io_write_bps}")
    if io:
        disk = fs.whole_disk(job_dir)
        if disk is None:
            unenforced.append("io")
            why["io"] = f"{job_dir} is not on a block device"
            notes.append(f"io limits not enforced: {why['io']}")
        else:
            put("io.max", f"{disk} {' '.join(io)}", "io")
    record = {"isolation": NAME, "dirs": {"unified": path}, "notes": notes,
              "unenforced": unenforced, "unenforced_why": why, "fixes": fixes, "delegated_by": delegated_by,
              "via_user_manager": bool(delegated_by) and not _may_move_into(path)}
    if deny_devices:
        _fence(path, deny_devices, record, job_dir)
    return record


def _fence(path: str, deny_devices: list[tuple[int, int]], record: dict[str, Any], job_dir: str) -> None:
    """Attach the device program, else cover the nodes in a namespace, or say in the record why neither."""
    from jobber._backends.local import bpf_devices  # ctypes: only for GPU jobs

    try:
        bpf_devices.deny_char_devices(path, deny_devices)
    except bpf_devices.BpfUnavailable as err:
        import errno

        if err.errno == errno.EPERM:
            why = (f"loading a BPF device program needs CAP_SYS_ADMIN or CAP_BPF, which uid {os.geteuid()} "
                   "does not have (bpf: EPERM)")
            from jobber._backends.local import device_cover

            cannot = device_cover.fence(record, job_dir, deny_devices)
            if cannot is None:
                return
            why = f"{why}, and {cannot}"
        else:
            why = f"the kernel refused the BPF device program ({err.strerror}; is CONFIG_CGROUP_BPF set?)"
        record["devices_why"] = why
        return
    record["devices_fenced_by"] = "bpf"


def _cover_args(record: dict[str, Any]) -> list[str]:
    from jobber._backends.local import device_cover

    return device_cover.launch_args(record)


class Cgroup:
    """A job's leaf cgroup, rebuilt from the record ``prepare`` returned."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.path: str = record["dirs"]["unified"]
        self.procs = os.path.join(self.path, "cgroup.procs")
        self._hidden = _cover_args(record) if record.get("hide_devices") else []

    def launch_args(self) -> list[str]:
        """Launcher options that put the job in its cgroup before it runs: born there
        (clone3 CLONE_INTO_CGROUP) where the kernel can, else moved by cgroup.procs; and
        the GPU nodes it covers (``device_cover``), when no BPF program fences them."""
        return ["--join", self.procs, "--into", self.path, *self._hidden]

    def usage_args(self) -> list[str]:
        """Launcher options naming the files its usage history samples (``jobber._usage``)."""
        sources = [("memory", "memory.current"), ("cpu-stat", "cpu.stat"), ("tasks", "pids.current")]
        return [arg for kind, name in sources if os.path.exists(os.path.join(self.path, name))
                for arg in ("--usage", f"{kind}={os.path.join(self.path, name)}")]

    def pids(self) -> list[int]:
        """Every process of the job, setsid escapees included, and any process moved into a
        cgroup beneath the job's."""
        return fs.tree_pids(self.path)

    def signal_all(self, sig: int) -> int:
        """Send ``sig`` to every process of the job."""
        return fs.signal_pids(self.pids(), sig)

    def kill_all(self) -> None:
        """SIGKILL every process at once with cgroup.kill (Linux 5.14), else freeze-kill-thaw;
        both reach the cgroups beneath the job's too."""
        kill = os.path.join(self.path, "cgroup.kill")
        try:
            if os.path.exists(kill):
                fs.write(kill, "1")
            else:
                freeze = os.path.join(self.path, "cgroup.freeze")
                try:
                    fs.write(freeze, "1")
                    fs.signal_pids(self.pids(), fs.SIGKILL)
                finally:
                    fs.write(freeze, "0")
        except FileNotFoundError:
            # The supervisor removed the cgroup: its last process ended while we looked.
            if os.path.isdir(self.path):
                raise
            return
        fs.wait_until(lambda: not self.pids(), 5.0)

    def stats(self) -> dict[str, Any]:
        """Memory now and at peak, CPU seconds, OOM kills so far, CPU throttling, and PSI.

        ``cpu_throttled_seconds`` is cpu.stat's throttled_usec (present once the cpu
        controller is enabled for the cgroup); ``cpu_pressure``, ``memory_pressure`` and
        ``io_pressure`` are the "some avg10" of the *.pressure files (the share of the last
        10 s in which some task of the job waited), absent where the kernel has no PSI.
        """
        out: dict[str, Any] = {}

        def kv(name: str) -> dict[str, str]:
            return dict(line.split() for line in fs.read(os.path.join(self.path, name)).splitlines())

        try:
            out["memory_bytes"] = int(fs.read(os.path.join(self.path, "memory.current")))
            out["oom_kills"] = int(kv("memory.events").get("oom_kill", 0))
            # memory.peak exists from Linux 5.19 on.
            out["peak_memory_bytes"] = int(fs.read(os.path.join(self.path, "memory.peak")))
        except FileNotFoundError:
            pass
        try:
            out["peak_pids"] = int(fs.read(os.path.join(self.path, "pids.peak")))  # Linux 6.1
        except (FileNotFoundError, ValueError):
            pass  # an older kernel, or no pids controller: the supervisor's samples say it
        cpu = kv("cpu.stat")
        out["cpu_seconds"] = int(cpu["usage_usec"]) / 1e6
        if "throttled_usec" in cpu:
            out["cpu_throttled_seconds"] = int(cpu["throttled_usec"]) / 1e6
        for resource in ("cpu", "memory", "io"):
            share = _pressure(os.path.join(self.path, f"{resource}.pressure"))
            if share is not None:
                out[f"{resource}_pressure"] = share
        return out

    def remove(self) -> None:
        """rmdir the job's cgroup (any cgroup beneath it first), and the owner's and jobber's
        if they became empty."""
        fs.rmdir_tree(self.path)
        owner_dir = os.path.dirname(self.path)
        fs.rmdir_quietly(owner_dir)
        fs.rmdir_quietly(os.path.dirname(owner_dir))


def _pressure(path: str) -> float | None:
    """The "some avg10" of a PSI file ("some avg10=1.53 avg60=... total=..."), or None.

    The file is missing on kernels built without PSI, and reads fail with EOPNOTSUPP when
    PSI is off (``psi=0``, or ``cgroup.pressure`` set to 0); see
    https://docs.kernel.org/accounting/psi.html
    """
    try:
        text = fs.read(path)
    except OSError:
        return None
    for line in text.splitlines():
        kind, _, fields = line.partition(" ")
        if kind == "some":
            for item in fields.split():
                name, _, value = item.partition("=")
                if name == "avg10":
                    try:
                        return float(value)
                    except ValueError:
                        return None
    return None
