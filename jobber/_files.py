"""Atomic writes and JSON reads of a job's files, for every process that touches them.

A full filesystem never leaves half a file: a write that fails removes its temporary
file, and ENOSPC or EDQUOT becomes a ``DiskFull`` that names the filesystem and says
what to do. A job's final record never needs space it may not get: each job directory
holds a reserve (``reserve_space``), made when the job is, that the writer of its
status frees when nothing else is left, and that is removed once the job has ended.

The supervisor island imports this module on every job's end: keep it to the standard
library's cheapest modules and ``jobber._errors`` (no pathlib, no typing).
"""

from __future__ import annotations

import _thread
import errno
import json
import os
import stat

from jobber._errors import DiskFull, JobError

__all__ = ["RESERVE", "disk_full", "free_reserve", "read_json", "read_regular", "reserve_space", "write_atomic"]

RESERVE = ".reserve"  # in a job's directory: the space its final record may need
RESERVE_BYTES = 16 << 10  # a status file and its directory entry: 4 blocks of 4 KiB, 1 of any larger size
READ_MAX = 64 << 20  # a JSON file of jobber's: a spec with a whole environment is well under this
_FULL = (errno.ENOSPC, errno.EDQUOT)


def write_atomic(path: str | os.PathLike[str], data: bytes, *, reserve: str | os.PathLike[str] | None = None) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, whole.

    The temporary file is private to this process and thread (a widget's thread and the
    notebook may write at once) and opened with O_NOFOLLOW: a link planted in its place
    is refused, never written through. It is removed if anything fails.

    Args:
        path: the file.
        data: its new content.
        reserve: a reserve file (``reserve_space``) to free and write again when the
            filesystem is full: for a job's status only.

    Raises:
        DiskFull: the filesystem is full (or the quota used up), even after freeing the
            reserve.
    """
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.{_thread.get_ident()}.tmp")
    try:
        _write_then_rename(tmp, path, data)
    except OSError as err:
        _discard(tmp)
        if err.errno not in _FULL:
            raise
        if reserve is None or not free_reserve(reserve):
            raise disk_full(path, err) from err
        try:
            _write_then_rename(tmp, path, data)
        except OSError as again:
            _discard(tmp)
            raise (disk_full(path, again) if again.errno in _FULL else again) from again


def _write_then_rename(tmp: str, path: str, data: bytes) -> None:
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def reserve_space(directory: str | os.PathLike[str]) -> None:
    """Set aside the space a job's final record may need, in its directory (blocks really
    allocated, not a sparse file).

    Raises:
        DiskFull: the filesystem has not even that much left.
    """
    path = os.path.join(os.fspath(directory), RESERVE)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.posix_fallocate(fd, 0, RESERVE_BYTES)
    except OSError as err:
        _discard(path)
        if err.errno in _FULL:
            raise disk_full(os.fspath(directory), err) from err
        if err.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise
    finally:
        os.close(fd)


def free_reserve(path: str | os.PathLike[str]) -> bool:
    """Remove a reserve file (its directory's or its own path): True if there was one."""
    path = os.fspath(path)
    if os.path.basename(path) != RESERVE:
        path = os.path.join(path, RESERVE)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def disk_full(path: str, err: OSError) -> DiskFull:
    """The ``DiskFull`` for ``err`` (ENOSPC or EDQUOT) met writing ``path``."""
    mount = _mount_point(os.path.dirname(path) or ".")
    if err.errno == errno.EDQUOT:
        why = f"the disk quota of uid {os.geteuid()} on the filesystem at {mount} is used up"
    else:
        why = f"the filesystem at {mount} is full"
    return DiskFull(f"cannot write {path}: {why}: free space there (`jobber prune` removes ended jobs and their "
                    "logs; a smaller log_max keeps logs short), or set JOBBER_JOBS_DIR to a larger filesystem",
                    errno=err.errno, path=path, mount=mount)


def _mount_point(path: str) -> str:
    """The mount point of the filesystem holding ``path`` (the nearest existing parent's)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and path != "/":
        path = os.path.dirname(path)
    try:
        dev = os.stat(path).st_dev
        while path != "/":
            parent = os.path.dirname(path)
            if os.stat(parent).st_dev != dev:
                break
            path = parent
    except OSError:
        pass
    return path


def read_json(path: str | os.PathLike[str], what: str = "file") -> dict | None:
    """The JSON object in ``path``, or None when it does not exist: the one reader of
    jobber's JSON files, and its one policy.

    A file that is there but cannot be read (permissions, an I/O error), is not JSON, or
    holds something other than an object is an error, never a guess: jobber writes each
    file whole (``write_atomic``), so such a file was damaged or written by something
    else. A caller that can go on without the file catches the ``JobError`` (an admission
    entry is dropped, a retry not made); every other caller lets it say which file it is.

    Args:
        path: the file.
        what: what the file is, for the message ("status.json", "tenant registry").

    Raises:
        JobError: the file exists but cannot be read, parsed, or is not a JSON object.
    """
    path = os.fspath(path)
    try:
        data = json.loads(read_regular(path, READ_MAX))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise JobError(f"unreadable {what} {path}: {err.strerror or err}") from err
    except ValueError as err:
        raise JobError(f"unreadable {what} {path}: {err}") from err
    if not isinstance(data, dict):
        raise JobError(f"unreadable {what} {path}: not a JSON object")
    return data


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them: how a job's files
    are read, by every process.

    O_NONBLOCK: a FIFO planted where a job's file should be must not hold the reading
    thread (a Jupyter server's, a ``jobber ls``) forever; O_NOFOLLOW: jobber writes its
    files itself (``write_atomic``), never as links, and a link to a device is no file.

    Args:
        path: the file.
        limit: the most bytes it may hold.

    Raises:
        FileNotFoundError: there is no such file.
        OSError: anything else: a link, a FIFO, a device or a directory among them, or a
            file over ``limit`` bytes.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "a symbolic link, not a file jobber wrote") from err
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a directory, FIFO or device)")
        chunks = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(errno.EFBIG, f"over {limit >> 20} MiB, larger than any file jobber writes")
    return b"".join(chunks)
