"""``jobber.Executor``: ``concurrent.futures`` over jobs, for every session.

    ex = cert.executor(jobber.Limits(memory="2G"), queue="cpu")
    fut = ex.submit(train, data, lr=0.1)     # a job: fut.job
    fut.result()                             # train's return value (its exception re-raised)

Written once over the session's ``new_function_job`` and ``Job.result``, so a
certificate's jobs on this host, Slurm's and a jobber server's behave the same. A
future stays "pending" (to ``concurrent.futures``) while its job waits or runs, so that
``fut.cancel()`` can stop a running job too; ``fut.running()`` asks the job.

One watcher thread per process, shared by every executor (a notebook makes one per
``%%jobber_py`` cell), sees the jobs end: jobs with a directory on this host through one
inotify instance (a status change is a rename in the job's directory), the others (Slurm,
a jobber server) by asking each, less often the longer it runs. When the kernel gives no
inotify instance (``max_user_instances`` reached) every job is asked in turn that way. The
thread starts when there is something to watch and ends when there is not; a thread that
died is started again by the next ``submit``, with the futures it was watching.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import os
import select
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures._base import CANCELLED, CANCELLED_AND_NOTIFIED, PENDING
from typing import TYPE_CHECKING, Any

from jobber._errors import JobberError, JobError
from jobber._inotify import IN_MOVED_TO, Inotify
from jobber._jobs import starting
from jobber._jobs.pycall import function_label, pack_call, result_max_of
from jobber._limits import Limits

if TYPE_CHECKING:
    from jobber._jobs.job import Job

__all__ = ["Executor", "JobFuture"]

_LOCAL_CHECK_S = 5.0  # a local job's end comes as an event; this only catches a supervisor that died
_POLL_FIRST_S, _POLL_MAX_S = 0.05, 2.0  # jobs that send no events: asked soon, then less often
_EVENT = struct.Struct("iIII")
WATCHER_NAME = "jobber-executor-watcher"
_libc = ctypes.CDLL(None, use_errno=True)


class JobFuture(concurrent.futures.Future):
    """The future of one function job: ``fut.job`` is the ``jobber.Job`` that runs it.

    It stays pending while the job waits or runs, so ``cancel()`` can stop a running
    job: then the job is stopped (its processes killed, its cgroup removed) and the
    future cancelled. ``running()`` asks the job.
    """

    def __init__(self, job: Job, watcher: _Watcher) -> None:
        super().__init__()
        self.job = job
        self._watcher = watcher
        self._cancelling = False

    def __repr__(self) -> str:
        return f"<JobFuture job {self.job.id} {super().__repr__()[1:-1].split(' ', 2)[-1].split('=', 1)[-1]}>"

    def running(self) -> bool:
        """Whether the job is running now (not waiting in a queue, not ended)."""
        return not self.done() and self.job.status().state == "running"

    def cancel(self) -> bool:
        """Stop the job (waiting or running) and cancel the future.

        Returns:
            True if the future is cancelled; False if the job had ended first (its result
            stands) or could not be stopped.
        """
        with self._condition:
            if self._state in (CANCELLED, CANCELLED_AND_NOTIFIED):
                return True
            if self._state != PENDING or self._cancelling:
                return False
            self._cancelling = True
        try:
            stopped = self.job.stop().state == "stopped"
        except JobberError:
            stopped = False
        with self._condition:
            self._cancelling = False
            if not stopped or self._state != PENDING:
                self._watcher.check(self)  # it ended on its own: its outcome is delivered
                return False
            super().cancel()
            self.set_running_or_notify_cancel()  # wakes wait() and as_completed()
        return True

    def _fail(self, err: BaseException) -> None:
        """The job cannot be watched any more (removed, unreadable): the future fails with why."""
        with self._condition:
            if self._cancelling or self._state != PENDING:
                return
            self.set_running_or_notify_cancel()
        self.set_exception(err)

    def _deliver(self) -> None:
        """Set the outcome of the ended job (the watcher's thread calls this)."""
        with self._condition:
            if self._cancelling or self._state != PENDING:
                return
            self.set_running_or_notify_cancel()
        try:
            value = self.job.result(timeout=0)
        except BaseException as exc:  # the function's own exception, or why there is no result
            self.set_exception(exc)
        else:
            self.set_result(value)


class Executor(concurrent.futures.Executor):
    """Runs each call as a job of ``session``: ``session.executor(limits, **job_options)``.

    Args:
        session: a ``jobber.Session``: a ``jobber.Certificate``, or a ``jobber.connect`` session.
        limits: each job's resource limits.
        **job_options: each job's options, as ``new_function_job`` takes them (the
            rest of them are checked by the first ``submit``).

    Raises:
        JobError: ``limits`` that are not a ``jobber.Limits``, or a malformed ``result_max``.
    """

    def __init__(self, session: Any, limits: Limits | None = None, **job_options: Any) -> None:
        if limits is not None and not isinstance(limits, Limits):
            raise JobError(f"limits must be a jobber.Limits, not {type(limits).__name__}")
        if job_options.get("result_max") is not None:
            result_max_of(job_options["result_max"])  # a malformed cap is refused now, not at each submit
        self._session = session
        self._limits = limits
        self._options = job_options
        self._lock = threading.Lock()
        self._shut = False
        self._futures: set[JobFuture] = set()
        self._watcher = _shared

    def __repr__(self) -> str:
        return f"<jobber.Executor of {self._session!r}>"

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> JobFuture:
        """Run ``fn(*args, **kwargs)`` as a job, started at once (or queued by its queue).

        Args:
            fn: the function (defined in the notebook, or importable).
            *args: its positional arguments.
            **kwargs: its keyword arguments.

        Returns:
            The future: ``.result()`` is ``fn``'s return value, ``.job`` the job.

        Raises:
            JobError: something cannot be pickled (naming it), or the job cannot be made
                or started.
            RuntimeError: the executor was shut down.
        """
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot schedule new futures after shutdown")
        call = pack_call(fn, args, kwargs)
        options = {"label": function_label(fn), **self._options}
        job = self._session.new_function_job(call, self._limits, **options)
        try:
            with starting.in_background():  # a queued job's launch: see starting.py
                job.start()
        except BaseException:
            try:
                job.remove()  # a job that never ran is not left behind
            except JobError:
                pass
            raise
        future = JobFuture(job, self._watcher)
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        self._watcher.watch(future)
        return future

    def map(self, fn: Callable[..., Any], *iterables: Iterable[Any], timeout: float | None = None,
            chunksize: int = 1) -> Iterator[Any]:
        """One job per item, all submitted at once; their results in order.

        Args:
            fn: the function.
            *iterables: its arguments, one iterable per parameter (as ``map``).
            timeout: seconds, from this call, after which the next result not yet
                there raises ``TimeoutError`` (and the jobs not ended are stopped).
            chunksize: ignored (one job per item).

        Returns:
            An iterator of the results; a job's exception is raised where its result would be.

        Raises:
            JobError: an item that cannot be sent (naming it): the jobs already made for
                the items before it are stopped.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        futures: list[JobFuture] = []
        try:
            for args in zip(*iterables):
                futures.append(self.submit(fn, *args))
        except BaseException:
            for future in futures:
                future.cancel()
            raise

        def results() -> Iterator[Any]:
            try:
                futures.reverse()  # pop() from the end: each result is released once given
                while futures:
                    left = None if deadline is None else deadline - time.monotonic()
                    yield futures[-1].result(left)
                    futures.pop()
            finally:
                for future in futures:  # a timeout, an exception, or the iterator dropped
                    future.cancel()

        return results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Submit no more; with ``cancel_futures``, stop the jobs still waiting to start.

        Running jobs run on (they do not depend on this process); ``wait`` waits for them.

        Args:
            wait: return once every job has ended and its future is done.
            cancel_futures: cancel the futures whose jobs have not started running.
        """
        with self._lock:
            self._shut = True
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                if not future.done() and future.job.status().state in ("created", "pending"):
                    future.cancel()
        if wait:
            concurrent.futures.wait(futures)

    def _forget(self, future: concurrent.futures.Future) -> None:
        with self._lock:
            self._futures.discard(future)  # type: ignore[arg-type]


class _Watcher:
    """One thread that delivers each future's outcome when its job ends (started when
    there is something to watch, gone when there is not)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._new: list[JobFuture] = []
        self._thread: threading.Thread | None = None
        self._wake_r, self._wake_w = -1, -1
        self.error: BaseException | None = None  # why the last thread died, if it did (never printed)

    def watch(self, future: JobFuture) -> None:
        """Deliver ``future``'s outcome when its job ends."""
        with self._lock:  # (the wake-up pipe is closed under this lock when the thread ends)
            self._new.append(future)
            if self._thread is None:
                self._start()
            else:
                self._wake()

    def _start(self) -> None:
        """Start the thread (under the lock)."""
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=WATCHER_NAME, daemon=True)
        self._thread.start()

    def _forked(self) -> None:
        """In a forked child: no thread runs here, and the pipe is the parent's (writing it
        would wake the parent's thread): the next watch() starts the child's own."""
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._new, self._thread = [], None
        self._wake_r, self._wake_w = -1, -1

    def check(self, future: JobFuture) -> None:
        """Look at ``future``'s job again soon (a cancel that came too late)."""
        self.watch(future)

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b".")
        except (BlockingIOError, OSError):
            pass  # a full pipe wakes the thread as well

    def _run(self) -> None:
        watching: dict[JobFuture, float] = {}  # future -> when to ask its job next
        crashed = False
        try:
            self._loop(watching)
        except BaseException as err:  # noqa: BLE001 - a thread must not print: kept, and the next watch() restarts
            self.error, crashed = err, True
        finally:
            with self._lock:
                self._new[:0] = [f for f in watching if not f.done()]  # for the next thread
                os.close(self._wake_r)
                os.close(self._wake_w)
                self._wake_r, self._wake_w = -1, -1
                self._thread = None
                if self._new and not crashed:  # watched after the loop saw nothing left
                    self._start()

    def _loop(self, watching: dict[JobFuture, float]) -> None:
        pauses: dict[JobFuture, float] = {}
        by_watch: dict[int, JobFuture] = {}
        try:
            inotify: Inotify | None = Inotify()
        except OSError:  # EMFILE (max_user_instances), ENOMEM: every job is asked in turn
            inotify = None
        try:
            while True:
                with self._lock:
                    for future in self._new:
                        watching[future] = 0.0
                        pauses[future] = _POLL_FIRST_S
                        path = future.job.path if future.job.backend == "local" else None
                        if path is not None and inotify is not None:
                            try:
                                by_watch[inotify.add_watch(path, IN_MOVED_TO)] = future
                                pauses[future] = _LOCAL_CHECK_S
                            except OSError:
                                pass  # (watch limit reached): asked in turn, as a remote job is
                    self._new.clear()
                    if not watching:
                        return
                now = time.monotonic()
                for future in [f for f, due in watching.items() if due <= now]:
                    if self._settled(future):
                        del watching[future]
                    else:
                        watching[future] = now + pauses[future]
                        if pauses[future] < _LOCAL_CHECK_S:  # not seen by inotify: asked less often
                            pauses[future] = min(pauses[future] * 1.5, _POLL_MAX_S)
                if not watching:
                    continue
                timeout = max(0.0, min(watching.values()) - time.monotonic())
                for wd in _wait(inotify, self._wake_r, timeout):
                    future = by_watch.get(wd)
                    if future in watching:
                        watching[future] = 0.0
                for wd in [wd for wd, f in by_watch.items() if f not in watching]:
                    if inotify is not None:
                        _libc.inotify_rm_watch(inotify.fd, wd)
                    del by_watch[wd]
        finally:
            if inotify is not None:
                inotify.close()

    @staticmethod
    def _settled(future: JobFuture) -> bool:
        """Deliver the outcome if the job has ended; whether the future needs no more watching."""
        if future.done():
            return True
        try:
            ended = future.job.status().ended
        except Exception as err:  # noqa: BLE001 - removed, unreadable: this future fails with why, not the thread
            future._fail(err)
            return True
        if ended:
            future._deliver()
        return ended or future.done()


_shared = _Watcher()  # the process's one watcher: its thread starts on the first submit
os.register_at_fork(after_in_child=_shared._forked)


def _wait(inotify: Inotify | None, wake: int, timeout: float) -> list[int]:
    """Block until a watched directory changes, a wake-up, or ``timeout``; the watch
    descriptors that saw events."""
    poller = select.poll()
    if inotify is not None:
        poller.register(inotify.fd, select.POLLIN)
    poller.register(wake, select.POLLIN)
    poller.poll(int(timeout * 1000) + 1)
    try:
        while os.read(wake, 4096):
            pass
    except BlockingIOError:
        pass
    wds: list[int] = []
    while inotify is not None:
        try:
            data = os.read(inotify.fd, 65536)
        except BlockingIOError:
            return wds
        offset = 0
        while offset < len(data):
            wd, _mask, _cookie, length = _EVENT.unpack_from(data, offset)
            wds.append(wd)
            offset += _EVENT.size + length
    return wds
