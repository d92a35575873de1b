"""The events feed: every change of the identity's jobs, pushed to the Jobs panels.

    WebSocket /jobber/api/events
      <- {"type": "snapshot", "jobs": [Row...], "counts": {...}}          first
      <- {"type": "job", "job": Row, "counts": {...}}                       a job changed
      <- {"type": "removed", "id": n, "counts": {...}}                      a job was removed
      <- {"type": "ended", "job": Row, "message": "job 12 `train` exited (code 0) after 41 min",
          "notify": bool}                                                   once per job end

One feed per Jupyter server, shared by every socket, and one inotify instance for it
(``jobber._inotify``): a watch on the identity's directory (jobs made and removed) and
one on each job's directory (its ``status.json`` replaced, files made). Neither the log's
writes nor the supervisor's usage samples wake it (``IN_MODIFY`` and ``IN_CLOSE_WRITE``
are not in the mask): a chatty job costs the feed nothing. A change of state is read
within :data:`COALESCE_S` (the job's status). A running job's memory comes from its
supervisor's last usage sample (one short read of its ``usage`` file, not a status: the
supervisor already read the cgroup), looked at once every :data:`USAGE_INTERVAL_S` while
jobs run, and sent when it changed; the panel counts a running job's elapsed time on from
``elapsed_s`` itself. With no socket open, the feed holds no watch and reads nothing.

A remote identity (a jobber server) has no directory to watch: its jobs are listed anew
every :data:`REMOTE_POLL_S` while a socket is open.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import struct
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from jobber import JobberError, JobNotFound
from jobber._inotify import IN_CREATE, IN_MOVED_TO, Inotify
from jobber._jobs.ending import end_message
from jobber_lab._identity import Identity
from jobber_lab._rows import counts, job_row

__all__ = ["COALESCE_S", "JobsFeed", "REMOTE_POLL_S", "list_rows"]

COALESCE_S = 0.05
"""How long a change waits for the others of its burst before the feed reads it."""
USAGE_INTERVAL_S = 1.0
"""How often the running jobs' memory is looked at (their supervisors sample it twice a second)."""
REMOTE_POLL_S = 2.0
_IN_DELETE = 0x00000200
_IN_MOVED_FROM = 0x00000040
_IN_IGNORED = 0x00008000
_DIR_MASK = IN_CREATE | IN_MOVED_TO | _IN_DELETE | _IN_MOVED_FROM
_JOB_MASK = IN_MOVED_TO | IN_CREATE
_EVENT = struct.Struct("iIII")
_USAGE = b"usage"
log = logging.getLogger(__name__)


def _job_id(name: bytes | str) -> int | None:
    text = name.decode(errors="replace") if isinstance(name, bytes) else name
    return int(text) if text.isdigit() and not text.startswith("0") and len(text) < 19 else None


