"""A minimal inotify(7) binding: wake readers when a job's files change.

The standard library has no inotify, and the follow loop needs only three calls, so this
is written here with ctypes rather than adding a dependency to the core.
"""

from __future__ import annotations

import ctypes
import os
import select
import struct

__all__ = ["Inotify", "IN_MODIFY", "IN_CLOSE_WRITE", "IN_MOVED_TO", "IN_CREATE", "IN_DELETE_SELF"]

IN_MODIFY = 0x00000002
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE_SELF = 0x00000400
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC
_EVENT = struct.Struct("iIII")

# CDLL(None) is the C library already loaded into Python; find_library would run ldconfig.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]


class Inotify:
    """An inotify instance; a context manager that closes its descriptor.

    Raises:
        OSError: the kernel refused (e.g. ``fs.inotify.max_user_instances`` reached).
    """

    fd = -1  # until the kernel gave one: __del__ of a refused instance has nothing to close

    def __init__(self) -> None:
        fd = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self.fd = fd

    def add_watch(self, path: str | os.PathLike[str], mask: int) -> int:
        """Watch ``path`` for the events in ``mask``; returns the watch descriptor."""
        wd = _libc.inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}", str(path))
        return wd

    def wait(self, timeout: float | None) -> list[tuple[int, bytes]]:
        """Block until events arrive or ``timeout`` seconds pass.

        Returns:
            (mask, name) for every queued event; empty on timeout.
        """
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        if not poller.poll(None if timeout is None else max(0, int(timeout * 1000))):
            return []
        return self.drain()

    def drain(self) -> list[tuple[int, bytes]]:
        """Read every queued event without blocking: (mask, name) each."""
        return [(mask, name) for _wd, mask, name in self.events()]

    def events(self) -> list[tuple[int, int, bytes]]:
        """Read every queued event without blocking: (watch descriptor, mask, name) each."""
        events = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return events
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                events.append((wd, mask, data[offset : offset + length].rstrip(b"\0")))
                offset += length

    def close(self) -> None:
        """Release the descriptor (idempotent)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Inotify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
