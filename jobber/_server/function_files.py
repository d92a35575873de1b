"""A function job's files on a server: its call handed to the tenant's job, its result brought back.

A server's job runs as its tenant's uid (often in a private ``/tmp``) and cannot reach its
job directory, which is the server's own (0700). So when a function job starts, the
server gives it a directory of its own, ``<state dir>/tenants/<uid>/functions/<id>/``
(the tenant's uid's, 0700, inside ``functions/``, root's and 0711, so the tenant can
neither rename nor replace it), copies ``call.pkl`` there, and names it to the runner in
``$JOBBER_FUNCTION_DIR``. The runner writes ``result.pkl`` and ``result.json`` there.

When the owner asks for the result of the ended job, the server copies both into the
job directory (``import_result``), once: each opened without following a link, taken
only as a regular file of the tenant's uid, ``result.pkl`` no larger than the job's
``result_max``, ``result.json`` parsed as JSON. Nothing here unpickles: the pickle's
bytes are copied and sent, never loaded.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobber._errors import JobError
from jobber._jobs.pycall import CALL, RESULT, RESULT_META

__all__ = ["MAX_META_BYTES", "give_call", "import_result", "remove_function_dir"]

# result.json holds a traceback: a deep recursion's is a few hundred KiB.
MAX_META_BYTES = 4 << 20
_COPY_CHUNK = 1 << 20
_KERNEL_CHUNK = 16 << 20  # copy_file_range holds nothing here: larger steps, fewer calls


def give_call(job_dir: Path, function_dir: Path, uid: int) -> None:
    """Copy the job's ``call.pkl`` into its function directory, for its runner (as ``uid``).

    ``function_dir`` is made fresh: whatever an earlier attempt left there goes.

    Raises:
        JobError: the call is missing, or the directory cannot be made.
    """
    remove_function_dir(function_dir)
    try:
        os.mkdir(function_dir, 0o700)
        fd = os.open(function_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        raise JobError(f"cannot make the function job's directory: {err.strerror}") from None
    try:
        os.fchown(fd, uid, uid)
        try:
            source = os.open(job_dir / CALL, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise JobError("the function job has no call.pkl: it was not made by new_function_job") from None
        try:
            target = os.open(CALL, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o400, dir_fd=fd)
            try:
                _copy(source, target, None)
                os.fchown(target, uid, uid)
            finally:
                os.close(target)
        finally:
            os.close(source)
    finally:
        os.close(fd)


def remove_function_dir(function_dir: Path) -> None:
    """Remove a function directory and what the job left in it (never through a link:
    ``shutil.rmtree`` walks by descriptor where the platform allows, as on Linux)."""
    try:
        st = os.lstat(function_dir)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(function_dir, ignore_errors=True)
    else:
        os.unlink(function_dir)


def import_result(job_dir: Path, function_dir: Path, uid: int, result_max: int) -> bool:
    """Copy what the runner left in ``function_dir`` into ``job_dir`` (once; call it once
    the job has ended, so that the runner cannot write meanwhile).

    Returns:
        True when ``job_dir`` now holds ``result.json`` (imported now or before).

    Raises:
        JobError: what the job left is not a result (a link, another uid's file, a pickle
            over ``result_max``, a ``result.json`` that is not a JSON object).
    """
    if (job_dir / RESULT_META).exists():
        return True
    try:
        dfd = os.open(function_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return False
        raise JobError(f"cannot read the function job's directory: {err.strerror}") from None
    try:
        meta_fd = _open_tenants(dfd, RESULT_META, uid, MAX_META_BYTES)
        if meta_fd is None:
            return False
        try:
            meta = _meta(meta_fd)
        finally:
            os.close(meta_fd)
        pickle_fd = _open_tenants(dfd, RESULT, uid, result_max)
        size = 0
        if pickle_fd is not None:
            try:
                size = _place(job_dir, RESULT, pickle_fd, result_max)
            finally:
                os.close(pickle_fd)
        meta["size"] = size
        _place_bytes(job_dir, RESULT_META, json.dumps(meta).encode())  # last: its presence says "imported"
        return True
    finally:
        os.close(dfd)


def _open_tenants(dfd: int, name: str, uid: int, cap: int) -> int | None:
    """``name`` in the directory, as a regular file of ``uid`` of at most ``cap`` bytes; None when absent."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dfd)
    except OSError as err:
        if err.errno == errno.ENOENT:
            return None
        if err.errno == errno.ELOOP:
            raise JobError(f"the job left {name} as a symbolic link: it is not a result") from None
        raise JobError(f"cannot read the job's {name}: {err.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != uid:
        os.close(fd)
        raise JobError(f"the job left {name} as something other than a file of its own: it is not a result")
    if st.st_size > cap:
        os.close(fd)
        raise JobError(f"the job's {name} is {st.st_size} bytes, over its cap of {cap} (result_max)")
    return fd


def _meta(fd: int) -> dict[str, Any]:
    data = b""
    while chunk := os.read(fd, _COPY_CHUNK):
        data += chunk
        if len(data) > MAX_META_BYTES:
            raise JobError(f"the job's {RESULT_META} is over {MAX_META_BYTES} bytes: it is not a result")
    try:
        meta = json.loads(data)
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or not isinstance(meta.get("ok"), bool):
        raise JobError(f"the job's {RESULT_META} is not a result's description (JSON with \"ok\")")
    return meta


def _place(job_dir: Path, name: str, source: int, cap: int) -> int:
    """Copy ``source`` to ``job_dir/name``."""
    return _atomically(job_dir, name, lambda target: _copy(source, target, cap))


def _place_bytes(job_dir: Path, name: str, data: bytes) -> None:
    _atomically(job_dir, name, lambda target: _write(target, memoryview(data)))


def _atomically(job_dir: Path, name: str, fill: Callable[[int], int]) -> int:
    """``job_dir/name`` written by ``fill(fd)`` under a temporary name of this copy's own
    (two requests may import at once, each a whole copy), then renamed into place."""
    temporary = job_dir / f".{name}.{secrets.token_hex(8)}.importing"
    try:
        target = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            size = fill(target)
        finally:
            os.close(target)
        os.replace(temporary, job_dir / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    return size


def _write(target: int, view: memoryview) -> int:
    size = len(view)
    while view:
        view = view[os.write(target, view):]
    return size


def _copy(source: int, target: int, cap: int | None) -> int:
    """Copy ``source`` to ``target`` in the kernel (``copy_file_range``: no pass through this
    process, a reflink where the filesystem shares extents), by reads and writes where it
    cannot; at most ``cap`` bytes."""
    copied = 0
    while True:
        try:
            moved = os.copy_file_range(source, target, _KERNEL_CHUNK)
        except OSError as err:
            if copied or err.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                raise
            return _copy_by_reads(source, target, cap)
        if not moved:
            return copied
        copied += moved
        _check_cap(copied, cap)


def _copy_by_reads(source: int, target: int, cap: int | None) -> int:
    copied = 0
    while chunk := os.read(source, _COPY_CHUNK):
        copied += len(chunk)
        _check_cap(copied, cap)
        _write(target, memoryview(chunk))
    return copied


def _check_cap(copied: int, cap: int | None) -> None:
    if cap is not None and copied > cap:  # grew since it was measured
        raise JobError(f"the job's result grew over its cap of {cap} bytes (result_max) while it was read")
