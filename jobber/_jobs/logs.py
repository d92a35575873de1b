"""Reading a job's log: ``tail`` (readinto) and ``follow`` (live, inotify-driven).

Readers stream: each holds one chunk buffer, however large the log or fast the writer.
Both read the log as ``logcut`` defines it once ``log_max`` has cut it: the head, one
marker line, the newest bytes; offsets are positions in that logical log.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

from jobber._errors import JobError
from jobber._inotify import IN_CLOSE_WRITE, IN_CREATE, IN_MODIFY, IN_MOVED_TO, Inotify
from jobber._jobs import logcut

__all__ = ["tail", "follow", "tail_view", "check_offset", "CHUNK"]

CHUNK = 256 * 1024
# The follow loop sleeps on inotify; this only bounds how long a follower takes to notice
# a supervisor that died without writing its final status (it cannot send an event).
_LIVENESS_CHECK_S = 1.0


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


def follow(log: Path, offset: int, ended: Callable[[], bool], heartbeat: float | None = None,
           moved_to: Path | None = None) -> Iterator[bytes]:
    """Yield the log's bytes from ``offset`` as they are written, until the job ended.

    Args:
        log: the log file (it may not exist yet).
        offset: where to start; negative counts back from the current end.
        ended: True once the job's main process has ended (its status is final). The
            end is decided from the job, not from EOF: an orphan may hold the log open.
        heartbeat: if set, yield ``b""`` whenever this many seconds pass without output.
        moved_to: where ``log`` is renamed once it is over (a retried job's attempt goes
            to ``attempts/<n>/log``, and the next attempt's log takes its name): the
            follower reads that file whenever the rename came before its open.

    Yields:
        Chunks of at most ``CHUNK`` bytes, untouched; where the cap dropped bytes the
        follower had not read yet (the writer outran it), a marker line saying how many.
    """
    check_offset(offset)
    with Inotify() as inotify:
        # Watch the directory before the first read, so no write between the read and
        # the wait goes unnoticed: events on the log and on status.json both land here.
        inotify.add_watch(log.parent, IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_CREATE)
        fd = -1
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        try:
            finished = ended()
            while True:
                if fd < 0:
                    fd = _open(log, moved_to)
                    if fd >= 0:
                        # From here on ``offset`` is a file offset: the cut may move under
                        # a running job, the follower's place in the file does not.
                        pending, offset = logcut.locate(fd, offset)
                        if pending:
                            yield pending
                if fd >= 0:
                    n, resume = logcut.read_kept(fd, view, offset)
                    if resume is not None:
                        yield logcut.marker(resume - offset)
                        offset = resume
                        continue
                    if n:
                        offset += n
                        yield bytes(view[:n])
                        continue
                if finished:
                    return  # drained after the end: nothing more will come
                events = inotify.wait(_LIVENESS_CHECK_S if heartbeat is None else min(heartbeat, _LIVENESS_CHECK_S))
                if heartbeat is not None and not events:
                    yield b""
                if not events or any(name == b"status.json" for _mask, name in events):
                    # Read once more after the end is seen: the last bytes may have
                    # landed between our read and the status write.
                    finished = ended()
        finally:
            if fd >= 0:
                os.close(fd)


def _open(log: Path, moved_to: Path | None) -> int:
    """The log's descriptor, or -1 while it does not exist yet.

    The rename to ``moved_to`` is atomic and final, so its absence *after* our open
    proves we opened the log before the rename (the file we follow); a file there that is
    not the one we opened means ``log`` already names a later attempt's: read the moved one.
    """
    try:
        fd = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = -1
    if moved_to is None:
        return fd
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
