"""The last lines of a job's log, read backwards through ``Job.tail``.

Shared by ``jobber logs -n``, ``%jobber_tail`` and the live view's look back. It uses only
``Job.tail``, so it works alike for every backend (local, Slurm, remote).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobber._jobs.job import Job

__all__ = ["last_lines"]


def last_lines(job: Job, lines: int, *, max_window: int = 64 << 20) -> bytes:
    """Return the last ``lines`` lines of a job's log, as the log holds them.

    The end of the log is read in growing windows (64 KiB, then 4 times more each time)
    until it holds enough lines. A trailing newline ends the last line rather than
    starting an empty one.

    Args:
        job: the job whose log to read (local, Slurm or remote alike).
        lines: how many lines; 0 or less gives ``b""``.
        max_window: the most bytes to read from the end of the log (at least 1): when
            the lines hold more, only their last ``max_window`` bytes are returned.

    Returns:
        The bytes of those lines, newlines included; the whole log when it has fewer.
        ``job.follow(-len(result))`` follows the log from their first byte on.

    Raises:
        JobError: the log cannot be read.
    """
    if lines <= 0:
        return b""
    window = min(1 << 16, max_window)
    while True:
        buf = bytearray(window)
        n = job.tail(buf, -window)
        data = bytes(buf[:n])
        body = data[:-1] if data.endswith(b"\n") else data
        if body.count(b"\n") >= lines or n < window or window >= max_window:
            break
        window = min(window * 4, max_window)
    cut = len(body)
    for _ in range(lines):
        cut = body.rfind(b"\n", 0, cut)
        if cut < 0:
            return data
    return data[cut + 1 :]
