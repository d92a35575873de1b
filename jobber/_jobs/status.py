"""What a job is doing, or how it ended: ``JobStatus``, the same for every backend."""

from __future__ import annotations

import signal
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from typing import Any

from jobber._errors import JobError
from jobber._jobs.spec_names import RETRY_ON
from jobber._limits import Limits
from jobber._states import FINAL_STATES, RETRYABLE, STATES
from jobber._text import format_duration, format_elapsed, format_size

__all__ = ["JobStatus", "STATES", "FINAL_STATES", "check_record", "when"]


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
            after a failed one (``new_job(retries=...)``), so attempts go up to 1 + retries;
            retry_on: which endings are retried (``new_job(retry_on=...)``).
        log_dropped_bytes: bytes the log cap (``log_max``) cut from the middle of the log.
        log_stopped: why the log stopped taking the job's output, or "": its filesystem
            was nearly full ("disk full: ..."); what the job wrote after was dropped.
        cpu_throttled_seconds: time the job's CPU limit held it back (cgroup ``cpu.stat``).
        peak_pids: the most tasks (processes and threads, what ``pids.max`` counts) the job
            had at once: the kernel's own high-water mark where it keeps one (cgroup v2
            ``pids.peak``, Linux 6.1), the limit once a fork failed on it, else the largest
            of the supervisor's samples (``peak_pids_sampled``: a short burst can be missed).
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
    retry_on: tuple[str, ...] = ("failed",)
    log_dropped_bytes: int = 0
    log_stopped: str = ""
    cpu_throttled_seconds: float | None = None
    cpu_pressure: float | None = None
    memory_pressure: float | None = None
    io_pressure: float | None = None
    peak_pids: int | None = None
    peak_pids_sampled: bool = False

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
        return "-" if self.elapsed is None else format_elapsed(self.elapsed)

    def describe(self) -> str:
        """One line for people: "exited (code 0)", "killed: out of memory at 50 MiB".

        A job with retries that ended in a state it does not retry says so, and why:
        "killed: out of memory at 150 MiB, not retried: retry_on failed".
        """
        text = self._ending()
        if self.retries and self.state in RETRYABLE and self.state not in self.retry_on:
            text += f", not retried: retry_on {','.join(self.retry_on)}"
        return text

    def attempt_text(self) -> str:
        """Which attempt this is, where it tells something: "attempt 2/3" while the job runs
        or waits (more may come), "2 of 3 attempts" once it ended after a retry, and "" for a
        job without retries, or one that ended at its first attempt (nothing was retried,
        and `describe` says why when a retry was possible)."""
        if not self.retries or (self.ended and self.attempt == 1):
            return ""
        if self.ended:
            return f"{self.attempt} of {self.retries + 1} attempts"
        return f"attempt {self.attempt}/{self.retries + 1}"

    def _ending(self) -> str:
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
                return f"timed out after {format_duration(self.timeout)}"
            return "timed-out"
        return self.state

    def held_back(self) -> str:
        """What holds the job back, from the kernel's own counters, or "" when nothing does.

        It names a cause when that cause took at least 10% of the time: CPU throttling by a
        CPU quota (cumulative, so set against the running time: "throttled 41 s of 60 s"),
        and, on cgroup v2 while the job runs, the share of the last 10 s in which some task
        of the job waited for memory, disk IO or a CPU (PSI "some avg10"). CPU waiting is
        left out when throttling is named: a throttled task counts as waiting for a CPU.

        Returns:
            One short sentence per cause, joined by "; ", e.g. "held back by its CPU limit
            (0.2 CPUs): throttled 1.6 s of 2.0 s", "waiting for memory 35% of the last 10 s
            (near its 2 GiB limit)"; "" for a job that is simply slow, or not started.
        """
        share = 10.0  # percent: below it, a cause is noise, not the reason for slowness
        reasons = []
        elapsed, throttled, cpu = self.elapsed, self.cpu_throttled_seconds, self.limits.cpu
        throttling = bool(throttled and elapsed and 100 * throttled >= share * elapsed)
        if throttling:
            cause = (f"held back by its CPU limit ({cpu:g} CPU{'' if cpu == 1 else 's'})" if cpu
                     else "held back by CPU throttling")
            # The kernel sums throttling over the CPUs the job ran on: a busy job with several
            # threads can be throttled for longer than it has run.
            over = " (summed over its CPUs)" if throttled > elapsed else ""
            reasons.append(f"{cause}: throttled {format_elapsed(throttled)} of {format_elapsed(elapsed)}{over}")
        memory = self.limits.memory
        if self.memory_pressure is not None and self.memory_pressure >= share:
            used = self.memory_bytes if self.memory_bytes is not None else self.peak_memory_bytes or 0
            near = (f" (near its {format_size(memory)} limit)" if isinstance(memory, int) and used >= 0.9 * memory
                    else "")
            reasons.append(f"waiting for memory {self.memory_pressure:.0f}% of the last 10 s{near}")
        if self.io_pressure is not None and self.io_pressure >= share:
            capped = self.limits.io_read_bps is not None or self.limits.io_write_bps is not None
            reasons.append(f"waiting for disk IO {self.io_pressure:.0f}% of the last 10 s"
                           + (" (it has an IO limit)" if capped else ""))
        if not throttling and self.cpu_pressure is not None and self.cpu_pressure >= share:
            reasons.append(f"waiting for a CPU {self.cpu_pressure:.0f}% of the last 10 s")
        return "; ".join(reasons)

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
        if isinstance(data.get(RETRY_ON), list):
            data[RETRY_ON] = tuple(data[RETRY_ON])
        return cls(**data)


_KINDS: dict[str, tuple[tuple[type, ...], str]] = {
    "int": ((int,), "a whole number"), "float": ((int, float), "a number"), "bool": ((bool,), "true or false"),
    "str": ((str,), "text"),
}
# What a status file's fields hold: JobStatus's own fields of plain types (their annotations
# read as text, "int | None"), and the ones stored differently. A null passes: jobber's
# writers use it for "none" (an attempt not yet known, no error).
_RECORD_FIELDS: dict[str, tuple[tuple[type, ...], str]] = {
    **{f.name: _KINDS[base] for f in fields(JobStatus) if (base := str(f.type).partition(" | ")[0]) in _KINDS},
    "started_at": _KINDS["float"], "ended_at": _KINDS["float"], "error": _KINDS["str"],
}


def check_record(raw: dict[str, Any]) -> dict[str, Any]:
    """A status file's object, checked before anything reads it as a status: its ``state``
    is a job state, and each field a JobStatus is made of has that field's type.

    Jobber writes its status files whole; one that fails here was damaged or written by
    something else, and is refused with a sentence rather than read into a KeyError or a
    TypeError somewhere later (in a listing, that would end the whole listing).

    Args:
        raw: the JSON object of ``status.json`` (or of an attempt's).

    Returns:
        ``raw``, unchanged.

    Raises:
        JobError: which field is wrong, and how.
    """
    state = raw.get("state")
    if not isinstance(state, str) or state not in STATES:
        shown = "missing" if "state" not in raw else _shown(state)
        raise JobError(f"its field 'state' is {shown}, not one of {', '.join(STATES)}: not a status jobber wrote")
    for name, value in raw.items():
        kind = _RECORD_FIELDS.get(name)
        if kind is None or value is None:
            continue
        types, expected = kind
        if not isinstance(value, types) or (bool not in types and isinstance(value, bool)):
            raise JobError(f"its field {name!r} is {_shown(value)}, not {expected}: not a status jobber wrote")
    return raw


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
