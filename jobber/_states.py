"""The job states, and the one function that decides how a job ended.

Standard library only: the supervisor island (``jobber._backends.local.supervisor``)
imports this module on every job's end, as do ``JobStatus`` and every backend. Facts
travel as fields (``exit_code``, ``signal``, ``oom_killed``), never as message text.
"""

from __future__ import annotations

import os

__all__ = ["STATES", "FINAL_STATES", "outcome"]

STATES = ("created", "pending", "running", "exited", "failed", "stopped", "oom-killed", "timed-out")
FINAL_STATES = frozenset({"exited", "failed", "stopped", "oom-killed", "timed-out"})


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
