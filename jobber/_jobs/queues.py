"""Queues and dependencies of new jobs: names, settings on disk, and ``after``.

    <jobs dir>/<owner hash>/queues/<name>.json   {"parallel", "memory", "cpus", "gpus"}

A queue admits its jobs in order (FIFO) while fewer than ``parallel`` run and the sum of
the running jobs' limits fits its budget (``memory`` bytes, ``cpus``, ``gpus``). Settings
persist: they are one identity's, for every process and kernel that uses its jobs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jobber._errors import JobError
from jobber._files import read_json, write_atomic
from jobber._limits import parse_size

__all__ = ["AFTER_MODES", "QueueSettings", "check_after", "check_queue", "read_settings", "write_settings"]

AFTER_MODES = ("ok", "any")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
QueueSettings = dict  # {"parallel": int|None, "memory": int|None, "cpus": float|None, "gpus": int|None}


def check_queue(name: Any) -> str:
    """A queue's name: 1-64 letters, digits and ``_.+-``.

    Raises:
        JobError: anything else.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise JobError(f"queue {name!r} is not a queue name: use 1-64 letters, digits and _.+-, e.g. gpu")
    return name


def check_after(after: Any) -> list[list[Any]]:
    """``after``: job ids or Jobs, each alone (must exit 0) or as ``(id, "ok"|"any")``.

    Returns:
        ``[[id, mode], ...]`` as the spec records it.

    Raises:
        JobError: not ids, or an unknown mode.
    """
    if after is None:
        return []
    if isinstance(after, (int, str)) or hasattr(after, "id") or (isinstance(after, tuple) and len(after) == 2
                                                                and after[1] in AFTER_MODES):
        after = [after]
    checked = []
    for item in after:
        mode = "ok"
        if isinstance(item, (tuple, list)):
            if len(item) != 2 or item[1] not in AFTER_MODES:
                raise JobError(f"after: {item!r}: write a job id, or (id, \"ok\") / (id, \"any\")")
            item, mode = item
        job_id = getattr(item, "id", item)
        if isinstance(job_id, str) and job_id.strip().isdigit():
            job_id = int(job_id)
        if isinstance(job_id, bool) or not isinstance(job_id, int) or job_id < 1:
            raise JobError(f"after: {item!r} is not a job id (a positive whole number, or a Job)")
        checked.append([job_id, mode])
    return checked


def _settings_path(owner_dir: Path, name: str) -> Path:
    return owner_dir / "queues" / f"{check_queue(name)}.json"


def read_settings(owner_dir: Path, name: str) -> QueueSettings:
    """A queue's settings (all None for a queue never set: it admits every job at once)."""
    data = read_json(_settings_path(owner_dir, name))
    blank = {"parallel": None, "memory": None, "cpus": None, "gpus": None}
    return {**blank, **{k: v for k, v in (data or {}).items() if k in blank}}


def write_settings(owner_dir: Path, name: str, *, parallel: Any = None, memory: Any = None, cpus: Any = None,
                   gpus: Any = None) -> QueueSettings:
    """Set a queue's limits (a None keeps the current value; 0 removes the limit).

    Raises:
        JobError: a malformed value.
    """
    current = read_settings(owner_dir, name)
    if parallel is not None:
        current["parallel"] = _whole(parallel, "parallel") or None
    if memory is not None:
        current["memory"] = None if memory in (0, "0") else parse_size(memory, "the queue's memory")
    if cpus is not None:
        try:
            value = float(cpus)
        except (TypeError, ValueError):
            raise JobError(f"cpus must be a number of CPUs, e.g. 4 or 1.5, not {cpus!r}") from None
        if not value >= 0 or isinstance(cpus, bool):
            raise JobError(f"cpus must be a number of CPUs >= 0, not {cpus!r}")
        current["cpus"] = value or None
    if gpus is not None:
        current["gpus"] = _whole(gpus, "gpus") or None
    path = _settings_path(owner_dir, name)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    import json

    write_atomic(path, json.dumps(current).encode())
    return current


def _whole(value: Any, what: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise JobError(f"{what} must be a whole number >= 0 (0: no limit), not {value!r}")
    return value


def describe_settings(settings: QueueSettings) -> str:
    """ "parallel 2, memory 16 GiB, 2 GPUs", or "no limits"."""
    from jobber._limits import format_size

    parts = []
    if settings.get("parallel"):
        parts.append(f"parallel {settings['parallel']}")
    if settings.get("memory"):
        parts.append(f"memory {format_size(settings['memory'])}")
    if settings.get("cpus"):
        parts.append(f"{settings['cpus']:g} CPUs")
    if settings.get("gpus"):
        parts.append(f"{settings['gpus']} GPU{'s' if settings['gpus'] != 1 else ''}")
    return ", ".join(parts) or "no limits"
