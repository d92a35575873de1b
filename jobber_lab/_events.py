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
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from datetime import datetime, timezone
from typing import Any

from jobber import JobberError
from jobber._inotify import IN_CREATE, IN_MOVED_TO, Inotify
from jobber_lab._identity import Identity
from jobber_lab._reads import UNREADABLE, USAGE, ended, job_id_of, last_memories, list_local, list_remote, read_jobs, snapshot_text
from jobber_lab._rows import counts

__all__ = ["COALESCE_S", "JobsFeed", "REMOTE_POLL_S"]

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
_USAGE = USAGE.encode()
log = logging.getLogger(__name__)
_STALE = object()  # a read begun before the feed stopped


class JobsFeed:
    """The identity's jobs as rows, kept current while any socket listens.

    The bookkeeping and the sending run on the Jupyter server's event loop; every read
    (the listing, a job's status, a usage file, a jobber server's answer) runs in
    ``pool``, one batch at a time, so that the loop (every notebook's kernel messages)
    never waits on the disk or the network. Each socket gets its messages in the order
    the feed made them.

    Args:
        identity: the server's identity (its changes restart the feed).
        loop: the Jupyter server's event loop.
        pool: the small executor that does the reads.
    """

    def __init__(self, identity: Identity, loop: asyncio.AbstractEventLoop, pool: Executor) -> None:
        self.identity = identity
        self.loop = loop
        self.pool = pool
        self.rows: dict[int, dict[str, Any]] = {}
        self._jobs: dict[int, Any] = {}
        self._listeners: set[Callable[[str], None]] = set()
        self._waiting: set[Callable[[str], None]] = set()  # until the first snapshot is read
        self._inotify: Inotify | None = None
        self._wd_job: dict[int, int | None] = {}  # watch -> job id (None: the identity's directory)
        self._job_wd: dict[int, int] = {}
        self._dirty: set[int] = set()
        self._counts: dict[str, int] = {}
        self._handles: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._turn = asyncio.Lock()  # one batch of reads at a time, applied in order
        self._epoch = 0  # bumped by every stop: reads begun before it are dropped
        self._started = False
        self._ready = False
        self._generation = -1
        self._session: Any = None

    @property
    def active(self) -> bool:
        """Whether the feed runs (some socket listens)."""
        return bool(self._listeners or self._waiting)

    def current(self) -> list[dict[str, Any]] | None:
        """The rows, newest first, while the feed keeps them current (else None: read them)."""
        if not self._ready or self._generation != self.identity.generation or self._session is None:
            return None
        return sorted(self.rows.values(), key=lambda row: row["id"], reverse=True)

    def add(self, listener: Callable[[str], None]) -> None:
        """Send ``listener`` the snapshot (once read), then every change (a JSON text each)."""
        if self._generation != self.identity.generation:
            self._stop()
        if self._ready:
            self._listeners.add(listener)
            listener(self._snapshot())
            return
        self._waiting.add(listener)
        if not self._started:
            self._started = True
            self._spawn(self._start())

    def remove(self, listener: Callable[[str], None]) -> None:
        """Stop sending to ``listener``; the last one stops the feed."""
        self._listeners.discard(listener)
        self._waiting.discard(listener)
        if not self.active:
            self._stop()

    def restart(self) -> None:
        """The identity changed: start over, and send every socket the new snapshot."""
        self._stop()

    def job_changed(self, job_id: int) -> None:
        """A handler changed a job (stop, re-run, remove): read it now, whatever inotify says."""
        if self._ready:
            self._mark(job_id)

    def _snapshot(self) -> str:
        snapshot, self._counts = snapshot_text(self.rows.values())
        return snapshot

    def _broadcast(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        for listener in list(self._listeners):
            listener(text)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("jobber: the Jobs panel's feed failed", exc_info=task.exception())

    def _later(self, name: str, delay: float, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``work`` in ``delay`` seconds, unless it is already due."""
        if name not in self._handles:
            def due() -> None:
                del self._handles[name]
                self._spawn(work())
            self._handles[name] = self.loop.call_later(delay, due)

    async def _reads(self, epoch: int, read: Callable[..., Any], *args: Any) -> Any:
        """``read(*args)`` in the pool; ``_STALE`` when the feed stopped meanwhile."""
        result = await self.loop.run_in_executor(self.pool, read, *args)
        return result if epoch == self._epoch else _STALE

    async def _start(self) -> None:
        epoch = self._epoch
        async with self._turn:
            if epoch != self._epoch:
                return
            self._generation = self.identity.generation
            try:
                session = self.identity.session
            except JobberError:
                session = None
            directory = self.identity.local_dir if session is not None else None
            inotify = Inotify() if directory is not None else None
            try:
                if session is None:
                    found: Any = {}
                elif inotify is None:
                    found = await self._reads(epoch, list_remote, session)
                else:
                    found = await self._reads(epoch, list_local, session, directory, inotify, _DIR_MASK, _JOB_MASK)
            except BaseException:
                if inotify is not None:
                    inotify.close()
                raise
            if found is _STALE:
                if inotify is not None:
                    inotify.close()  # (its reads are over: no other thread holds its descriptor)
                return
            self._session = session
            if inotify is not None:
                self._inotify = inotify
                self._wd_job.update(found.pop("watches"))
                self._job_wd.update({job_id: wd for wd, job_id in self._wd_job.items() if job_id is not None})
                # Added now: what happened during the listing waited in the kernel's queue.
                self.loop.add_reader(inotify.fd, self._on_readable)
            for job_id, (job, row, _message) in found.items():
                self._jobs[job_id], self.rows[job_id] = job, row
            # In the pool too: a thousand rows as JSON take the loop tens of milliseconds.
            made = await self._reads(epoch, snapshot_text, list(self.rows.values()))
            if made is _STALE:
                return
            snapshot, self._counts = made
            self._ready = True
            waiting, self._waiting = self._waiting, set()
            self._listeners |= waiting
            for listener in waiting:
                listener(snapshot)
            if session is not None and inotify is None:
                self._later("poll", REMOTE_POLL_S, self._poll)
            elif any(row["state"] == "running" for row in self.rows.values()):
                self._later("usage", USAGE_INTERVAL_S, self._tick_usage)

    def _stop(self) -> None:
        self._epoch += 1
        for handle in self._handles.values():
            handle.cancel()
        self._handles.clear()
        if self._inotify is not None:
            self.loop.remove_reader(self._inotify.fd)
            self._inotify.close()
            self._inotify = None
        self._wd_job.clear()
        self._job_wd.clear()
        self._dirty.clear()
        self.rows.clear()
        self._jobs.clear()
        self._session = None
        self._started = self._ready = False
        self._waiting |= self._listeners  # each gets the snapshot of the feed started anew
        self._listeners = set()
        if self._waiting:  # sockets that came while it stopped: start again for them
            self._started = True
            self._spawn(self._start())

    def _watch(self, job_id: int) -> None:
        if self._inotify is None or job_id in self._job_wd or self.identity.local_dir is None:
            return
        try:  # (a watch is one system call on a directory: no read of a file)
            wd = self._inotify.add_watch(self.identity.local_dir / str(job_id), _JOB_MASK)
        except OSError:
            return  # removed already: its IN_DELETE says so
        self._wd_job[wd] = job_id
        self._job_wd[job_id] = wd

    def _on_readable(self) -> None:
        # Drained here: the descriptor is level-triggered.
        assert self._inotify is not None
        for wd, mask, name in self._inotify.events():
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
            made = job_id_of(name)
            if made is not None:
                if mask & (IN_CREATE | IN_MOVED_TO):
                    self._watch(made)
                self._mark(made)
            return
        if name != _USAGE:  # (a usage file rewritten by its supervisor: the tick reads it)
            self._mark(job_id)

    def _mark(self, job_id: int) -> None:
        self._dirty.add(job_id)
        self._later("flush", COALESCE_S, self._flush)

    async def _flush(self) -> None:
        epoch = self._epoch
        async with self._turn:
            dirty, self._dirty = self._dirty, set()
            if epoch != self._epoch or not dirty or self._session is None:
                return
            known = {job_id: self._jobs.get(job_id) for job_id in sorted(dirty)}
            found = await self._reads(epoch, read_jobs, self._session, known)
            if found is _STALE:
                return
            for job_id, read in found.items():
                if read is None:
                    self._removed(job_id)
                elif read is not UNREADABLE:
                    self._apply(job_id, *read)

    def _removed(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)
        if self.rows.pop(job_id, None) is not None:
            self._counts = counts(self.rows.values())
            self._broadcast({"type": "removed", "id": job_id, "counts": self._counts})

    def _apply(self, job_id: int, job: Any, row: dict[str, Any], message: str | None) -> None:
        """Keep a row read anew; tell the sockets what changed, and its end the first time."""
        self._jobs[job_id] = job
        before = self.rows.get(job_id)
        self.rows[job_id] = row
        if row["state"] != (before or {}).get("state"):
            self._counts = counts(self.rows.values())
        if row["state"] == "running" and self._inotify is not None:
            self._later("usage", USAGE_INTERVAL_S, self._tick_usage)
        if row == before:
            return
        self._broadcast({"type": "job", "job": row, "counts": self._counts})
        if message is not None and (before is None or not ended(before)):
            self._broadcast({"type": "ended", "job": row, "message": message, "notify": row["notify"]})

    async def _tick_usage(self) -> None:
        """Every running job's memory, from its supervisor's last sample; sent when it changed."""
        epoch = self._epoch
        async with self._turn:
            directory = self.identity.local_dir
            running = [row["id"] for row in self.rows.values() if row["state"] == "running"]
            if epoch != self._epoch or directory is None or not running:
                return  # (a job's start, seen by inotify, schedules the tick again)
            memories = await self._reads(epoch, last_memories, directory, running)
            if memories is _STALE:
                return
            for job_id, memory in memories.items():
                row = self.rows.get(job_id)
                if row is None or memory is None or memory == row["memory_now"] or job_id in self._dirty:
                    continue
                elapsed = None
                if row["started"] is not None:
                    elapsed = (datetime.now(timezone.utc) - datetime.fromisoformat(row["started"])).total_seconds()
                fresh = {**row, "elapsed_s": elapsed, "memory_now": memory,
                         "memory_peak": max(memory, row["memory_peak"] or 0)}
                self.rows[job_id] = fresh
                self._broadcast({"type": "job", "job": fresh, "counts": self._counts})
            self._later("usage", USAGE_INTERVAL_S, self._tick_usage)

    async def _poll(self) -> None:
        """A remote identity: list its jobs anew, and send what changed."""
        epoch = self._epoch
        async with self._turn:
            if epoch != self._epoch:
                return
            try:
                found = await self._reads(epoch, list_remote, self._session)
            except JobberError as err:
                log.warning("jobber: listing the jobs failed: %s", err)
                found = None
            if found is _STALE:
                return
            if found is not None:
                for job_id in set(self.rows) - set(found):
                    self._removed(job_id)
                for job_id, read in sorted(found.items()):
                    self._apply(job_id, *read)
            self._later("poll", REMOTE_POLL_S, self._poll)
