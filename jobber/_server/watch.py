"""Following logs and waiting for jobs on the server's event loop, without a thread each.

The core's ``follow()`` and ``wait()`` block on an inotify instance of their own. A server
with a hundred followers cannot afford a thread each, nor an inotify instance each (the
kernel allows 128 per user by default, ``fs.inotify.max_user_instances``). So the server
holds one inotify descriptor, registered with the event loop, and every follower or waiter
subscribes to the job directory it cares about. A follow is the core's: the same reader
(``_jobs/follow.py``) and file side (``_jobs/logs.LogFiles``), with ``await`` where the
core blocks; ``wait_for_end`` is ``Job.wait`` again.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
from collections.abc import AsyncIterator
from pathlib import Path

from jobber._inotify import Inotify
from jobber._jobs import logcut
from jobber._jobs.follow import LIVENESS_CHECK_S, FollowReader, JobFacts, Wait, news
from jobber._jobs.job import Job
from jobber._jobs.logs import WATCH_MASK, LogFiles
from jobber._jobs.status import JobStatus

__all__ = ["WatchHub", "ServerClosing", "follow_log", "wait_for_end", "resolve_offset", "FOLLOW_CHUNK"]

# Small enough that one follower's burst does not delay the others' writes for long.
FOLLOW_CHUNK = 64 * 1024
_IN_IGNORED = 0x00008000  # the watch is gone (directory deleted, or rm_watch)

# The core binding has no rm_watch; without it, every followed job would keep a watch
# for the server's lifetime. CDLL(None): the libc already loaded, without find_library's
# ldconfig subprocess.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.inotify_rm_watch.argtypes = [ctypes.c_int, ctypes.c_int]


class ServerClosing(Exception):
    """The server is shutting down: followers end without the stream's proper end."""


