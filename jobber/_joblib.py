"""The joblib backend "jobber": each batch of a ``joblib.Parallel`` call runs as a job.

``jobber.joblib`` registers it; this module is its implementation. It is an adapter over
the public executor (``session.executor``), so local, Slurm and jobber-server sessions all
serve it, with the limits and job options given to ``parallel_config``.

How joblib drives a backend (``joblib/_parallel_backends.py``, ``ParallelBackendBase``):
``configure(n_jobs)`` opens a ``Parallel`` call and says how many tasks may run at once;
``submit(batch, callback)`` returns a future-like and calls ``callback(future)`` once the
batch is done; ``retrieve_result_callback(future)`` turns it into the batch's results or
raises its exception; ``abort_everything`` follows the first error; ``terminate`` closes the
call. Dask's backend (``joblib/_dask.py``) and Ray's (``ray/util/joblib``) have the same shape.

``n_jobs`` bounds the jobs running at once, here: joblib hands over up to ``pre_dispatch``
(2 x n_jobs) batches ahead, and the rest wait in this process until a job ends. A queue
(``queue=``) may hold them back further, with limits shared across notebooks.
"""

from __future__ import annotations

import concurrent.futures
import os
import re
import threading
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

try:
    import joblib
    from joblib.parallel import ParallelBackendBase, SequentialBackend, ThreadingBackend
except ImportError as err:  # joblib is an extra: `import jobber` never needs it
    raise ImportError("jobber.joblib needs joblib: pip install 'jobber[joblib]' (or pip install joblib)") from err

from jobber._errors import JobberError, JobError
from jobber._limits import Limits

if TYPE_CHECKING:
    from jobber._jobs.executor import Executor, JobFuture
    from jobber._session import Session

__all__ = ["JobberBackend", "default_session", "register", "task_label"]

_LABEL_CHARACTERS = re.compile(r"[^A-Za-z0-9_.:+-]")
_LABEL_MAX = 64  # a job label's longest (jobber._jobs.options)


def register(name: str = "jobber") -> None:
    """Make ``joblib.parallel_config(backend=name)`` run each task batch as a jobber job.

    ``import jobber.joblib`` has already called it with the default name.

    Args:
        name: the backend's name for joblib.
    """
    joblib.register_parallel_backend(name, JobberBackend)


def default_session() -> Session:
    """The identity jobs run as when ``parallel_config`` names none: ``$JOBBER_CERT`` on this
    host, or on the jobber server ``$JOBBER_SERVER`` (with ``$JOBBER_KEY``, ``$JOBBER_CA``),
    as the ``jobber`` command line chooses.

    Raises:
        JobberError: ``$JOBBER_CERT`` is not set, or ``$JOBBER_SERVER`` without ``$JOBBER_KEY``.
        CertificateError: ``$JOBBER_CERT`` is not a valid certificate of the pool.
    """
    cert = os.environ.get("JOBBER_CERT")
    if not cert:
        raise JobberError('the joblib backend "jobber" needs an identity: parallel_config(backend="jobber", '
                          "session=cert) with a jobber.Certificate (or a jobber.connect(...) session), "
                          "or set $JOBBER_CERT")
    server = os.environ.get("JOBBER_SERVER")
    if not server:
        from jobber._certificates import Certificate

        return Certificate.from_file(cert)
    key = os.environ.get("JOBBER_KEY")
    if not key:
        raise JobberError(f"$JOBBER_SERVER is {server} but $JOBBER_KEY is not set: set it to the private key of "
                          "$JOBBER_CERT, or pass session=jobber.connect(...) to parallel_config")
    from jobber import connect

    return connect(server, cert=cert, key=key, ca=os.environ.get("JOBBER_CA"))


def task_label(batch: Any) -> str:
    """A job label naming what a batch runs: ``joblib:`` and its first task's function
    (``joblib:_fit_and_score`` for scikit-learn's searches)."""
    items = getattr(batch, "items", None) or [(batch, (), {})]
    fn = items[0][0]
    while True:  # functools.partial, scikit-learn's delayed wrapper: name what they wrap
        inner = getattr(fn, "func", None) or getattr(fn, "function", None)
        if inner is None or inner is fn:
            break
        fn = inner
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    name = _LABEL_CHARACTERS.sub("_", str(name).replace("<locals>.", "").strip("<>"))
    return f"joblib:{name}"[:_LABEL_MAX]


