"""The reads of the events feed, done in its pool: never on the Jupyter server's event loop.

Each returns what it read for the loop to apply: a job as ``(job, row, end message or
None)``, None when the job is gone, :data:`UNREADABLE` when it cannot be read yet (half
made: its ``spec.json`` comes later, and its watch says when).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jobber import JobberError, JobNotFound
from jobber._inotify import Inotify
from jobber._jobs.ending import end_message
from jobber_lab._rows import counts, job_row

__all__ = ["BROKEN", "UNREADABLE", "USAGE", "ended", "job_id_of", "last_memories", "list_local", "list_remote", "list_rows",
           "read_jobs",
           "snapshot_text"]

UNREADABLE = object()
BROKEN = (JobberError, OSError, ValueError, TypeError, KeyError, AttributeError)
"""What reading a job whose files are not jobber's raises: that job cannot be shown, the rest
can. (The core says a spec or a status of the wrong types with a JobError; TypeError,
AttributeError and KeyError stay for files damaged in ways no check foresaw.)"""
USAGE = "usage"
log = logging.getLogger(__name__)


def job_id_of(name: bytes | str) -> int | None:
    """The job id a directory entry's name is, or None (not a job's directory)."""
    text = name.decode(errors="replace") if isinstance(name, bytes) else name
    return int(text) if text.isdigit() and not text.startswith("0") and len(text) < 19 else None


def _last_memory(path: os.PathLike[str]) -> int | None:
    """The memory of the last complete sample of a usage file (``jobber._usage``), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)  # (a FIFO: no wait)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, 256, max(0, size - 256))
    finally:
        os.close(fd)
    lines = tail.split(b"\n")
    for line in reversed(lines[:-1]):  # the last piece: unfinished, or b""
        fields = line.split()
        if len(fields) == 4 and not line.startswith(b"#"):
            return int(fields[1]) if fields[1].isdigit() else None
    return None


def list_rows(session: Any) -> list[dict[str, Any]]:
    """Every job of ``session`` as a row, newest first (blocking: status reads); a job
    removed meanwhile, or whose files cannot be read, is left out (not the whole list)."""
    rows = []
    for job in session.get_jobs():
        read = _read_one(session, job.id, job)
        if read is not None and read is not UNREADABLE:
            rows.append(read[1])
    rows.sort(key=lambda row: row["id"], reverse=True)
    return rows


def _read_one(session: Any, job_id: int, job: Any) -> Any:
    """``(job, row, end message or None)``; None when removed; ``UNREADABLE`` when not readable yet."""
    try:
        job = job or session.get_job(job_id)
        status = job.status()
        row = job_row(job, status)
    except JobNotFound:
        return None
    except BROKEN as err:
        # A job half made (no spec yet) reads later, when its spec.json lands; files that
        # are not jobber's (a spec of the wrong types) leave that job out, not the feed.
        log.debug("jobber: job %s not readable yet: %s", job_id, err)
        return UNREADABLE
    return job, row, end_message(job.id, row["label"], status) if ended(row) else None


def read_jobs(session: Any, known: dict[int, Any]) -> dict[int, Any]:
    """The jobs of ``known`` (id -> the job, or None when not yet got) read anew."""
    return {job_id: _read_one(session, job_id, job) for job_id, job in known.items()}


def list_local(session: Any, directory: Path, inotify: Inotify, dir_mask: int, job_mask: int) -> dict[Any, Any]:
    """Watch the identity's directory and each job's, then read every job (in that order:
    a change after its watch is in the queue the loop reads next)."""
    watches: dict[int, int | None] = {}
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        watches[inotify.add_watch(directory, dir_mask)] = None
        names = os.listdir(directory)
    except OSError as err:
        log.warning("jobber: cannot watch %s: %s", directory, err)
        names = []
    found: dict[Any, Any] = {}
    for job_id in filter(None, map(job_id_of, names)):
        try:
            watches[inotify.add_watch(directory / str(job_id), job_mask)] = job_id
        except OSError:
            continue  # removed since the listing
        read = _read_one(session, job_id, None)
        if read is not None and read is not UNREADABLE:
            found[job_id] = read
    found["watches"] = watches
    return found


def list_remote(session: Any) -> dict[int, Any]:
    """Every job of a jobber server's identity, read (id -> ``(job, row, message)``)."""
    found = {}
    for job in session.get_jobs():
        read = _read_one(session, job.id, job)
        if read is not None and read is not UNREADABLE:
            found[job.id] = read
    return found


def last_memories(directory: Path, ids: list[int]) -> dict[int, int | None]:
    """The running jobs' memory from their supervisors' last usage samples (None: none yet)."""
    return {job_id: _last_memory(directory / str(job_id) / USAGE) for job_id in ids}


def snapshot_text(rows: Iterable[dict[str, Any]]) -> tuple[str, dict[str, int]]:
    """The snapshot message of ``rows`` (newest first), and their counts."""
    ordered = sorted(rows, key=lambda row: row["id"], reverse=True)
    found = counts(ordered)
    return json.dumps({"type": "snapshot", "jobs": ordered, "counts": found}), found


def ended(row: dict[str, Any]) -> bool:
    """Whether the job of ``row`` ended."""
    return row["state"] not in ("created", "pending", "running")
