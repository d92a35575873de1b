"""Is the jobs directory one the Slurm nodes share? A function job needs it to be.

A function job's node reads ``call.pkl`` from the job's directory and writes its result
there, so (as submitit requires of its folder) that directory must be on a filesystem
every node sees: either the cluster's only node is this host, or the directory is on a
network filesystem.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from jobber._errors import JobError

__all__ = ["NETWORK_FILESYSTEMS", "check_shared", "filesystem_type"]

NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "lustre", "gpfs", "beegfs", "cephfs", "ceph", "cifs", "smb3", "smbfs", "glusterfs",
    "fuse.glusterfs", "fuse.sshfs", "fuse.cephfs", "fuse.juicefs", "panfs", "wekafs", "pvfs2", "orangefs",
    "afs", "9p", "virtiofs", "ocfs2", "gfs2", "fuse.s3fs", "fuse.gcsfuse",
})
"""Filesystem types (``/proc/self/mountinfo``) that other machines can mount too."""


def check_shared(path: str | os.PathLike[str]) -> None:
    """Refuse a Slurm function job whose directory the nodes would not see.

    Args:
        path: the jobs directory (its nearest existing ancestor is looked at).

    Raises:
        JobError: the cluster has nodes other than this host and ``path`` is on a local
            filesystem, saying which and what to do.
    """
    from jobber._backends.slurm.query import run_slurm, slurm_tool

    answer = run_slurm([slurm_tool("scontrol"), "show", "nodes", "-o"])
    nodes = {field.split("=", 1)[1] for line in answer.stdout.splitlines() for field in line.split()
             if field.startswith(("NodeName=", "NodeHostName="))}
    here = {socket.gethostname(), socket.gethostname().split(".")[0], "localhost"}
    if answer.returncode == 0 and nodes and nodes <= here:
        return  # every node is this host: it shares whatever this host sees
    kind, mount = filesystem_type(path)
    if kind in NETWORK_FILESYSTEMS:
        return
    others = ", ".join(sorted(nodes - here)[:5]) or "the cluster's nodes"
    raise JobError(f"a Python function job on Slurm needs its job directory on a filesystem the nodes share, but "
                   f"{path} is on {mount} ({kind}), which {others} cannot see: set JOBBER_JOBS_DIR to a directory "
                   "on a shared filesystem (NFS, Lustre, GPFS, ...), or run it on this host (backend=\"local\")")


def filesystem_type(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(the filesystem type, its mount point) of ``path``'s nearest existing ancestor."""
    here = Path(os.path.abspath(path))
    while not here.exists() and here != here.parent:
        here = here.parent
    real = os.path.realpath(here)
    best = ("unknown", "/")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mount = fields[4].replace("\\040", " ")
            kind = fields[fields.index("-") + 1]
            inside = real == mount or real.startswith(mount.rstrip("/") + "/")
            if inside and len(mount) >= len(best[1]):
                best = (kind, mount)
    return best
