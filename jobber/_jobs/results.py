"""A function job's outcome as its directory holds it, read without unpickling anything.

``read_result`` is what the backends of jobs kept on this host (local, Slurm) answer to
``Backend.read_result``, and what a jobber server sends its owner: ``result.json``'s
object and ``result.pkl``'s bytes. Unpickling is the owner's client's alone
(``jobber._jobs.pycall.load_result``).

A large result is handed over as its open file, not as bytes: ``pickle.load`` then reads
a numpy array's (protocol 5) buffer with one ``readinto`` straight into the array's own
memory, one copy from the page cache as a plain ``pickle.load`` of a local file does.
Reading it into bytes first, or mapping it, would cost a second copy (``pickle.loads``
copies a buffer out of the bytes it is given) or a page fault per page of the map.
"""

from __future__ import annotations

import json
import os
from typing import Any

from jobber._errors import JobError
from jobber._files import READ_MAX, read_regular
from jobber._jobs.jobdir import JobDir
from jobber._jobs.pycall import RESULT, RESULT_META
from jobber._jobs.spec import JobSpec
from jobber._jobs.status import JobStatus

__all__ = ["read_meta", "read_result"]

_STREAM_FROM = 1 << 20  # bytes: a result this large is unpickled from its file rather than read whole


def read_meta(jobdir: JobDir) -> dict[str, Any] | None:
    """``result.json`` of the job's last attempt, or None when it wrote none (yet)."""
    try:
        meta = json.loads(read_regular(jobdir.path / RESULT_META, READ_MAX))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise JobError(f"job {jobdir.job_id}'s {RESULT_META} cannot be read: {err}", job_id=jobdir.job_id) from err
    return meta if isinstance(meta, dict) else None


def read_result(jobdir: JobDir, job_id: int, spec: JobSpec, status: JobStatus) -> tuple[dict[str, Any], bytes]:
    """(``result.json``'s object, ``result.pkl``'s bytes) of an ended function job (a
    large one's open file instead, at its start: ``load_result`` reads and closes it).

    Raises:
        JobError: a command job; a job that has not ended; one that ended without a
            result, saying how it ended; or a result file that is not as long as its
            description says (cut short: never unpickled as if it were whole).
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
        f = open(jobdir.path / RESULT, "rb")  # a large one's goes to load_result, which closes it
        size = os.fstat(f.fileno()).st_size
        if size < _STREAM_FROM or size != meta["size"]:
            with f:
                data = f.read() if size == meta["size"] else b""
    except OSError as err:
        raise JobError(f"job {job_id}'s result cannot be read: {err.strerror or err}", job_id=job_id) from err
    if size != meta["size"]:
        # The runner renames a whole file into place and writes its length in result.json:
        # one of another length was cut short (a crash before the page cache reached the disk).
        raise JobError(f"job {job_id}'s result file is {size} bytes, not the {meta['size']} its description says "
                       "(cut short, by a crash?): run the job again (job.rerun())", job_id=job_id)
    return meta, f if size >= _STREAM_FROM else data


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
    if state == "failed" and status.exit_code is None and status.started_at is None and note:
        return f"never ran{note}"  # its launch failed: the note says why
    if status.signal:
        return f"was killed by signal {status.signal}{note}"
    return f"ended {state} (exit code {status.exit_code}) without writing a result{note}"
