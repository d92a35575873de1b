"""The host's GPUs, and which job holds each: exclusive, host-wide, crash-safe.

Discovery, the first source that answers:

1. ``$JOBBER_GPUS``: comma-separated device nodes (``/dev/nvidia0,/dev/nvidia1``), or
   "none" for a host whose GPUs jobber must not hand out. It names them exactly, in order.
2. ``nvidia-smi -L``, when it is on PATH and runs: how many GPUs the driver sees, in its
   order (PCI bus order, which is CUDA's with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``).
3. ``/proc/driver/nvidia/gpus/<PCI bus id>/information``: one directory per GPU, sorted by
   bus id (nvidia-smi's order); its "Device Minor" names the GPU's ``/dev/nvidia<minor>``.
4. the ``/dev/nvidia[0-9]*`` nodes, by number.

With nvidia-smi, the nodes come from sources 3 and 4 (the i-th GPU is the i-th node): the
index nvidia-smi prints need not be the node's minor number. GPU *i* is the index
``CUDA_VISIBLE_DEVICES`` takes; its node's major:minor is what the device controller fences
(``isolation.prepare``). ``/dev/nvidiactl`` and ``/dev/nvidia-uvm`` are shared by every
GPU job and are never fenced.

A GPU is held by one job of the host at a time, whichever user runs it: see
``gpu_claims.py``.

Standard library only (and ``jobber._errors``): the supervisor island imports it.
"""

from __future__ import annotations

import glob
import os
import re
import stat
import time
from dataclasses import dataclass

from jobber._errors import LimitError

__all__ = ["Gpu", "discover", "check_request", "NVIDIA_MAJOR"]

NVIDIA_MAJOR = 195  # the NVIDIA driver's character devices (Documentation/admin-guide/devices.txt)
_NODE = re.compile(r"^/dev/nvidia([0-9]+)$")
_NUMBERED = re.compile(r"^nvidia([0-9]+)$")  # not nvidia-uvm, nvidia-modeset, nvidiactl
_SMI_LINE = re.compile(r"^GPU ([0-9]+):")
_PROC_GPUS = "/proc/driver/nvidia/gpus"
_DEV_GLOB = "/dev/nvidia[0-9]*"
# nvidia-smi takes ~0.1-1 s and admission asks on every pass: a look is good for this long.
_CACHE_S = 30.0
_cache: dict[tuple[str | None, str | None], tuple[float, list[Gpu]]] = {}


@dataclass(frozen=True)
class Gpu:
    """One GPU: its index for CUDA, its device node and the node's numbers."""

    index: int
    path: str
    major: int
    minor: int


def discover() -> list[Gpu]:
    """The GPUs of this host, in CUDA's order (empty when there are none).

    See the module docstring for the sources, in the order they are asked.
    """
    given = os.environ.get("JOBBER_GPUS")
    if given is not None:
        paths = [] if given.strip().lower() in ("", "none") else [p.strip() for p in given.split(",") if p.strip()]
        return _nodes(paths)  # cheap, and tests change it at will: never cached
    key = (os.environ.get("PATH"), os.environ.get("CUDA_DEVICE_ORDER"))
    hit = _cache.get(key)
    if hit is not None and time.monotonic() - hit[0] < _CACHE_S:
        return hit[1]
    count = _smi_count()
    listed = _proc_nodes()
    paths = listed or _dev_nodes()
    if count is not None:
        paths = paths[:count] + [f"/dev/nvidia{i}" for i in range(len(paths), count)]
    found = _nodes(paths, assume_missing=count is not None or bool(listed))
    _cache[key] = (time.monotonic(), found)
    return found


def check_request(count: int | None) -> None:
    """Refuse a job that asks for more GPUs than this host will ever have.

    Args:
        count: the job's ``Limits.gpus`` (None or 0: nothing to check).

    Raises:
        LimitError: the host has no GPUs, or fewer than ``count``.
    """
    if not count:
        return
    have = len(discover())
    if have == 0:
        raise LimitError(
            "this host has no GPUs (nvidia-smi, /proc/driver/nvidia/gpus and /dev/nvidia* show none; "
            "set JOBBER_GPUS to device nodes to name them, or run on Slurm with --backend slurm)"
        )
    if count > have:
        raise LimitError(f"this host has {have} GPU{'s' if have != 1 else ''}; gpus={count} can never be given")


def _smi_count() -> int | None:
    """How many GPUs ``nvidia-smi -L`` lists, or None when it is missing or fails."""
    import shutil
    import subprocess  # only here: the supervisor island imports this module

    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None  # "NVIDIA-SMI has failed because it couldn't communicate with the driver"
    return sum(1 for line in out.stdout.splitlines() if _SMI_LINE.match(line.strip()))


def _proc_nodes() -> list[str]:
    """The GPUs' nodes as the driver's /proc lists them, in PCI bus order."""
    try:
        buses = sorted(os.listdir(_PROC_GPUS))
    except OSError:
        return []
    paths = []
    for bus in buses:
        try:
            with open(os.path.join(_PROC_GPUS, bus, "information")) as f:
                text = f.read()
        except OSError:
            continue
        minor = re.search(r"^Device Minor:\s*([0-9]+)", text, re.MULTILINE)
        if minor:
            paths.append(f"/dev/nvidia{minor.group(1)}")
    return paths


def _dev_nodes() -> list[str]:
    numbered = {}
    for path in glob.glob(_DEV_GLOB):
        match = _NUMBERED.match(os.path.basename(path))
        if match:
            numbered[int(match.group(1))] = path
    return [numbered[n] for n in sorted(numbered)]


def _nodes(paths: list[str], assume_missing: bool = False) -> list[Gpu]:
    """A Gpu per character device among ``paths``; GPU *i* is the *i*-th path.

    With ``assume_missing`` (the driver listed the GPU: nvidia-smi or /proc), a node not made yet (nvidia-modprobe
    makes them on first use) counts as ``/dev/nvidia<N>`` = 195:N.
    """
    found = []
    for index, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            match = _NODE.match(path)
            if assume_missing and match:
                found.append(Gpu(index, path, NVIDIA_MAJOR, int(match.group(1))))
            continue
        if stat.S_ISCHR(st.st_mode):
            found.append(Gpu(index, path, os.major(st.st_rdev), os.minor(st.st_rdev)))
    return found
