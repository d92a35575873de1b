"""How a job's end is told: one sentence, and a hook called once when it comes.

    end_message(12, "train", status)  -> "job 12 `train` exited (code 0) after 41 min 03 s"
    on_end(job, fn)                   -> fn(status) once, in a thread, when the job has ended

The JupyterLab Jobs panel's notification (``jobber_lab``), ``jobber wait ID --notify-cmd``
and ``job.on_end`` all say it with `end_message`, so a job's end reads the same wherever it
is announced. `on_end` waits through the public ``job.wait``, so it works for every
backend (a local job, a remote one, a Slurm one).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from jobber._jobs.status import JobStatus
from jobber._text import format_elapsed

__all__ = ["end_message", "on_end"]


def end_message(job_id: int, label: str | None, status: JobStatus) -> str:
    """One line that says how a job ended, for a notification.

    Args:
        job_id: the job's id.
        label: its label, or None.
        status: its final status (a status not ended reads as its state).

    Returns:
        e.g. "job 12 `train` exited (code 0) after 41 min 03 s", "job 13 killed: out of
        memory at 2 GiB after 3.2 s".
    """
    name = f"job {job_id}" + (f" `{label}`" if label else "")
    text = f"{name} {status.describe()}"
    if status.elapsed is not None and status.ended:
        text += f" after {format_elapsed(status.elapsed)}"
    return text


def on_end(job: Any, fn: Callable[[JobStatus], object], *, name: str | None = None) -> threading.Thread:
    """Call ``fn(status)`` once, in a daemon thread, when ``job`` has ended.

    The thread waits with ``job.wait()``. If the wait fails (the job was removed, a server
    went away), ``fn`` is not called: there is no end to tell. What ``fn`` raises stays in
    its thread (Python's ``threading.excepthook`` reports it), never in the caller's.

    Returns:
        The thread (started), e.g. to ``join`` it.
    """
    def watch() -> None:
        from jobber._errors import JobberError

        try:
            status = job.wait()
        except JobberError:
            return
        if status.ended:
            fn(status)

    thread = threading.Thread(target=watch, name=name or f"jobber-on-end-{job.id}", daemon=True)
    thread.start()
    return thread
