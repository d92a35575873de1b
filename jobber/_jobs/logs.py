"""Reading a job's log: ``tail`` (readinto) and ``follow`` (live, inotify-driven).

Readers stream: each holds one chunk buffer, however large the log or fast the writer.
Both read the log as ``logcut`` defines it once ``log_max`` has cut it: the head, one
marker line, the newest bytes; offsets are positions in that logical log. A follow's
decisions are ``follow.FollowReader``'s; :class:`LogFiles` does its file side, here and
for the server's asyncio follower, and this module's loop only waits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from jobber._backends.local.retrying import ATTEMPTS, RETRIED
from jobber._errors import JobError, JobNotFound
from jobber._files import read_json
from jobber._inotify import IN_CLOSE_WRITE, IN_CREATE, IN_MODIFY, IN_MOVED_TO, Inotify
from jobber._jobs import logcut
from jobber._jobs.follow import Emit, FollowReader, JobFacts, Look, NextAttempt, Open, Read, Wait, news

if TYPE_CHECKING:
    from jobber._jobs.status import JobStatus

__all__ = ["tail", "follow", "follow_job", "tail_view", "check_offset", "CHUNK", "LogFiles", "WATCH_MASK",
           "open_attempt_log", "retry_note", "removed_error", "watch_job_dir"]

CHUNK = 256 * 1024
# What a follower watches in the job's directory: writes to the log, its creation (the
# next attempt's) and the rename of a new status.json into place.
WATCH_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE


def removed_error(job_dir: Path) -> JobNotFound:
    """What a reader of a job whose directory is gone says: the job was removed
    (``jobber rm``, a prune, ``job.remove()``), its log and status with it."""
    job_id = int(job_dir.name) if job_dir.name.isdigit() else -1
    return JobNotFound(job_id, f"job {job_id} was removed (its directory {job_dir} is gone, "
                               "its log and status with it)")


def watch_job_dir(inotify: Inotify, job_dir: Path, mask: int) -> int:
    """``inotify.add_watch`` on a job's directory.

    Raises:
        JobNotFound: the directory is gone: the job was removed.
    """
    try:
        return inotify.add_watch(job_dir, mask)
    except FileNotFoundError as err:
        raise removed_error(job_dir) from err


def check_offset(offset: object) -> None:
    """Offsets are ints (bool is not): anything else is the caller's mistake, said plainly."""
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise JobError(f"offset must be an int, not {type(offset).__name__}")


def tail_view(buf: bytearray | memoryview, offset: int) -> memoryview:
    """Check ``tail``'s arguments (local and remote alike); returns ``buf`` as bytes to fill."""
    check_offset(offset)
    try:
        view = memoryview(buf).cast("B")
    except TypeError as err:
        raise JobError(f"buf must be a writable buffer such as a bytearray, not {type(buf).__name__}") from err
    if view.readonly:
        raise JobError("buf is read-only: pass a bytearray or a writable memoryview")
    return view


def tail(log: Path, buf: bytearray | memoryview, offset: int = 0) -> int:
    """Copy log bytes from ``offset`` into ``buf``; negative offsets count from the end.

    Returns:
        How many bytes were copied (0 at or past the end, or before the log exists).

    Raises:
        JobError: ``buf`` is not a writable buffer or ``offset`` is not an int.
    """
    view = tail_view(buf, offset)
    try:
        fd = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        return logcut.read_logical(fd, view, offset)[1]
    finally:
        os.close(fd)


def follow(log: Path, offset: int, ended: Callable[[], bool], heartbeat: float | None = None) -> Iterator[bytes]:
    """Yield one log's bytes from ``offset`` as they are written, until the job ended.

    For a job without attempts (Slurm's); :func:`follow_job` follows each attempt's log.

    Args:
        log: the log file (it may not exist yet).
        offset: where to start; negative counts back from the current end.
        ended: True once the job's main process has ended (its status is final). The
            end is decided from the job, not from EOF: an orphan may hold the log open.
        heartbeat: if set, yield ``b""`` whenever this many seconds pass without output.

    Yields:
        Chunks of at most ``CHUNK`` bytes, untouched; where the cap dropped bytes the
        follower had not read yet (the writer outran it), a marker line saying how many.

    Raises:
        JobNotFound: the job was removed before or while it was followed.
    """
    check_offset(offset)
    reader = FollowReader(offset, chunk=CHUNK, heartbeat=heartbeat)
    yield from _follow(LogFiles(reader, log, lambda: JobFacts(ended())))