def _last_memory(path: os.PathLike[str]) -> int | None:
    """The memory of the last complete sample of a usage file (``jobber._usage``), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, 256, max(0, size - 256))
    finally:
        os.close(fd)
    lines = tail.split(b"\n")
    for line in reversed(lines[:-1]):  # the last piece: unfinished, or b""
        fields = line.split()
        if len(fields) == 4 and not line.startswith(b"#"):
            return int(fields[1]) if fields[1].isdigit() else None
    return None


def list_rows(session: Any) -> list[dict[str, Any]]:
    """Every job of ``session`` as a row, newest first (blocking: status reads)."""
    rows = []
    for job in session.get_jobs():
        try:
            rows.append(job_row(job, job.status()))
        except JobNotFound:
            continue  # removed since the listing
    rows.sort(key=lambda row: row["id"], reverse=True)
    return rows


class JobsFeed:
    """The identity's jobs as rows, kept current while any socket listens.

    Args:
        identity: the server's identity (its changes restart the feed).
        loop: the Jupyter server's event loop (everything here runs on it).
    """

    def __init__(self, identity: Identity, loop: asyncio.AbstractEventLoop) -> None:
        self.identity = identity
        self.loop = loop
        self.rows: dict[int, dict[str, Any]] = {}
        self._jobs: dict[int, Any] = {}
        self._listeners: set[Callable[[str], None]] = set()
        self._inotify: Inotify | None = None
        self._wd_job: dict[int, int | None] = {}  # watch -> job id (None: the identity's directory)
        self._job_wd: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._usage_handle: asyncio.TimerHandle | None = None
        self._counts: dict[str, int] = {}
        self._flush_handle: asyncio.TimerHandle | None = None
        self._poll_handle: asyncio.TimerHandle | None = None
        self._generation = -1
        self._session: Any = None

    @property
    def active(self) -> bool:
        """Whether the feed runs (some socket listens)."""
        return bool(self._listeners)

    def current(self) -> list[dict[str, Any]] | None:
        """The rows, newest first, while the feed keeps them current (else None: read them)."""
        if not self._listeners or self._generation != self.identity.generation or self._session is None:
            return None
        return sorted(self.rows.values(), key=lambda row: row["id"], reverse=True)

    def add(self, listener: Callable[[str], None]) -> None:
        """Send ``listener`` the snapshot now, then every change (a JSON text each)."""
        if self._generation != self.identity.generation:
            self._stop()
        if not self._listeners or self._session is None:
            self._start()
        self._listeners.add(listener)
        listener(self._snapshot())
        if self.identity.local_dir is not None:
            self._schedule_usage()

    def remove(self, listener: Callable[[str], None]) -> None:
        """Stop sending to ``listener``; the last one stops the feed."""
        self._listeners.discard(listener)
        if not self._listeners:
            self._stop()

    def restart(self) -> None:
        """The identity changed: start over, and send every socket the new snapshot."""
        listeners = set(self._listeners)
        self._stop()
        if listeners:
            self._start()
            self._listeners = listeners
            snapshot = self._snapshot()
            for listener in listeners:
                listener(snapshot)
            self._schedule_usage()

    def job_changed(self, job_id: int) -> None:
        """A handler changed a job (stop, re-run, remove): read it now, whatever inotify says."""
        if self._listeners:
            self._mark(job_id)

    def _snapshot(self) -> str:
        rows = sorted(self.rows.values(), key=lambda row: row["id"], reverse=True)
        self._counts = counts(rows)
        return json.dumps({"type": "snapshot", "jobs": rows, "counts": self._counts})

    def _broadcast(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        for listener in list(self._listeners):
            listener(text)

    def _start(self) -> None:
        self._generation = self.identity.generation
        self.rows.clear()
        self._jobs.clear()
        try:
            self._session = self.identity.session
        except JobberError:
            self._session = None
            return
        directory = self.identity.local_dir
        if directory is None:
            self._poll()
            return
        self._inotify = Inotify()
        self.loop.add_reader(self._inotify.fd, self._on_readable)
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._wd_job[self._inotify.add_watch(directory, _DIR_MASK)] = None
            names = os.listdir(directory)
        except OSError as err:
            log.warning("jobber: cannot watch %s: %s", directory, err)
            names = []
        for name in names:
            job_id = _job_id(name)
            if job_id is not None:
                self._watch(job_id)
                self._read(job_id)

    def _stop(self) -> None:
        for handle in (self._flush_handle, self._poll_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._poll_handle = None
        if self._inotify is not None:
            self.loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        self._wd_job.clear()
        self._job_wd.clear()
        self._dirty.clear()
        if self._usage_handle is not None:
            self._usage_handle.cancel()
            self._usage_handle = None
        self.rows.clear()
        self._jobs.clear()
        self._session = None

    def _watch(self, job_id: int) -> None:
        if self._inotify is None or job_id in self._job_wd or self.identity.local_dir is None:
            return
        try:
            wd = self._inotify.add_watch(self.identity.local_dir / str(job_id), _JOB_MASK)
        except OSError:
            return  # removed already: its IN_DELETE says so
        self._wd_job[wd] = job_id
        self._job_wd[job_id] = wd

    def _on_readable(self) -> None:
        # Drained here: the descriptor is level-triggered.
        assert self._inotify is not None
        while True:
            try:
                data = os.read(self._inotify.fd, 65536)
            except (BlockingIOError, InterruptedError):
                return
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size
                name = data[offset : offset + length].rstrip(b"\0")
                offset += length
                self._event(wd, mask, name)

    def _event(self, wd: int, mask: int, name: bytes) -> None:
        if wd not in self._wd_job:
            return
        job_id = self._wd_job[wd]
        if mask & _IN_IGNORED:
            del self._wd_job[wd]
            if job_id is not None:
                self._job_wd.pop(job_id, None)
                self._mark(job_id)
            return
        if job_id is None:  # the identity's directory: a job made or removed
            made = _job_id(name)
            if made is not None:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    self._watch(made)
                self._mark(made)
            return
        if name != _USAGE:  # (a usage file rewritten by its supervisor: the tick reads it)
            self._mark(job_id)

    def _tick_usage(self) -> None:
        """Every running job's memory, from its supervisor's last sample; sent when it changed."""
        self._usage_handle = None
        directory = self.identity.local_dir
        running = [row for row in self.rows.values() if row["state"] == "running"]
        if not self._listeners or directory is None or not running:
            return  # (a job's start, seen by inotify, schedules the tick again)
        for row in running:
            memory = _last_memory(directory / str(row["id"]) / _USAGE.decode())
            if memory is None or memory == row["memory_now"] or row["id"] in self._dirty:
                continue
            elapsed = None
            if row["started"] is not None:
                elapsed = (datetime.now(timezone.utc) - datetime.fromisoformat(row["started"])).total_seconds()
            fresh = {**row, "elapsed_s": elapsed, "memory_now": memory, "memory_peak": max(memory, row["memory_peak"] or 0)}
            self.rows[row["id"]] = fresh
            self._broadcast({"type": "job", "job": fresh, "counts": self._counts})
        self._schedule_usage()

    def _schedule_usage(self) -> None:
        if self._usage_handle is None and self._listeners:
            self._usage_handle = self.loop.call_later(USAGE_INTERVAL_S, self._tick_usage)

    def _mark(self, job_id: int) -> None:
        self._dirty.add(job_id)
        if self._flush_handle is None:
            self._flush_handle = self.loop.call_later(COALESCE_S, self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        for job_id in sorted(dirty):
            self._read(job_id, send=True)

    def _read(self, job_id: int, *, send: bool = False) -> None:
        """Read job ``job_id`` again; with ``send``, tell the sockets what changed."""
        try:
            job = self._jobs.get(job_id) or self._session.get_job(job_id)
            status = job.status()
            row = job_row(job, status)
        except JobNotFound:
            self._jobs.pop(job_id, None)
            if self.rows.pop(job_id, None) is not None and send:
                self._counts = counts(self.rows.values())
                self._broadcast({"type": "removed", "id": job_id, "counts": self._counts})
            return
        except (JobberError, OSError, ValueError) as err:
            # A job half made (no spec yet) reads later, when its spec.json lands.
            log.debug("jobber: job %s not readable yet: %s", job_id, err)
            return
        self._jobs[job_id] = job
        before = self.rows.get(job_id)
        self.rows[job_id] = row
        if row["state"] != (before or {}).get("state"):
            self._counts = counts(self.rows.values())
        if row["state"] == "running":
            self._schedule_usage()
        if not send or row == before:
            return
        self._changed(before, row, lambda: end_message(job.id, row["label"], status))

    def _changed(self, before: dict[str, Any] | None, row: dict[str, Any], message: Callable[[], str]) -> None:
        """Tell the sockets of a changed row; and of its end, the first time it is seen ended."""
        self._broadcast({"type": "job", "job": row, "counts": self._counts})
        if _ended(row) and (before is None or not _ended(before)):
            self._broadcast({"type": "ended", "job": row, "message": message(), "notify": row["notify"]})

    def _poll(self) -> None:
        """A remote identity: list its jobs anew, and send what changed."""
        self._poll_handle = None
        try:
            jobs = {job.id: job for job in self._session.get_jobs()}
            fresh = {job_id: job_row(job, job.status()) for job_id, job in jobs.items()}
        except JobberError as err:
            log.warning("jobber: listing the jobs failed: %s", err)
            fresh = dict(self.rows)
        before, self.rows = self.rows, fresh
        self._counts = counts(fresh.values())
        if self._listeners:
            for job_id in set(before) - set(fresh):
                self._broadcast({"type": "removed", "id": job_id, "counts": self._counts})
            for job_id, row in fresh.items():
                if row != before.get(job_id):
                    job = jobs[job_id]
                    self._changed(before.get(job_id), row, lambda job=job: end_message(job.id, job.label, job.status()))
        self._poll_handle = self.loop.call_later(REMOTE_POLL_S, self._poll)


def _ended(row: dict[str, Any]) -> bool:
    return row["state"] not in ("created", "pending", "running")
