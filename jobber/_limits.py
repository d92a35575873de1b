"""Resource limits of a job, and the size strings people type ("512M", "2G")."""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass
from typing import Any

from jobber._errors import LimitError
from jobber._text import format_size

__all__ = ["Limits", "AUTO", "parse_size", "format_size"]

# ``Limits(memory="auto")``: the size is picked from earlier runs with the job's label when
# the job is created (``jobber._jobs.history.resolve_auto``); it is never stored as "auto".
AUTO = "auto"

# Binary multiples, as docker, Slurm and cgroupfs itself read them ("512M" == 512 MiB).
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}
_MAX_BYTES = (1 << 63) - 1
_MAX_CPUS = 4096  # the kernel's largest NR_CPUS; a quota beyond it means nothing
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: int | str, what: str = "size") -> int:
    """Read a byte count from an int or a string such as "512M", "1.5G", "100KiB".

    Args:
        value: a non-negative int, or a number with an optional binary unit
            (K, M, G, T; "MB" and "MiB" both mean 2**20).
        what: the name of the limit, used in the error message.

    Returns:
        The size in bytes.

    Raises:
        LimitError: the value is negative, zero, or not a size.
    """
    if isinstance(value, bool):
        raise LimitError(f"{what} must be a size such as 512M or 2G, not {value!r}")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str):
        match = _SIZE.match(value)
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise LimitError(
                f"{what}: {value!r} is not a size; write a number with an optional unit "
                "K, M, G or T (binary: 512M is 512 MiB), e.g. 512M or 2G"
            )
        try:
            number = int(float(match.group(1)) * _UNITS[unit])
        except OverflowError:
            number = _MAX_BYTES + 1
    else:
        raise LimitError(f"{what} must be an int or a string such as 512M, not {type(value).__name__}")
    if number <= 0:
        raise LimitError(f"{what} must be positive, got {value!r}")
    if number > _MAX_BYTES:
        raise LimitError(f"{what}={value!r} is beyond what the kernel can express (8 EiB); omit it for no limit")
    return number


