"""Reading a log that ``log_max`` has cut, from the file alone (standard library only).

A capped log keeps its offsets: the supervisor punches the dropped bytes out of the file
(``fallocate(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)``) instead of moving any. So the
file is a head ``[0, H)``, one hole ``[H, P)``, and the kept tail ``[P, size)``, and a
reader finds the cut with ``lseek``: ``H = SEEK_HOLE from 0`` (when it is before the end),
``P = SEEK_DATA from H``. No side file is needed, and local readers, the server and the
CLI all see the same thing.

Readers see the *logical* log: the head, one marker line that says how much was dropped
(``marker()``), then the tail. A logical offset below ``H`` is the same byte in the file;
past the marker, logical ``x`` is file offset ``P + x - H - len(marker)``. Without a cut
both are the same. A read never returns bytes of the hole: a range punched while it was
read is dropped (``read_kept``).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Cut", "LOG_STOPPED", "find_cut", "marker", "read_kept", "read_logical", "locate", "dropped_bytes",
           "stopped_note"]

# Beside the log: why the supervisor stopped it (its filesystem was nearly full), written
# by launcher.c and logcap.py, which use the same name.
LOG_STOPPED = "log-stopped"


def marker(dropped: int) -> bytes:
    """The line that stands for ``dropped`` bytes the cap removed (b"" for none).

    It says only what the reader knows from the file: how many bytes went, and why.
    """
    if dropped <= 0:
        return b""
    return (f"\n[jobber: {dropped} bytes ({_human(dropped)}) of output dropped here: "
            f"log_max keeps the log's head and its newest bytes]\n").encode()


def _human(size: int) -> str:
    """The marker's own wording of a size, deliberately not ``format_size``'s: every logical
    offset past a cut counts the marker's length, so it must not change with people's text."""
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.1f} {unit}" if unit != "bytes" else f"{size} bytes"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class Cut:
    """Where a log was cut: file bytes ``[head, resume)`` were dropped (none when equal)."""

    head: int
    resume: int
    size: int

    @property
    def dropped(self) -> int:
        """How many bytes the cap removed."""
        return self.resume - self.head

    @property
    def marker(self) -> bytes:
        """The marker line that replaces the dropped bytes."""
        return marker(self.dropped)

    @property
    def length(self) -> int:
        """The logical log's length: head + marker + tail."""
        return self.head + len(self.marker) + self.size - self.resume


def find_cut(fd: int) -> Cut:
    """The cut of the open log ``fd`` now (``head == resume == size`` when uncut)."""
    size = os.fstat(fd).st_size  # before SEEK_HOLE: a hole below this size is a real one
    try:
        head = os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError:
        return Cut(size, size, size)  # empty, or a filesystem without SEEK_HOLE: no cut
    if head >= size:
        return Cut(size, size, size)
    try:
        resume = os.lseek(fd, head, os.SEEK_DATA)
    except OSError as err:
        if err.errno != errno.ENXIO:
            raise
        resume = max(size, os.fstat(fd).st_size)  # nothing kept after the hole (yet)
    return Cut(head, resume, max(size, resume))


def read_kept(fd: int, view: memoryview, pos: int) -> tuple[int, int | None]:
    """``pread`` into ``view`` at file offset ``pos``, never returning bytes of a hole.

    Returns:
        ``(n, None)``: ``n`` good bytes were read (0 at the end of the file); or
        ``(0, resume)``: ``pos`` lies in a dropped range, and the kept bytes start at
        ``resume`` (the reader was outrun by the cap).
    """
    n = os.preadv(fd, [view], pos)
    if not n:
        return 0, None
    # A range punched while we read it reads as zeros: keep only what is still data now
    # (a hole is never filled again, so data now was data when read).
    try:
        hole = os.lseek(fd, pos, os.SEEK_HOLE)
    except OSError:
        return n, None
    if hole >= pos + n:
        return n, None
    if hole > pos:
        return hole - pos, None
    try:
        resume = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as err:
        if err.errno != errno.ENXIO:
            raise
        resume = os.fstat(fd).st_size
    return 0, max(resume, pos + 1)


def locate(fd: int, offset: int) -> tuple[bytes, int]:
    """Map logical ``offset`` (negative: back from the end) for a follower.

    Returns:
        (the part of the marker still to give, the file offset to read on from).
    """
    cut = find_cut(fd)
    start = offset if offset >= 0 else max(0, cut.length + offset)
    mark = cut.marker
    if start < cut.head:
        return b"", start
    if start < cut.head + len(mark):
        return mark[start - cut.head :], cut.resume
    return b"", cut.resume + start - cut.head - len(mark)


def read_logical(fd: int, view: memoryview, offset: int) -> tuple[int, int]:
    """Fill ``view`` with the logical log from ``offset`` (negative: back from the end).

    The head, the marker and the tail are copied in one call, so a short read means the
    end of the log (what ``last_lines`` relies on).

    Returns:
        (the logical offset of the first byte, how many bytes were copied).
    """
    for _ in range(8):  # a punch racing the read moves the cut: read again under the new one
        cut = find_cut(fd)
        start = offset if offset >= 0 else max(0, cut.length + offset)
        mark = cut.marker
        pos, filled, raced = start, 0, False
        while filled < len(view):
            if pos < cut.head:
                phys, room = pos, cut.head - pos
            elif pos < cut.head + len(mark):
                piece = mark[pos - cut.head : pos - cut.head + len(view) - filled]
                view[filled : filled + len(piece)] = piece
                filled += len(piece)
                pos += len(piece)
                continue
            else:
                phys, room = cut.resume + pos - cut.head - len(mark), len(view) - filled
            n, jump = read_kept(fd, view[filled : filled + min(room, len(view) - filled)], phys)
            if jump is not None:
                raced = True
                break
            if not n:
                break
            filled += n
            pos += n
        if filled or not raced:
            return start, filled
    return start, 0


def dropped_bytes(path: str | os.PathLike[str]) -> int:
    """How many bytes ``log_max`` has dropped from the log at ``path`` (0 if none, or no log)."""
    try:
        fd = os.open(Path(path), os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        return find_cut(fd).dropped
    finally:
        os.close(fd)


def stopped_note(job_dir: str | os.PathLike[str]) -> str:
    """Why the log in ``job_dir`` stopped taking output ("disk full: ..."), or "" if it did not."""
    try:
        with open(Path(job_dir) / LOG_STOPPED, "rb") as note:
            return note.read(1000).decode(errors="replace").strip()
    except OSError:
        return ""
