"""The host's GPUs, and which job holds each: exclusive, host-wide, crash-safe.

Discovery, first that answers: ``$JOBBER_GPUS`` (comma-separated device nodes, e.g.
``/dev/nvidia0,/dev/nvidia1``, or "none"), else the ``/dev/nvidia[0-9]*`` nodes. GPU *i*
is the *i*-th of them, the index ``CUDA_VISIBLE_DEVICES`` takes.

A GPU is held by one job at a time: ``<jobs dir>/.gpus/<i>`` is made with O_EXCL and
names its holder (``<owner>/<job id>``). A claim whose job has ended is stale and is taken
over; so a job killed -9 never keeps its GPUs.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Gpu", "discover", "claim", "release", "holders"]

_NODE = re.compile(r"^/dev/nvidia([0-9]+)$")


@dataclass(frozen=True)
class Gpu:
    """One GPU: its index for CUDA, its device node and the node's numbers."""

    index: int
    path: str
    major: int
    minor: int


def discover() -> list[Gpu]:
    """The GPUs of this host, in CUDA's order (empty when there are none)."""
    given = os.environ.get("JOBBER_GPUS")
    if given is not None:
        paths = [] if given.strip().lower() in ("", "none") else [p.strip() for p in given.split(",") if p.strip()]
    else:
        paths = sorted((p for p in glob.glob("/dev/nvidia[0-9]*") if _NODE.match(p)),
                       key=lambda p: int(_NODE.match(p).group(1)))
    found = []
    for index, path in enumerate(paths):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            found.append(Gpu(index, path, os.major(st.st_rdev), os.minor(st.st_rdev)))
    return found


def _claims(root: Path) -> Path:
    path = root / ".gpus"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def holders(root: Path) -> dict[int, str]:
    """GPU index -> the holder that claimed it (stale ones included)."""
    out = {}
    for entry in os.scandir(_claims(root)):
        if entry.name.isdigit():
            try:
                with open(entry.path) as f:
                    out[int(entry.name)] = f.read().strip()
            except OSError:
                continue
    return out


def claim(root: Path, count: int, holder: str, ended: Callable[[str], bool]) -> list[int] | None:
    """Claim ``count`` free GPUs for ``holder``: their indices, or None if too few are free.

    Args:
        root: the jobs directory (claims are host-wide, across identities).
        count: how many.
        holder: ``<owner>/<job id>``.
        ended: whether a holder's job has ended (its claim is then taken over).
    """
    gpus = discover()
    if count > len(gpus):
        return None
    claims = _claims(root)
    held = holders(root)
    got: list[int] = []
    for gpu in gpus:
        if len(got) == count:
            break
        path = claims / str(gpu.index)
        owner = held.get(gpu.index)
        if owner is not None:
            if owner != holder and not ended(owner):
                continue
            try:
                os.unlink(path)  # stale: its job ended without giving it back
            except FileNotFoundError:
                pass
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue  # another admitter took it just now
        with os.fdopen(fd, "w") as f:
            f.write(holder)
        got.append(gpu.index)
    if len(got) < count:
        release(root, holder)
        return None
    return got


def release(root: Path, holder: str) -> None:
    """Give back every GPU ``holder`` holds."""
    claims = _claims(root)
    for index, owner in holders(root).items():
        if owner == holder:
            try:
                os.unlink(claims / str(index))
            except FileNotFoundError:
                pass