@dataclass(frozen=True)
class Limits:
    """What a job may use. ``None`` means unlimited.

    Args:
        cpu: CPUs, e.g. 0.5 for half a core, 2 for two cores.
        memory: bytes of RAM (swap is not allowed on top), int or "512M"; or "auto":
            the most earlier runs with the same label used, x 1.25, picked when the job is
            created (see ``jobber._jobs.history``).
        pids: the most processes and threads the job may have at once.
        io_read_bps: bytes per second read from the disk holding the job directory.
        io_write_bps: bytes per second written to that disk (direct I/O; buffered
            writes bypass the throttle, see the cgroup v1 blkio documentation).
        require_isolation: refuse to start rather than run unconfined when no
            cgroup is available, or when a limit cannot be enforced.
        gpus: how many GPUs, given to the job alone (``CUDA_VISIBLE_DEVICES``, and the
            device cgroup keeps it from opening the others); a job waits for them.

    Raises:
        LimitError: a value is malformed.
    """

    cpu: float | None = None
    memory: int | str | None = None  # an int, or AUTO until the job is created
    pids: int | None = None
    io_read_bps: int | None = None
    io_write_bps: int | None = None
    require_isolation: bool = False
    gpus: int | None = None

    def __init__(
        self,
        cpu: float | str | None = None,
        memory: int | str | None = None,
        pids: int | str | None = None,
        io_read_bps: int | str | None = None,
        io_write_bps: int | str | None = None,
        require_isolation: bool = False,
        gpus: int | str | None = None,
    ) -> None:
        set_ = object.__setattr__
        set_(self, "cpu", _parse_cpu(cpu))
        set_(self, "memory", _parse_memory(memory))
        set_(self, "pids", _parse_pids(pids))
        set_(self, "io_read_bps", None if io_read_bps is None else parse_size(io_read_bps, "io_read_bps"))
        set_(self, "io_write_bps", None if io_write_bps is None else parse_size(io_write_bps, "io_write_bps"))
        set_(self, "require_isolation", bool(require_isolation))
        set_(self, "gpus", _parse_gpus(gpus))

    def to_dict(self) -> dict[str, Any]:
        """The limits as plain JSON-able values (the job directory stores this).

        Raises:
            LimitError: memory is still "auto", which only a job's creation resolves.
        """
        if self.memory == AUTO:
            raise LimitError(_AUTO_UNRESOLVED)
        data = asdict(self)
        if data["gpus"] is None:
            del data["gpus"]  # what servers and job directories from before GPUs expect
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Limits:
        """Rebuild limits from :meth:`to_dict` output.

        Raises:
            LimitError: an unknown key or a malformed value.
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise LimitError(f"unknown limit(s) {sorted(unknown)}; known: {sorted(cls.__dataclass_fields__)}")
        if _is_auto(data.get("memory")):
            raise LimitError(_AUTO_UNRESOLVED)
        return cls(**data)

    def beyond_host(self) -> list[str]:
        """Warnings for limits this host cannot reach: the job still runs, but such a limit
        never binds (``--cpu 64`` on 2 CPUs, more memory than the host has).

        Returns:
            One sentence per such limit; empty when every limit fits the host.
        """
        warnings = []
        cpus = host_cpus()
        if self.cpu and cpus and self.cpu > cpus:
            warnings.append(f"--cpu {self.cpu:g} is more than the {cpus} CPU{'s' if cpus != 1 else ''} of this "
                            f"host: the job can use {cpus} at most, so the limit never binds")
        memory = host_memory()
        if isinstance(self.memory, int) and memory and self.memory > memory:
            warnings.append(f"--memory {format_size(self.memory)} is more than the {format_size(memory)} of memory "
                            "of this host: the host runs out before the job meets its limit")
        return warnings

    def describe(self) -> str:
        """A short human summary: "cpu=0.5 memory=50 MiB pids=20"."""
        parts = []
        if self.cpu is not None:
            parts.append(f"cpu={self.cpu:g}")
        if self.memory == AUTO:
            parts.append(f"memory={AUTO}")
        elif self.memory is not None:
            parts.append(f"memory={format_size(self.memory)}")
        if self.pids is not None:
            parts.append(f"pids={self.pids}")
        if self.io_read_bps is not None:
            parts.append(f"io_read={format_size(self.io_read_bps)}/s")
        if self.io_write_bps is not None:
            parts.append(f"io_write={format_size(self.io_write_bps)}/s")
        if self.gpus:
            parts.append(f"gpus={self.gpus}")
        return " ".join(parts) or "unlimited"


_AUTO_UNRESOLVED = ("memory='auto' is not a size yet: only creating a job on this host turns it into one (from "
                    "earlier runs with the same label), so these limits cannot be stored or sent as they are; "
                    "give a size such as 2G")


def _parse_gpus(value: int | str | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 64:
        raise LimitError(f"gpus must be a whole number of GPUs from 0 to 64, e.g. 1, not {value!r}")
    return value or None


def _is_auto(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def _parse_memory(value: int | str | None) -> int | str | None:
    if value is None:
        return None
    if _is_auto(value):
        return AUTO
    return parse_size(value, "memory")


def _parse_cpu(value: float | str | None) -> float | None:
    if value is None:
        return None
    try:
        cpu = float(value)
    except (TypeError, ValueError):
        raise LimitError(f"cpu must be a number of CPUs such as 0.5 or 2, not {value!r}") from None
    if not math.isfinite(cpu) or cpu <= 0:
        raise LimitError(f"cpu must be a positive number of CPUs such as 0.5 or 2, not {value!r}")
    if cpu < 0.01:
        raise LimitError(f"cpu={value!r} is below the smallest quota the kernel takes (0.01 CPUs)")
    if cpu > _MAX_CPUS:
        raise LimitError(f"cpu={value!r} is more CPUs than any machine has; omit it for no limit")
    return cpu


def _parse_pids(value: int | str | None) -> int | None:
    if value is None:
        return None
    try:
        pids = int(value)
    except (TypeError, ValueError):
        raise LimitError(f"pids must be a whole number of processes, not {value!r}") from None
    if isinstance(value, bool) or pids < 1:
        raise LimitError(f"pids must be at least 1, not {value!r}")
    if pids > _MAX_BYTES:
        raise LimitError(f"pids={value!r} is beyond what the kernel can express; omit it for no limit")
    return pids


def host_cpus() -> int | None:
    """The CPUs this process may run on (its affinity), or None when unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def host_memory() -> int | None:
    """This host's memory (MemTotal), in bytes, or None when unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