def follow_job(job_dir: Path, offset: int, status: Callable[[], JobStatus],
               heartbeat: float | None = None) -> Iterator[bytes]:
    """Yield a job's log from ``offset``, and every later attempt's after a marker line.

    ``offset`` 0 is the job's first byte: the first attempt's log, however many
    attempts have run since; any other offset is a place in the current attempt's log,
    as ``tail`` reads it. A job that waits (in a queue, for jobs it comes after, for GPUs,
    or between two attempts) is waited for, with heartbeats, and followed once it runs.
    The rules are :class:`~jobber._jobs.follow.FollowReader`'s.

    Args:
        job_dir: the job's directory (its log is ``log`` there, an ended attempt's
            ``attempts/<n>/log``).
        offset: where to start; negative counts back from the current end.
        status: the job's status now.
        heartbeat: if set, yield ``b""`` whenever this many seconds pass without output.

    Yields:
        As :func:`follow`, and between two attempts' logs the line that says why the
        next one started.

    Raises:
        JobNotFound: the job was removed before or while it was followed (its directory
            is gone: noticed at the next look at its status, within ``LIVENESS_CHECK_S``).
    """
    check_offset(offset)
    reader = FollowReader(offset, chunk=CHUNK, heartbeat=heartbeat)
    yield from _follow(LogFiles(reader, job_dir / "log", lambda: JobFacts.of(status())))


def _wait_for_news(inotify: Inotify, timeout: float) -> set[bytes]:
    """The names of what changed that a follower acts on (``follow.news``), waiting out
    ``timeout`` through other changes; empty on a timeout."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        changed = [name for _mask, name in inotify.wait(max(0.0, left))]
        if not changed or (found := news(changed)) or left <= 0:
            return found if changed else set()


def _follow(files: LogFiles) -> Iterator[bytes]:
    with Inotify() as inotify, files:
        # Watch the directory before the first read, so no write between the read and
        # the wait goes unnoticed: events on the log and on status.json both land here.
        watch_job_dir(inotify, files.log.parent, WATCH_MASK)
        while (out := files.next()) is not None:
            if isinstance(out, Wait):
                files.reader.woke(_wait_for_news(inotify, out.timeout))
            else:
                yield out


class LogFiles:
    """The file side of one follow: does what its reader asks, on the job's log files.

    Shared by the blocking :func:`follow` and the server's asyncio follower
    (``_server/watch.py``), which differ only in how they wait. A context manager that
    closes the log it holds open.

    Args:
        reader: the follow's decisions.
        log: the job's log; an ended attempt's is ``attempts/<n>/log`` beside it.
        look: the job's status now, as the reader needs it.
    """

    def __init__(self, reader: FollowReader, log: Path, look: Callable[[], JobFacts]) -> None:
        self.reader = reader
        self.log = log
        self._look = look
        self._fd = -1
        self._view = memoryview(bytearray(reader.chunk))

    def next(self) -> bytes | Wait | None:
        """Do what the reader asks until there are bytes to yield (``b""``: a heartbeat),
        a wait for the driver (answer ``reader.woke``), or the end (None).

        Raises:
            JobNotFound: the job was removed (its directory is gone).
        """
        reader = self.reader
        while True:
            action = reader.next_action()
            if isinstance(action, Read):
                n, resume = logcut.read_kept(self._fd, self._view[: action.size], action.pos)
                reader.read(n, resume)
                if n:
                    return bytes(self._view[:n])
            elif isinstance(action, Emit):
                return action.data
            elif isinstance(action, Wait):
                return action
            elif isinstance(action, Look):
                facts = self._look()
                # A removed job's status may read as a new one's (no status.json): the
                # directory itself says it is gone, whatever the backend.
                if not os.path.isdir(self.log.parent):
                    raise removed_error(self.log.parent)
                reader.saw(facts)
            elif isinstance(action, Open):
                self._fd = open_attempt_log(self.log, action.attempt)
                if self._fd < 0:
                    reader.missing()
                else:
                    # From here on the offset is a file offset: the cut may move under a
                    # running job, the follower's place in the file does not.
                    reader.opened(*logcut.locate(self._fd, action.offset))
            elif isinstance(action, NextAttempt):
                self.close()
                reader.next_attempt(retry_note(self.log.parent, action.attempt))
            else:
                return None

    def close(self) -> None:
        """Close the log held open, if any (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> LogFiles:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_attempt_log(log: Path, attempt: int) -> int:
    """A descriptor of ``attempt``'s log, wherever it is now, or -1 while there is none.

    A retry renames the ended attempt's log to ``attempts/<n>/log`` as the next attempt's
    log takes its name. The rename is atomic and final, so its absence *after* our open
    proves we opened the log before the rename (the file we follow); a file there that is
    not the one we opened means ``log`` already names a later attempt's: read the moved one.
    """
    moved_to = log.parent / ATTEMPTS / str(attempt) / "log"
    try:
        fd = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1
    try:
        moved = os.stat(moved_to)
    except FileNotFoundError:
        return fd
    if fd >= 0:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) == (moved.st_dev, moved.st_ino):
            return fd
        os.close(fd)
    try:
        return os.open(moved_to, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return -1  # the job was removed meanwhile


def retry_note(job_dir: Path, attempt: int) -> str:
    """Why the attempt after ``attempt`` started, as the retry archived it ("" if unknown).

    Raises:
        JobError: the archived status exists but cannot be read.
    """
    archived = read_json(job_dir / ATTEMPTS / str(attempt) / "status.json", f"status of attempt {attempt}") or {}
    return str(archived.get(RETRIED) or "")