def _named_in_its_task(batch: Any, err: BaseException) -> BaseException:
    """For a batch that would not pickle, the sentence of its task that would not: "square():
    argument 'x': a lock held by the kernel cannot be sent to a job (...)", not the batch's."""
    if not isinstance(err, JobError):
        return err
    from jobber._jobs.pycall import function_name, pack_call

    for fn, args, kwargs in getattr(batch, "items", ()):
        try:
            pack_call(fn, args, kwargs)
        except JobError as task_err:
            named = JobError(f"{function_name(fn)}(): {task_err}")
            named.__cause__ = task_err.__cause__
            return named
    return err


class _Task:
    """One batch joblib handed over: its future (what joblib holds) and, once started, its job's."""

    def __init__(self, batch: Callable[[], Any], callback: Callable[[Any], None] | None) -> None:
        self.batch = batch
        self.callback = callback
        self.future: concurrent.futures.Future = concurrent.futures.Future()
        self.job_future: JobFuture | None = None
        self.dropped = False  # abort_everything came first: its outcome goes to no one

    def settle(self, outcome: concurrent.futures.Future | BaseException) -> None:
        """Give joblib the outcome (a done future, or why the job could not start)."""
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        elif outcome.cancelled():
            self.future.set_exception(JobError("the job was stopped before it ended"))
        elif outcome.exception() is not None:
            self.future.set_exception(outcome.exception())
        else:
            self.future.set_result(outcome.result())
        if self.callback is not None:
            self.callback(self.future)


