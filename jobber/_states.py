"""The job states, and the one place that decides how a job ended.

``outcome`` reads a main process's wait status; ``ended`` makes the record of an ending no
wait status tells (the job never ran, its start failed, it was stopped between attempts,
nobody was left to wait for it). Every final ``status.json`` of a local job comes from one
of the two.

Standard library only: the supervisor island (``jobber._backends.local.supervisor``)
imports this module on every job's end, as do ``JobStatus`` and every backend. Facts
travel as fields (``exit_code``, ``signal``, ``oom_killed``), never as message text.
"""

from __future__ import annotations

import os
import time

__all__ = ["RETRYABLE", "STATES", "FINAL_STATES", "ended", "outcome"]

STATES = ("created", "pending", "running", "exited", "failed", "stopped", "oom-killed", "timed-out")
FINAL_STATES = frozenset({"exited", "failed", "stopped", "oom-killed", "timed-out"})
RETRYABLE = ("failed", "oom-killed", "timed-out")
"""The endings a job's ``retry_on`` may name (a stopped or exited job is never retried)."""


def outcome(wait_status: int, *, stopped: bool, oom: bool, timed_out: bool = False) -> dict:
    """How a job ended, from its main process's wait status and what else is known.

    Args:
        wait_status: as ``os.wait4`` returned it.
        stopped: somebody asked for the stop (``stop-requested`` exists).
        oom: the kernel's OOM killer struck inside the job's cgroup.
        timed_out: the supervisor stopped the job at its time limit.

    Returns:
        ``state``, ``exit_code``, ``signal`` and ``oom_killed``, as status.json holds them.
    """
    exit_code = os.waitstatus_to_exitcode(wait_status)
    result: dict = {"exit_code": None, "signal": None, "oom_killed": oom}
    if exit_code < 0:
        result["signal"] = -exit_code
    else:
        result["exit_code"] = exit_code
    if stopped:
        result["state"] = "stopped"  # a stop asked for before the time ran out wins
    elif timed_out:
        result["state"] = "timed-out"
    elif oom and exit_code != 0:
        result["state"] = "oom-killed"
    elif exit_code == 0:
        result["state"] = "exited"
    else:
        result["state"] = "failed"
    return result


def ended(state: str, error: str, *, exit_code: int | None = None, oom_killed: bool = False,
          ended_at: float | None = None) -> dict:
    """The final record of a job that ended without a wait status to decide how.

    Args:
        state: the final state, e.g. "failed" or "stopped".
        error: why, for people (``JobStatus.error``).
        exit_code: the exit code to report, when one stands for the failure (127: the
            command could not be started, as a shell says).
        oom_killed: the OOM killer struck the job's cgroup before it was cleaned up.
        ended_at: when it ended, in epoch seconds (default: now).

    Returns:
        ``state``, ``exit_code``, ``signal`` (None), ``oom_killed``, ``ended_at`` and
        ``error``, as status.json holds them.

    Raises:
        ValueError: ``state`` is not a final state.
    """
    if state not in FINAL_STATES:
        raise ValueError(f"{state!r} is not a final state: one of {', '.join(sorted(FINAL_STATES))}")
    return {"state": state, "exit_code": exit_code, "signal": None, "oom_killed": oom_killed,
            "ended_at": time.time() if ended_at is None else ended_at, "error": error}
