"""A job directory written by hand, as a supervisor and a retry write it, with no process.

For the followers' tests (``test_follow.py``, ``test_watch.py``): each step of a job's life
(output, a status, a retry's hand-over, a ``log_max`` cut) is one call, so a test puts the
follower exactly where it wants it, with no timing. Also the two followers, driven alike.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
from pathlib import Path

from jobber._backends.local.retrying import ATTEMPTS, RETRIED
from jobber._files import write_atomic
from jobber._jobs import logs
from jobber._jobs.status import JobStatus
from jobber._server.watch import WatchHub, follow_log

BLOCK = 4096  # a punched range is whole filesystem blocks (ext4 and tmpfs: 4 KiB)
_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


class HandMadeJob:
    """One job's directory; ``status()`` reads the status.json that :meth:`set` wrote.

    Args:
        path: the job's directory (made here).
    """

    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True)
        self.path = path
        self.log_path = path / "log"
        self.looks = 0
        self.set("running")

    def set(self, state: str, attempt: int = 1, note: str = "") -> None:
        """A new status.json, renamed into place as every writer of it does."""
        write_atomic(self.path / "status.json", json.dumps({"state": state, "attempt": attempt, "note": note}).encode())

    def status(self) -> JobStatus:
        self.looks += 1
        raw = json.loads((self.path / "status.json").read_bytes())
        return JobStatus(raw["state"], attempt=raw["attempt"], note=raw["note"])

    def write(self, data: bytes) -> None:
        """The job's output, appended to its log (made by the first write)."""
        with open(self.log_path, "ab") as log:
            log.write(data)

    def retry(self, attempt: int, note: str) -> None:
        """What ``retrying.hand_over`` does: archive the attempt (its note, then its log),
        then say "pending" at the next."""
        archive = self.path / ATTEMPTS / str(attempt)
        archive.mkdir(parents=True)
        write_atomic(archive / "status.json", json.dumps({"state": "failed", "attempt": attempt, RETRIED: note}).encode())
        os.rename(self.log_path, archive / "log")
        self.set("pending", attempt + 1, note)

    def punch(self, start: int, length: int) -> None:
        """Drop ``[start, start + length)`` of the log as ``log_max`` does (a hole)."""
        fd = os.open(self.log_path, os.O_WRONLY)
        try:
            if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, start, length) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)


def marker(note: str) -> bytes:
    """The line between two attempts' logs, as a follower's reader should write it."""
    return f"\n[jobber: {note}]\n".encode()


class Blocking:
    """``Job.follow``'s follower (``logs.follow_job``), read a chunk at a time."""

    name = "blocking"

    def __init__(self, job: HandMadeJob, offset: int = 0, heartbeat: float | None = None) -> None:
        self._chunks = logs.follow_job(job.path, offset, job.status, heartbeat)
        self.got = b""

    def next(self) -> bytes | None:
        """The next chunk, or None at the follow's end."""
        return next(self._chunks, None)

    def close(self) -> None:
        self._chunks.close()

    def until(self, expected: bytes) -> bytes:
        """Read until all bytes read so far are ``expected`` (heartbeats skipped)."""
        while self.got != expected:
            chunk = self.next()
            assert chunk is not None, f"the follow ended after {self.got!r}, expected {expected!r}"
            self.got += chunk
            assert expected.startswith(self.got), f"read {self.got!r}, expected {expected!r}"
        return self.got

    def rest(self) -> bytes:
        """Everything to the follow's end (heartbeats are b"")."""
        while (chunk := self.next()) is not None:
            self.got += chunk
        return self.got


class Streaming(Blocking):
    """The server's follower (``watch.follow_log``) on a hub and event loop of its own."""

    name = "streaming"

    def __init__(self, job: HandMadeJob, offset: int = 0, *, from_first_attempt: bool = False) -> None:
        self.loop = asyncio.new_event_loop()
        self.hub = WatchHub(self.loop)
        self._chunks = follow_log(self.hub, job, offset, from_first_attempt=from_first_attempt)
        self.got = b""

    def next(self) -> bytes | None:
        async def step() -> bytes | None:
            try:
                return await self._chunks.__anext__()
            except StopAsyncIteration:
                return None

        return self.loop.run_until_complete(step())

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.run_until_complete(self._chunks.aclose())
        self.hub.close()
        self.loop.close()