class JobberBackend(ParallelBackendBase):
    """Runs each batch of a ``joblib.Parallel`` call as a job of ``session``.

    Made by joblib from ``parallel_config(backend="jobber", **parameters)``. A batch is one
    task unless ``Parallel(batch_size=...)`` says otherwise, so each scikit-learn fit runs in
    a process of its own, within ``limits``. ``n_jobs`` is how many of these jobs run at
    once; ``n_jobs=1`` still runs each task in a job, one at a time (joblib would otherwise
    call it in this process, outside every limit). Nested ``Parallel`` calls inside a job
    use threads of that job, as many as its CPU limit.

    Args:
        session: whose jobs: a ``jobber.Certificate`` or a ``jobber.connect(...)`` session
            (default: ``$JOBBER_CERT``, see `default_session`).
        limits: each job's ``jobber.Limits``.
        nesting_level: joblib's; set by joblib.
        inner_max_num_threads: the threads of BLAS and OpenMP pools in each job
            (``OMP_NUM_THREADS`` and the like); default: the CPU limit, rounded down.
        **job_options: each job's options, as ``cert.executor`` takes them: ``queue``,
            ``timeout``, ``retries``, ``oom_growth``, ``label`` (default ``joblib:`` and the
            function's name), ``env``, ``backend``, ``python``, ``result_max``, ...

    Raises:
        JobberError: no session and no ``$JOBBER_CERT``; ``session`` or ``limits`` of the
            wrong type.
    """

    supports_retrieve_callback = True
    supports_inner_max_num_threads = True
    supports_sharedmem = False
    default_n_jobs = -1  # every CPU of this host, unless n_jobs says otherwise

    def __init__(self, session: Session | None = None, limits: Limits | None = None, *,
                 nesting_level: int | None = None, inner_max_num_threads: int | None = None,
                 **job_options: Any) -> None:
        super().__init__(nesting_level=nesting_level, inner_max_num_threads=inner_max_num_threads)
        if session is None:
            session = default_session()
        elif not callable(getattr(session, "executor", None)):
            raise JobberError(f'session= of the joblib backend "jobber" must be a jobber.Certificate or a '
                              f"jobber.connect(...) session, not {type(session).__name__}")
        if limits is not None and not isinstance(limits, Limits):
            raise JobberError(f'limits= of the joblib backend "jobber" must be a jobber.Limits, not '
                              f"{type(limits).__name__}: e.g. limits=jobber.Limits(memory=\"2G\", cpu=1)")
        self.session = session
        self.limits = limits
        self.job_options = job_options
        self._lock = threading.Lock()
        self._slots = 1
        self._waiting: deque[_Task] = deque()
        self._running: set[_Task] = set()
        self._executors: dict[str, Executor] = {}
        self._launcher: concurrent.futures.ThreadPoolExecutor | None = None
        self._launcher_ident: int | None = None

    def __repr__(self) -> str:
        return f"<jobber joblib backend of {self.session!r}>"

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        """How many tasks joblib may hand over at once: never 1 (see the class docstring)."""
        return max(2, self._jobs_at_once(n_jobs))

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        """Open a ``Parallel`` call: at most ``n_jobs`` of its jobs run at once."""
        self.parallel = parallel
        with self._lock:
            self._slots = self._jobs_at_once(n_jobs)
        return self.effective_n_jobs(n_jobs)

    def submit(self, func: Callable[[], Any], callback: Callable[[Any], None] | None = None) -> concurrent.futures.Future:
        """Run the batch as a job as soon as fewer than ``n_jobs`` of this call's jobs run.

        Returns:
            The batch's future; ``callback(future)`` is called when it is done.
        """
        task = _Task(func, callback)
        with self._lock:
            self._waiting.append(task)
            if self._launcher is None:
                self._launcher = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="jobber-joblib")
            launcher = self._launcher
        launcher.submit(self._launch)
        return task.future

    def retrieve_result_callback(self, out: concurrent.futures.Future) -> Any:
        """The batch's results; the exception of its function (or of its job) re-raised."""
        return out.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """After a task's error: stop this call's running jobs, start no waiting one."""
        with self._lock:
            dropped = [*self._waiting, *self._running]
            self._waiting.clear()
            for task in dropped:
                task.dropped = True
            launcher = self._launcher
        for task in dropped:
            if task.job_future is not None:
                task.job_future.cancel()  # stops the job (and removes its cgroup)
        if launcher is not None and threading.get_ident() != self._launcher_ident:
            try:  # a job being started right now is stopped by the launcher: wait for that too
                launcher.submit(lambda: None).result()
            except RuntimeError:  # terminated meanwhile: nothing is being started
                pass

    def terminate(self) -> None:
        """Close the ``Parallel`` call: its launcher thread and executors go (jobs stay, ended)."""
        with self._lock:
            launcher, self._launcher = self._launcher, None
            executors, self._executors = list(self._executors.values()), {}
        if launcher is not None:
            launcher.shutdown(wait=False)
        for executor in executors:
            executor.shutdown(wait=False)

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        """A ``Parallel`` call inside a job runs on threads of that job (it stays within the
        job's limits), as many as its CPU limit allows; deeper ones run sequentially."""
        level = (self.nesting_level or 0) + 1
        if level > 1:
            return SequentialBackend(nesting_level=level), None
        return ThreadingBackend(nesting_level=level), self._threads_per_job()

    def _jobs_at_once(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max(1, joblib.cpu_count() + 1 + n_jobs)
        return int(n_jobs)

    def _threads_per_job(self) -> int | None:
        if self.inner_max_num_threads is not None:
            return int(self.inner_max_num_threads)
        if self.limits is not None and self.limits.cpu:
            return max(1, int(self.limits.cpu))
        return None

    def _executor_for(self, batch: Any) -> Executor:
        """The executor of jobs labelled as this batch's are (one per label, made once)."""
        label = self.job_options.get("label") or task_label(batch)
        with self._lock:
            executor = self._executors.get(label)
        if executor is None:
            options = {**self.job_options, "label": label}
            threads = self._threads_per_job()
            if threads is not None:  # BLAS and OpenMP pools sized to the job, not to the host
                options["env"] = {**{name: str(threads) for name in self.MAX_NUM_THREADS_VARS},
                                  **(self.job_options.get("env") or {})}
            executor = self.session.executor(self.limits, **options)
            with self._lock:
                executor = self._executors.setdefault(label, executor)
        return executor

    def _launch(self) -> None:
        """Start waiting batches while there are free slots (the launcher thread runs this)."""
        self._launcher_ident = threading.get_ident()
        while True:
            with self._lock:
                if not self._waiting or len(self._running) >= self._slots:
                    return
                task = self._waiting.popleft()
                self._running.add(task)
            try:
                job_future = self._executor_for(task.batch).submit(task.batch)
            except BaseException as err:  # unpicklable, a refused option: joblib raises it
                with self._lock:
                    self._running.discard(task)
                if not task.dropped:
                    task.settle(_named_in_its_task(task.batch, err))
                continue
            with self._lock:
                task.job_future = job_future
                dropped = task.dropped
            if dropped:
                job_future.cancel()
            job_future.add_done_callback(lambda done, task=task: self._ended(task, done))

    def _ended(self, task: _Task, done: concurrent.futures.Future) -> None:
        with self._lock:
            self._running.discard(task)
            launcher = self._launcher if self._waiting else None
        if launcher is not None:
            try:
                launcher.submit(self._launch)
            except RuntimeError:  # terminated meanwhile: nothing more to start
                pass
        if not task.dropped:
            task.settle(done)
