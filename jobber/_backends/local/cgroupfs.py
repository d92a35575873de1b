"""Small cgroupfs primitives shared by the cgroup v1 and v2 backends.

Standard library only: the supervisor imports this module without importing the rest of
jobber (see ``supervisor.py``). Errors are left as ``OSError``; ``isolation`` translates
them into ``JobError`` at one boundary.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from collections.abc import Iterable

INNER_MODE = 0o711
LEAF_MODE = 0o755

__all__ = [
    "read",
    "write",
    "read_pids",
    "tree",
    "tree_pids",
    "signal_pids",
    "rmdir_retry",
    "rmdir_tree",
    "mkdir_path",
    "mountinfo",
    "self_cgroups",
    "whole_disk",
]


def read(path: str) -> str:
    """The stripped contents of a cgroupfs file."""
    with open(path) as f:
        return f.read().strip()


def write(path: str, value: str) -> None:
    """Write one value to a cgroupfs file (each write is one kernel command)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read_pids(procs_file: str) -> list[int]:
    """The pids listed in ``cgroup.procs`` (empty if the cgroup is gone)."""
    try:
        return [int(line) for line in read(procs_file).split()]
    except OSError as err:
        # ENODEV: the cgroup was removed while the file was open (the job just ended).
        if err.errno in (errno.ENOENT, errno.ENODEV):
            return []
        raise


def tree(path: str) -> list[str]:
    """``path`` and every cgroup beneath it, deepest first (the order rmdir needs).

    A job cannot make a cgroup beneath its own (its directory is root's, 0755), but one
    that could (a job run as the user who owns a delegated cgroup) must not hide a
    process from stop, timeout or clean-up by moving it one level down.
    """
    try:
        if os.stat(path).st_nlink == 2:  # kernfs counts a directory's links as 2 + its subdirectories
            return [path]  # the usual case, at the cost of one stat (stop polls this)
    except FileNotFoundError:
        return []
    return [top for top, _dirs, _files in os.walk(path, topdown=False)]


def tree_pids(path: str) -> list[int]:
    """The pids in ``path``'s ``cgroup.procs`` and in those of every cgroup beneath it."""
    pids: dict[int, None] = {}
    for cgroup in tree(path):
        pids.update(dict.fromkeys(read_pids(os.path.join(cgroup, "cgroup.procs"))))
    return list(pids)


def signal_pids(pids: Iterable[int], sig: int) -> int:
    """Send ``sig`` to every pid, ignoring the ones already gone; returns how many got it."""
    sent = 0
    for pid in pids:
        try:
            os.kill(pid, sig)
            sent += 1
        except ProcessLookupError:
            pass
    return sent


def rmdir_retry(path: str, timeout: float = 2.0) -> None:
    """Remove a cgroup directory, retrying EBUSY while its last tasks finish exiting.

    A cgroup is removed with rmdir (never recursively: its files are not real files); the
    kernel answers EBUSY for a moment after the last task died, so retry briefly.
    """
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as err:
            if err.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def rmdir_tree(path: str, timeout: float = 2.0) -> None:
    """Remove a job's cgroup and any cgroup made beneath it, deepest first."""
    for cgroup in tree(path):
        rmdir_retry(cgroup, timeout)


def rmdir_quietly(path: str) -> None:
    """Remove an inner cgroup if it has become empty; another job may still use it."""
    try:
        os.rmdir(path)
    except OSError:
        pass


def mkdir_path(base: str, parts: Iterable[str], on_create=None) -> str:
    """Create ``base/part1/part2...`` one level at a time; returns the deepest path.

    The levels above the last are mode 0711: anyone may pass through them to a cgroup
    whose path they know (their own), nobody else may list them, so the jobs of one
    certificate cannot enumerate other certificates' hashes and job ids. The last is
    0755: a job may read its own cgroup's files, but not make a cgroup beneath it (one of
    its own, which it could move its processes into). Each mode is set with chmod after
    mkdir, so the caller's umask (000 under some service managers) changes nothing.

    Args:
        base: an existing cgroup directory.
        parts: the names below it.
        on_create: called with each directory's parent before the directory is made
            (cgroup v2 enables controllers there).
    """
    path = base
    parts = list(parts)
    for index, part in enumerate(parts):
        parent, path = path, os.path.join(path, part)
        inner = index < len(parts) - 1
        mode = INNER_MODE if inner else LEAF_MODE
        if on_create is not None:
            on_create(parent)
        try:
            os.mkdir(path, mode)
        except FileExistsError:
            if inner:
                try:
                    os.chmod(path, mode)  # made by an older jobber, or by another user
                except OSError:
                    pass
                continue
        os.chmod(path, mode)
    return path


def mountinfo() -> list[tuple[str, str, set[str]]]:
    """(mount point, filesystem type, super options) of every cgroup mount of this process."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rfields = left.split(), right.split()
            if len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
                mountpoint = fields[4].replace("\\040", " ")
                mounts.append((mountpoint, rfields[0], set(rfields[2].split(","))))
    return mounts


def self_cgroups(pid: str = "self") -> dict[str, str]:
    """This process's cgroup per hierarchy: {"memory": "/a/b", "": "/" (v2), ...}."""
    groups: dict[str, str] = {}
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _hid, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(",") if controllers else [""]:
                groups[controller] = path
    return groups


def whole_disk(path: str) -> str | None:
    """The "MAJ:MIN" of the whole disk that holds ``path``, or None (tmpfs, overlay...).

    io.max and blkio.throttle take a whole disk, not a partition: a partition's sysfs
    directory has a ``partition`` file and sits inside its disk's directory.
    """
    dev = os.stat(path).st_dev
    major, minor = os.major(dev), os.minor(dev)
    sysdir = f"/sys/dev/block/{major}:{minor}"
    if major == 0 or not os.path.exists(sysdir):
        return None
    real = os.path.realpath(sysdir)
    if os.path.exists(os.path.join(real, "partition")):
        return read(os.path.join(os.path.dirname(real), "dev"))
    return f"{major}:{minor}"


def wait_until(predicate, timeout: float) -> bool:
    """Poll ``predicate`` with a growing back-off until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
    return True


SIGKILL = signal.SIGKILL