class _Subscription:
    """One coroutine's interest in one directory: the file names changed since it last looked.

    Changes are recorded even while the coroutine is busy elsewhere (writing to its
    client), so none is missed between a read and the next wait. Waiting costs a bare
    future and a timer: no task per wait, as ``asyncio.wait_for`` would make.
    """

    __slots__ = ("key", "names", "_changed", "_waiter")

    def __init__(self, key: str) -> None:
        self.key = key
        self.names: set[bytes] = set()
        self._changed = False
        self._waiter: asyncio.Future[None] | None = None

    def notify(self, name: bytes) -> None:
        self.names.add(name)
        self._changed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def wait(self, timeout: float) -> set[bytes] | None:
        """Wait for a change; returns the names that changed, or None on timeout."""
        if not self._changed:
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            timer = loop.call_later(timeout, _resolve, self._waiter)
            try:
                await self._waiter
            finally:
                timer.cancel()
                self._waiter = None
            if not self._changed:
                return None
        self._changed = False
        names, self.names = self.names, set()
        return names


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class WatchHub:
    """One inotify instance for the whole server, shared by every follower and waiter.

    Must be created and used on the event loop's thread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._inotify = Inotify()
        self._by_wd: dict[int, set[_Subscription]] = {}
        self._wd_by_path: dict[str, int] = {}
        self.closed = False
        loop.add_reader(self._inotify.fd, self._on_readable)

    @property
    def watch_count(self) -> int:
        """Directories watched right now (for tests and the debug log)."""
        return len(self._by_wd)

    def subscribe(self, path: Path) -> _Subscription:
        """Start receiving changes in directory ``path``; pair with :meth:`unsubscribe`.

        Raises:
            OSError: the directory is gone, or the kernel's watch limit is reached.
        """
        key = os.fspath(path)
        wd = self._inotify.add_watch(key, WATCH_MASK)  # the same directory yields the same wd
        sub = _Subscription(key)
        self._by_wd.setdefault(wd, set()).add(sub)
        self._wd_by_path[key] = wd
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        """Stop receiving changes; the watch goes when its last subscriber does."""
        key = sub.key
        wd = self._wd_by_path.get(key)
        subs = self._by_wd.get(wd) if wd is not None else None
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        if not subs:
            del self._by_wd[wd]
            del self._wd_by_path[key]
            _libc.inotify_rm_watch(self._inotify.fd, wd)  # fails harmlessly if already gone

    def _on_readable(self) -> None:
        # Drained here, in the callback: the descriptor is level-triggered, and leaving
        # events queued while a subscriber is busy writing would spin the loop.
        for wd, mask, name in self._inotify.events():
            for sub in self._by_wd.get(wd, ()):
                sub.notify(name)
            if mask & _IN_IGNORED:
                self._forget(wd)

    def _forget(self, wd: int) -> None:
        subs = self._by_wd.pop(wd, set())
        for key, known in list(self._wd_by_path.items()):
            if known == wd:
                del self._wd_by_path[key]
        for sub in subs:
            sub.notify(b"")

    def close(self) -> None:
        """Stop watching anything and wake every subscriber (idempotent)."""
        self.closed = True
        if self._inotify.fd >= 0:
            self._loop.remove_reader(self._inotify.fd)
            self._inotify.close()
        for subs in self._by_wd.values():
            for sub in subs:
                sub.notify(b"")
        self._by_wd.clear()
        self._wd_by_path.clear()


def resolve_offset(log: Path, offset: int) -> int:
    """The logical offset of ``offset`` (negative counts back from the current end).

    Logical as ``logcut`` defines it: once ``log_max`` has cut the log, a marker line
    stands for the dropped bytes, and offsets count it instead of them.
    """
    if offset >= 0:
        return offset
    try:
        fd = os.open(log, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return 0
    try:
        return max(0, logcut.find_cut(fd).length + offset)
    finally:
        os.close(fd)


async def follow_log(hub: WatchHub, job: Job, offset: int, *, from_first_attempt: bool = False) -> AsyncIterator[bytes]:
    """Yield the job's log from logical ``offset`` as it is written, until the job ended.

    The rules are ``Job.follow``'s (``jobber._jobs.follow``), and so are the bytes: the
    end is decided from the job's status, never from EOF, and the log is drained once
    more after it; where ``log_max`` dropped bytes this follower had not read yet, a
    marker line, then the kept bytes; a retried job's later attempts follow, each after
    the line that says why it started.

    Args:
        hub: the server's inotify.
        job: the job (on this host).
        offset: where to start, in the current attempt's log.
        from_first_attempt: offset 0 is the job's first byte (the first attempt's), as
            for ``Job.follow(0)``.

    Raises:
        ServerClosing: the hub closed (the server is shutting down).
    """
    sub = hub.subscribe(job.path)  # before the first read: no write goes unnoticed
    reader = FollowReader(offset, chunk=FOLLOW_CHUNK, from_first_attempt=from_first_attempt)
    try:
        with LogFiles(reader, job.log_path, lambda: JobFacts.of(job.status())) as files:
            while (out := files.next()) is not None:
                if isinstance(out, Wait):
                    # Changes are recorded while this follower writes to its client, so
                    # the wait returns at once for a write since the last read.
                    names = await _wait_for_news(sub, out.timeout)
                    if hub.closed:
                        raise ServerClosing()
                    reader.woke(names)
                else:
                    yield out
    finally:
        hub.unsubscribe(sub)


async def _wait_for_news(sub: _Subscription, timeout: float) -> set[bytes]:
    """What changed that a follower or waiter acts on (``follow.news``), waiting out
    ``timeout`` through other changes (the supervisor's usage samples); empty on a timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = deadline - loop.time()
        changed = await sub.wait(max(0.0, left))
        if not changed or (found := news(changed)) or left <= 0:
            return found if changed else set()


async def wait_for_end(hub: WatchHub, job: Job, timeout: float) -> JobStatus:
    """The job's status once it has ended, or after ``timeout`` seconds, whichever first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    sub = hub.subscribe(job.path)
    try:
        while True:
            status = job.status()
            left = deadline - loop.time()
            if status.ended or left <= 0 or hub.closed:
                return status
            await _wait_for_news(sub, min(left, LIVENESS_CHECK_S))
    finally:
        hub.unsubscribe(sub)
