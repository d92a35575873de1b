"""The GPU fence of an ordinary user's job on cgroup v2: device nodes covered in a namespace.

On cgroup v2 the device controller is a BPF program attached to the job's cgroup, and
loading one needs CAP_SYS_ADMIN (or CAP_BPF and CAP_NET_ADMIN) in the host's user
namespace: an ordinary user, in the cgroup its systemd user manager delegated, gets EPERM,
whatever the delegation. What such a user may do is make a user namespace (mapping its
own uid and gid to themselves alone) with a mount namespace of its own, and there bind an
empty file of mode 0 over each GPU node the job was not given. The launcher does that in
the job's process before it execs the command (``--hide-device PATH --device-cover FILE``);
the command runs with the same uid and no capabilities, so it cannot undo the mounts, and
a namespace it makes itself gets them locked (the kernel's MNT_LOCKED: mounts inherited
from a more privileged mount namespace cannot be removed). Opening a covered node fails
with EACCES; making a new node fails too (mknod of a device needs CAP_MKNOD on the host,
and a mount made in a user namespace is nodev).

What the job sees differs a little from an unfenced one: files of users other than its
own show as owned by ``nobody`` (65534), and set-user-ID programs (``sudo``) do not raise
its privileges. Where user namespaces are off (``kernel.unprivileged_userns_clone=0``,
``user.max_user_namespaces=0``) or confined (Ubuntu 24.04's AppArmor restriction gives
them no capabilities), `unavailable` says so, and the job runs unfenced with a note.
"""

from __future__ import annotations

import os
import subprocess
import sys

__all__ = ["COVER", "covered_nodes", "fence", "launch_args", "unavailable"]

COVER = "no-device"
"""The empty file (mode 0, in the job's directory, made by the launcher) bound over each
fenced node."""

# Run in a fresh interpreter: unshare(CLONE_NEWUSER) refuses a multithreaded process (a
# Jupyter kernel is one). -S: no site, for a quick start.
_PROBE = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
def fail(what):
    sys.stdout.write(f"{what}: {os.strerror(ctypes.get_errno())}")
    sys.exit(1)
uid, gid = os.geteuid(), os.getegid()
if libc.unshare(0x10000000 | 0x00020000) != 0:
    fail("unshare(CLONE_NEWUSER|CLONE_NEWNS)")
try:
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as file:
            file.write(text)
except OSError as err:
    sys.stdout.write(f"writing /proc/self/{name}: {err.strerror}")
    sys.exit(1)
if libc.mount(b"/dev/null", b"/dev/null", None, 4096, None) != 0:
    fail("a bind mount in the new namespace")
"""

_verdict: list[str | None] = []


def unavailable() -> str | None:
    """Why this user cannot cover device nodes in a namespace of its own, or None if it can.

    Asked once per process (a short-lived interpreter tries it).
    """
    if not _verdict:
        try:
            done = subprocess.run([sys.executable, "-S", "-c", _PROBE], capture_output=True, text=True, timeout=60,
                                  stdin=subprocess.DEVNULL)
            _verdict.append(None if done.returncode == 0 else
                            f"user namespaces are not available to uid {os.geteuid()} "
                            f"({done.stdout.strip() or done.stderr.strip()[-200:] or done.returncode})")
        except (OSError, subprocess.TimeoutExpired) as err:
            _verdict.append(f"cannot try a user namespace ({err})")
    return _verdict[0]


def fence(record: dict, job_dir: str, deny_devices: list[tuple[int, int]]) -> str | None:
    """Plan the cover of ``deny_devices`` for a job, in its confinement ``record``.

    Returns:
        None when the launcher will cover them (the record then says ``hide_devices``,
        ``device_cover`` and ``devices_fenced_by``), else why it cannot.
    """
    if os.geteuid() == 0:
        return "a job of root keeps its capabilities in a namespace of its own, and could remove the cover"
    cannot = unavailable()
    if cannot is not None:
        return cannot
    record["hide_devices"] = covered_nodes(deny_devices)
    record["device_cover"] = os.path.join(job_dir, COVER)
    record["devices_fenced_by"] = "mount namespace"
    return None


def launch_args(record: dict) -> list[str]:
    """The launcher options that cover the nodes `fence` planned (none: [])."""
    nodes = record.get("hide_devices") or []
    if not nodes:
        return []
    return [arg for node in nodes for arg in ("--hide-device", node)] + ["--device-cover", record["device_cover"]]


def covered_nodes(deny_devices: list[tuple[int, int]]) -> list[str]:
    """The device nodes to cover for the GPUs (major, minor) a job may not open, as
    discovery found them."""
    from jobber._backends.local import gpus

    denied = set(deny_devices)
    return [gpu.path for gpu in gpus.discover() if (gpu.major, gpu.minor) in denied]
