"""What a job is doing, or how it ended: ``JobStatus``, the same for every backend."""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from jobber._limits import Limits, format_size
from jobber._states import FINAL_STATES, STATES

__all__ = ["JobStatus", "STATES", "FINAL_STATES", "when"]


def when(value: float | None) -> datetime | None:
    """A UTC datetime from epoch seconds, as status files hold them (None stays None)."""
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


@dataclass(frozen=True)
class JobStatus:
    """What a job is doing, or how it ended.

    Attributes:
        state: one of "created", "pending", "running", "exited", "failed", "stopped",
            "oom-killed", "timed-out".
        exit_code: the exit code once ended normally (None if killed by a signal).
        signal: the signal that ended the main process, if one did.
        oom_killed: the kernel's OOM killer struck inside the job's cgroup.
        started_at / ended_at: UTC datetimes.
        peak_memory_bytes: the most memory the job used (its cgroup's high-water mark).
        cpu_seconds: CPU time used by every process of the job.
        memory_bytes: memory in use now (running jobs on cgroups only).
        isolation: "cgroup-v2", "cgroup-v1", "none", or "slurm" (Slurm's own cgroups);
            isolation_note says what was not enforced, and why when "none".
        pid: the main process id; note: anything else worth knowing (a start error).
        timeout: the job's time limit in seconds (``new_job(timeout=...)``), if it has one.
        attempt: which attempt this is (1-based); retries: how many more the job may make
            after a failed one (``new_job(retries=...)``), so attempts go up to 1 + retries.
        log_dropped_bytes: bytes the log cap (``log_max``) cut from the middle of the log.
        cpu_throttled_seconds: time the job's CPU limit held it back (cgroup ``cpu.stat``).
        cpu_pressure / memory_pressure / io_pressure: the share of the last 10 s (0-100)
            in which some of the job's tasks waited for CPU, memory or IO (PSI "some
            avg10", cgroup v2 only; None where the kernel does not report it).
    """

    state: str
    exit_code: int | None = None
    signal: int | None = None
    oom_killed: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    peak_memory_bytes: int | None = None
    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    isolation: str | None = None
    isolation_note: str = ""
    pid: int | None = None
    note: str = ""
    backend: str = "local"
    limits: Limits = field(default_factory=Limits)
    timeout: float | None = None
    attempt: int = 1
    retries: int = 0
    log_dropped_bytes: int = 0
    cpu_throttled_seconds: float | None = None
    cpu_pressure: float | None = None
    memory_pressure: float | None = None
    io_pressure: float | None = None

    @property
    def ended(self) -> bool:
        """True once the state is final."""
        return self.state in FINAL_STATES

    @property
    def elapsed(self) -> float | None:
        """Seconds from start to end (or to now, while running)."""
        if self.started_at is None:
            return None
        end = self.ended_at or datetime.now(timezone.utc)
        return (end - self.started_at).total_seconds()

    @property
    def elapsed_text(self) -> str:
        """:attr:`elapsed` for people: "0.4 s", "12.3 s", "3 min 05 s", "2 h 01 min", or "-"."""
        seconds = self.elapsed
        if seconds is None:
            return "-"
        if seconds < 60:
            return f"{seconds:.1f} s"
        minutes, secs = divmod(int(seconds), 60)
        if minutes < 60:
            return f"{minutes} min {secs:02d} s"
        hours, minutes = divmod(minutes, 60)
        return f"{hours} h {minutes:02d} min"

    def describe(self) -> str:
        """One line for people: "exited (code 0)", "killed: out of memory at 50 MiB"."""
        if self.state == "oom-killed":
            limit = f" at {format_size(self.limits.memory)}" if self.limits.memory else ""
            return f"killed: out of memory{limit}"
        if self.state in ("exited", "failed"):
            if self.signal:
                return f"{self.state} (signal {signal.Signals(self.signal).name})"
            return f"{self.state} (code {self.exit_code})"
        if self.state == "stopped":
            return "stopped"
        if self.state == "timed-out":
            if self.timeout:
                from jobber._jobs.options import format_duration

                return f"timed out after {format_duration(self.timeout)}"
            return "timed-out"
        return self.state

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (ISO 8601 times), as the CLI and the server print it."""
        data = asdict(self)
        data["limits"] = self.limits.to_dict()
        for key in ("started_at", "ended_at"):
            data[key] = data[key].isoformat() if data[key] else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobStatus:
        """Inverse of :meth:`to_dict` (unknown keys are ignored, for newer servers)."""
        data = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        for key in ("started_at", "ended_at"):
            if isinstance(data.get(key), str):
                data[key] = datetime.fromisoformat(data[key])
        if isinstance(data.get("limits"), dict):
            data["limits"] = Limits.from_dict(data["limits"])
        return cls(**data)
