"""The waiting line on disk: a lane per queue, an entry file per waiting job.

    <owner dir>/waiting/<lane>/<id>   a waiting job: {"queue", "after", "memory", "cpus", "gpus"};
                                      its lane is its queue (".none" without one), or
                                      ".after" while jobs it comes after have not ended
    <owner dir>/admitted/<id>         a job a pass started, until it ended: what it holds

An entry holds what a pass needs to admit the job without reading its spec. Entries are
written and moved only under the identity's admission lock (``admission.py``).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from jobber._errors import JobError
from jobber._files import read_json, write_atomic
from jobber._jobs.spec import JobSpec

__all__ = ["ADMITTED", "AFTER_LANE", "WAITING", "drop_entry", "entry_of", "find_entry", "ids", "lane_of", "queue_lane",
           "read_entry", "unlink", "waiting_count", "write_entry"]

WAITING = "waiting"
ADMITTED = "admitted"
AFTER_LANE = ".after"  # the lane of jobs whose dependencies have not all ended
_NO_QUEUE = ".none"  # the lane of jobs in no queue (waiting for GPUs)


def entry_of(spec: JobSpec) -> dict[str, Any]:
    """The entry of a job about to wait in line."""
    limits = spec.limits
    return {"queue": spec.queue, "after": [list(dep) for dep in spec.after], "memory": limits.memory,
            "cpus": limits.cpu, "gpus": limits.gpus or 0, "at": time.time()}


def lane_of(entry: dict[str, Any]) -> str:
    """The lane an entry waits in: ".after" until its dependencies ended, then its queue's."""
    if entry.get("after") and not entry.get("after_met"):
        return AFTER_LANE
    return entry.get("queue") or _NO_QUEUE


def queue_lane(spec: JobSpec) -> str:
    """The lane of the job's queue (where it waits once its dependencies ended)."""
    return spec.queue or _NO_QUEUE


def waiting_count(owner_dir: Path) -> int:
    """How many jobs wait in line, in every lane."""
    try:
        lanes = os.listdir(owner_dir / WAITING)
    except FileNotFoundError:
        return 0
    return sum(sum(1 for name in os.listdir(owner_dir / WAITING / lane) if name.isdigit()) for lane in lanes)


def write_entry(owner_dir: Path, job_id: int, entry: dict[str, Any]) -> None:
    """Put the job's entry in its lane."""
    lane = owner_dir / WAITING / lane_of(entry)
    lane.mkdir(mode=0o700, exist_ok=True)
    write_atomic(lane / str(job_id), json.dumps(entry).encode())


def find_entry(owner_dir: Path, job_id: int) -> Path | None:
    """The job's entry, in whichever lane it is; None when it is in none."""
    try:
        lanes = os.listdir(owner_dir / WAITING)
    except FileNotFoundError:
        return None
    for lane in lanes:
        path = owner_dir / WAITING / lane / str(job_id)
        if os.path.lexists(path):
            return path
    return None


def drop_entry(owner_dir: Path, job_id: int) -> None:
    """Take the job out of line (if it is in it)."""
    path = find_entry(owner_dir, job_id)
    if path is not None:
        unlink(path)


def ids(folder: Path) -> list[int]:
    """The job ids with an entry in ``folder`` (a lane, or ``admitted``), in order."""
    try:
        return sorted(int(name) for name in os.listdir(folder) if name.isdigit())
    except FileNotFoundError:
        return []


def read_entry(path: Path) -> dict[str, Any] | None:
    """An entry; None when it is gone, or unreadable (half-written by a writer that died):
    dropped as if gone, a job still waiting gets it back from its spec (``ensure_in_line``)."""
    try:
        return read_json(path, "admission entry")
    except JobError:
        return None


def unlink(path: Path) -> None:
    """Remove an entry that may already be gone."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
