"""A function job's outcome as its directory holds it, read without unpickling anything.

``read_result`` is what the backends of jobs kept on this host (local, Slurm) answer to
``Backend.read_result``, and what a jobber server sends its owner: ``result.json``'s
object and ``result.pkl``'s bytes. Unpickling is the owner's client's alone
(``jobber._jobs.pycall.load_result``).
"""

from __future__ import annotations

import json
import mmap
import os
from typing import Any

from jobber._errors import JobError
from jobber._jobs.jobdir import JobDir
from jobber._jobs.pycall import RESULT, RESULT_META
from jobber._jobs.spec import JobSpec
from jobber._jobs.status import JobStatus

__all__ = ["read_meta", "read_result"]

_MAP_FROM = 1 << 20  # bytes: a result this large is mapped rather than read


def read_meta(jobdir: JobDir) -> dict[str, Any] | None:
    """``result.json`` of the job's last attempt, or None when it wrote none (yet)."""
    try:
        with open(jobdir.path / RESULT_META, "rb") as f:
            meta = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise JobError(f"job {jobdir.job_id}'s {RESULT_META} cannot be read: {err}", job_id=jobdir.job_id) from err
    return meta if isinstance(meta, dict) else None


def read_result(jobdir: JobDir, job_id: int, spec: JobSpec, status: JobStatus) -> tuple[dict[str, Any], bytes]:
    """(``result.json``'s object, ``result.pkl``'s bytes) of an ended function job (a
    read-only ``mmap`` for a large one: bytes-like, as ``pickle.loads`` takes).

    Raises:
        JobError: a command job; a job that has not ended; or one that ended without a
            result, saying how it ended.
    """
    if not spec.is_function:
        raise JobError(f"job {job_id} is a command job: it has no result (its output is in its log)", job_id=job_id)
    if not status.ended:
        raise JobError(f"job {job_id} is {status.state}: it has no result until it ends (job.result() waits)",
                       job_id=job_id)
    meta = read_meta(jobdir)
    if meta is None:
        raise JobError(f"job {job_id} {_ending(status)}, so its function returned nothing", job_id=job_id)
    if not meta.get("size"):
        return meta, b""
    try:
        with open(jobdir.path / RESULT, "rb") as f:
            if os.fstat(f.fileno()).st_size < _MAP_FROM:
                return meta, f.read()
            # A large result is unpickled straight from the page cache, not copied first
            # (the runner renames a finished file into place: it never changes under the map).
            return meta, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError) as err:
        raise JobError(f"job {job_id}'s result cannot be read: {err.strerror or err}", job_id=job_id) from err


def _ending(status: JobStatus) -> str:
    """How a job that wrote no result ended, as a phrase ("was OOM-killed (memory 150M)")."""
    state = status.state
    if state == "oom-killed":
        return "was OOM-killed: its memory limit was too small (give it more memory, or oom_growth with retries)"
    if state == "timed-out":
        return "timed out (its timeout passed)"
    if state == "stopped":
        return "was stopped"
    note = f": {status.note}" if getattr(status, "note", None) else ""
    if status.signal:
        return f"was killed by signal {status.signal}{note}"
    return f"ended {state} (exit code {status.exit_code}) without writing a result{note}"
