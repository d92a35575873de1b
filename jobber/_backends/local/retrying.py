"""Retries: when an attempt ends the way ``retry_on`` names, the next one starts.

The finisher (``supervisor.py --finish``, run once an attempt's main process ended)
asks :func:`hand_over` before it records the outcome. When the job has a retry left, the
attempt's files move to ``attempts/<n>/`` (its ``status.json``, ``log`` and
``confinement.json``), ``status.json`` says "pending" with why and when the next attempt
starts, and the finisher *execs* ``run_next_attempt.py``: the same process (same pid, same start
time) goes on supervising, so the job is never without a live supervisor and nothing
needs a kernel alive. ``run_next_attempt.py`` waits out the backoff, then starts the next attempt
through the launcher, as ``start()`` does; a stop during the backoff ends the job
"stopped" without starting it.

    spec.json      retries, retry_on (default ["failed"]), oom_growth, oom_growth_max (``JobSpec``)
    attempt.json   the attempt now running, from the second on, and its limits (memory
                   grown after an OOM kill); absent: attempt 1 with the spec's limits

Standard library only (plus jobber's atomic write, and the job spec once an attempt
failed): it runs in the finisher's bare interpreter.
"""

from __future__ import annotations

import json
import math
import os
import sys
from typing import TYPE_CHECKING, Any

from jobber._errors import JobError
from jobber._files import read_json, write_atomic
from jobber._jobs.spec_names import RETRIES
from jobber._text import format_size

if TYPE_CHECKING:
    from jobber._jobs.spec import JobSpec

__all__ = ["ATTEMPT", "ATTEMPTS", "RETRIED", "backoff", "hand_over", "grown_memory", "release_watchdog"]

ATTEMPTS = "attempts"
ATTEMPT = "attempt.json"  # the attempt now running (2 on) and its limits: {"attempt", "limits"}
RETRIED = "retried"  # in attempts/<n>/status.json: why and when attempt n + 1 started
_BACKOFF_FIRST_S = 1.0
_BACKOFF_MAX_S = 300.0
_MIB = 1 << 20
# What one attempt leaves that the next must not inherit (its outcome markers; a function
# job's result, so that result() reads the last attempt's, or none if the last wrote none).
_PER_ATTEMPT = ("status.json", "log", "confinement.json", "timed-out", "pid", "launched", "result.json", "result.pkl")


def backoff(attempt: int) -> float:
    """Seconds to wait before ``attempt`` (2, 3, ...): 1 s, then doubling, at most 5 min.

    ``$JOBBER_RETRY_BACKOFF`` sets the first delay (seconds; "0" for none).
    """
    try:
        first = float(os.environ.get("JOBBER_RETRY_BACKOFF", _BACKOFF_FIRST_S))
    except ValueError:
        first = _BACKOFF_FIRST_S
    if not math.isfinite(first) or first < 0:
        first = _BACKOFF_FIRST_S
    return min(first * 2 ** max(0, attempt - 2), _BACKOFF_MAX_S)


def grown_memory(spec: JobSpec | dict[str, Any], memory: int | None, oom: bool) -> int | None:
    """The next attempt's memory limit: x ``oom_growth`` after an OOM kill, up to the cap.

    Args:
        spec: the job's spec (or ``spec.json``'s object).
        memory: the ended attempt's memory limit.
        oom: whether the attempt was OOM-killed.
    """
    spec = _typed(spec)
    growth = spec.oom_growth
    if not oom or not growth or not memory:
        return memory
    grown = math.ceil(memory * float(growth) / _MIB) * _MIB
    cap = spec.oom_growth_max or _host_memory()
    return max(memory, min(grown, cap)) if cap else grown


def _typed(spec: JobSpec | dict[str, Any]) -> JobSpec:
    # Imported here, not above: only a job whose attempt failed pays for reading its spec
    # (dataclasses and the limits: ~20 ms in the finisher's bare interpreter).
    from jobber._jobs.spec import JobSpec

    return spec if isinstance(spec, JobSpec) else JobSpec.from_json(spec)


def _host_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def release_watchdog(fd: int | None) -> None:
    """Tell the job's watchdog (see ``launcher.c``) that its supervisor saw the attempt
    through: the outcome is recorded, or the next attempt runs under a supervisor (and a
    watchdog) of its own. Without this byte, the pipe's EOF says the supervisor died."""
    if fd is None:
        return
    try:
        os.write(fd, b".")
        os.close(fd)
    except OSError:
        pass  # the watchdog itself was killed: nothing is waiting


