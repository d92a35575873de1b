"""A job as one row of the Jobs panel, and the counts of the status bar.

    Row: {"id", "label", "command", "kind", "state", "state_text", "created", "started",
          "ended", "elapsed_s", "memory_now", "memory_peak", "memory_limit", "cpu_limit",
          "attempt", "attempts", "pending_reason", "sweep", "notify"}

Times are ISO 8601 (UTC) or null; sizes in bytes, the CPU limit in cores, null where not
known or not set. ``state_text`` is what people read ("exited (code 0)", "killed: out of
memory at 2 GiB", "pending: 2 of 2 GPUs in use on this host"): ``JobStatus.describe``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from jobber import JobStatus
from jobber._jobs.job import spec_of

__all__ = ["counts", "job_row", "state_text", "sweep_of"]


def _iso(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    return value.isoformat(timespec="seconds")


def state_text(status: JobStatus) -> str:
    """What people read of a job's state: its ending, or why it waits."""
    if status.ended:
        return status.describe()
    if status.state == "pending" and status.note:
        return f"pending: {status.note}"
    attempt = status.attempt_text()
    return f"{status.state} ({attempt})" if attempt else status.state


def sweep_of(label: str | None) -> str | None:
    """The sweep a job belongs to: a sweep labels its jobs ``<label>-<n>`` (``jobber sweep``),
    so ``lr-3`` is of sweep ``lr``; None for a job without such a label."""
    if label is None:
        return None
    base, dash, number = label.rpartition("-")
    return base if dash and base and number.isdigit() else None


def job_row(job: Any, status: JobStatus) -> dict[str, Any]:
    """The panel's row for ``job`` with its ``status``."""
    spec = spec_of(job)
    limits = status.limits
    return {
        "id": job.id,
        "label": spec.label,
        "command": spec.command,
        "kind": "function" if spec.is_function else "command",
        "state": status.state,
        "state_text": state_text(status),
        "created": _iso(spec.created_at),
        "started": _iso(status.started_at),
        "ended": _iso(status.ended_at) if status.ended else None,
        "elapsed_s": status.elapsed,
        "memory_now": None if status.ended else status.memory_bytes,
        "memory_peak": status.peak_memory_bytes,
        "memory_limit": limits.memory,
        "cpu_limit": limits.cpu,
        "attempt": status.attempt,
        "attempts": status.retries + 1,
        "pending_reason": status.note or None if status.state == "pending" else None,
        "sweep": sweep_of(spec.label),
        "notify": spec.notify,
    }


def counts(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many rows are in each state: ``{"running": 3, "pending": 1, ...}`` (every state
    the status bar names is there, 0 when none)."""
    found = Counter(row["state"] for row in rows)
    return {"running": found["running"], "pending": found["pending"], "created": found["created"],
            **{state: n for state, n in found.items() if state not in ("running", "pending", "created")}}
