"""Atomic writes and JSON reads of a job's files, for every process that touches them.

The supervisor island imports this module on every job's end: keep it to the standard
library's cheapest modules and ``jobber._errors`` (no pathlib, no typing).
"""

from __future__ import annotations

import _thread
import json
import os

from jobber._errors import JobError

__all__ = ["read_json", "write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` so that readers see the old or the new file, whole.

    The temporary file is private to this process and thread (a widget's thread and the
    notebook may write at once) and opened with O_NOFOLLOW: a link planted in its place
    is refused, never written through.
    """
    path = os.fspath(path)
    head, name = os.path.split(path)
    tmp = os.path.join(head, f".{name}.{os.getpid()}.{_thread.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_json(path: str | os.PathLike[str], what: str = "file") -> dict | None:
    """The JSON object in ``path``, or None when it does not exist.

    Raises:
        JobError: the file exists but cannot be read or parsed (``what`` names it).
    """
    try:
        with open(path, "rb") as file:
            return json.loads(file.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise JobError(f"unreadable {what} {path}: {err}") from err