def _archive(job_dir: str, archive: str, final: dict, attempt: int, limits: dict, note: str,
             moved: list[str]) -> None:
    """Move the ended attempt's files to ``archive``, naming each in ``moved`` as it goes."""
    os.makedirs(archive, mode=0o700, exist_ok=True)
    # RETRIED: what a follower that reads this attempt after the next one began says
    # between the two logs (the "pending" status below may be gone by then).
    write_atomic(os.path.join(archive, "status.json"),
                 json.dumps({**final, "attempt": attempt, "limits": limits, RETRIED: note}).encode())
    for name in _PER_ATTEMPT[1:]:
        try:
            os.rename(os.path.join(job_dir, name), os.path.join(archive, name))
        except FileNotFoundError:
            continue
        moved.append(name)


def _put_back(job_dir: str, archive: str, moved: list[str]) -> None:
    """Undo a hand-over that failed part-way (a full disk): the attempt's files where they were."""
    for name in moved:
        try:
            os.rename(os.path.join(archive, name), os.path.join(job_dir, name))
        except OSError:
            pass
    try:
        os.unlink(os.path.join(archive, "status.json"))
    except OSError:
        pass
    for folder in (archive, os.path.dirname(archive)):  # attempts/ too, unless earlier attempts are in it
        try:
            os.rmdir(folder)
        except OSError:
            break


def hand_over(job_dir: str, final: dict, *, failed_to_start: bool = False, watchdog_fd: int | None = None) -> None:
    """Start the next attempt if the job has one left for this ending; else return.

    Called by the finisher with the outcome it is about to record. When a retry is due
    this never returns: the process becomes ``run_next_attempt.py`` (``os.execv``), which inherits
    ``watchdog_fd`` and releases the watchdog once the next attempt has started.

    Raises:
        OSError: the hand-over could not be written (``DiskFull``); what it had moved is
            back in place, so the finisher records this attempt's outcome.
    """
    if failed_to_start or final.get("state") in ("stopped", "exited"):  # "exited" is never retried
        return
    try:
        raw = read_json(os.path.join(job_dir, "spec.json"), "spec") or {}  # none: no retries
        if not raw.get(RETRIES):
            return  # no retries: the spec's types are not loaded for nothing (~20 ms)
        spec = _typed(raw)
        attempt = int((read_json(os.path.join(job_dir, ATTEMPT), ATTEMPT) or {}).get("attempt", 1))
    except (JobError, ValueError, TypeError, ImportError):  # ImportError: jobber upgraded under a running job
        return
    retries = int(spec.retries or 0)
    if attempt > retries or final.get("state") not in spec.retry_on:
        return
    if os.path.exists(os.path.join(job_dir, "stop-requested")):
        return
    current = read_json(os.path.join(job_dir, ATTEMPT), ATTEMPT) or {}
    limits = dict(current.get("limits") or spec.limits.to_dict())
    memory = limits.get("memory")
    grown = grown_memory(spec, memory, final.get("state") == "oom-killed")
    nxt, delay = attempt + 1, backoff(attempt + 1)
    how = final["state"] + (f" at {format_size(memory, digits=4)}" if final["state"] == "oom-killed" and memory else "")
    note = f"attempt {attempt} of {retries + 1} {how}; attempt {nxt} starts in {delay:g} s"
    if grown != memory and grown:
        note += f" with memory {format_size(grown, digits=4)}"
    archive = os.path.join(job_dir, ATTEMPTS, str(attempt))
    moved: list[str] = []
    try:
        _archive(job_dir, archive, final, attempt, limits, note, moved)
        with open(f"/proc/{os.getpid()}/stat", "rb") as f:
            stat = f.read()
        write_atomic(os.path.join(job_dir, "status.json"), json.dumps({
            "state": "pending", "attempt": nxt, "note": note, "started_at": final.get("started_at"),
            "supervisor_pid": os.getpid(), "supervisor_start": int(stat[stat.rindex(b")") + 2:].split()[19]),
            "previous": {k: final.get(k) for k in ("state", "exit_code", "signal", "peak_memory_bytes", "cpu_seconds")},
        }).encode())
        # After the "pending" status, not before: the running status (which names no attempt)
        # would otherwise read as attempt `nxt` running before it exists.
        write_atomic(os.path.join(job_dir, ATTEMPT),
                     json.dumps({"attempt": nxt, "limits": {**limits, "memory": grown}}).encode())
    except OSError:
        _put_back(job_dir, archive, moved)  # the finisher records this attempt's outcome instead
        raise
    package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    # As the supervisor does: jobber's package without its __init__ (which loads
    # cryptography), so a retry costs the interpreter and the job modules only.
    boot = ("import sys, types; jobber = types.ModuleType('jobber'); jobber.__path__ = [sys.argv[1] + '/jobber']; "
            "sys.modules['jobber'] = jobber; "
            "from jobber._backends.local.run_next_attempt import main; sys.exit(main(sys.argv[2:]))")
    os.execv(sys.executable, [sys.executable, "-I", "-S", "-c", boot, package_parent, job_dir, repr(delay),
                              *([] if watchdog_fd is None else [str(watchdog_fd)])])
