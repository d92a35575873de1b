"""The session: what an identity can do with its jobs, declared and documented once.

    Session  <-- JobStore       this host (``jobber._jobs.store``)
             <-- RemoteSession  a jobber server (``jobber._backends.remote.session``)
             <-- Certificate    each method forwarded to its JobStore (`Forwarding`)

The CLI, the magics, sweeps and ``Job.rerun`` hold a ``Session`` and never ask which one.
The docstrings live here: an implementation inherits them and documents only where it
differs (a jobber server refuses ``cwd``, for instance). `find_job` and `sweep` are the
same for every session: the implementations call `lookup` and inherit `Session.sweep`.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from jobber._errors import JobNotFound

if TYPE_CHECKING:
    from jobber._jobs.executor import Executor
    from jobber._jobs.job import Job
    from jobber._jobs.selection import Pruned
    from jobber._jobs.sweeps import Sweep
    from jobber._limits import Limits

__all__ = ["Forwarding", "Session", "lookup"]


@runtime_checkable
class Session(Protocol):
    """An identity's jobs and queues: a ``jobber.Certificate`` on this host, or what
    ``jobber.connect`` returns for a jobber server. Their jobs are ``jobber.Job`` either way.

    ``isinstance(x, jobber.Session)`` holds for both.
    """

    __slots__ = ()

    def new_job(self, command: str, limits: Limits | None = None, *, env: Mapping[str, str] | None = None,
                cwd: str | os.PathLike[str] | None = None, label: str | None = None,
                timeout: float | str | None = None, log_max: int | str | None = None, retries: int = 0,
                retry_on: Sequence[str] | None = None, oom_growth: float | None = None, notify: bool = False,
                queue: str | None = None, after: Any = None, **options: Any) -> Job:
        """Create a job (not started yet) with a freshly reserved id.

        Args:
            command: the shell command (run as ``/bin/sh -c COMMAND``).
            limits: resource limits; None means unlimited.
            env: environment variables to set for the job, on top of what it inherits.
            cwd: its working directory (default: the caller's at start); must exist.
            label: a short name for listings, re-runs and filters.
            timeout: seconds, or "90s", "30m", "2h", "1d": then it is stopped, "timed-out".
            log_max: the log's cap ("200M"): past it the head and the newest bytes are kept.
            retries: start a failed attempt again up to this many times.
            retry_on: which endings are retried: "failed", "oom-killed", "timed-out"
                (None: "failed", and "oom-killed" too with ``oom_growth``).
            oom_growth: retry OOM kills, the next attempt getting memory x this (needs
                ``retries``; a ``retry_on`` given with it must name "oom-killed").
            queue: a queue's name: the job starts when the queue admits it (`set_queue`).
            after: job ids (or Jobs) that must end first: alone or ``(id, "ok")``, they
                must exit 0 (else this job ends "failed" unrun); ``(id, "any")``: any end.
            **options: where to run it: ``backend="slurm"`` with ``partition=``, ``time=``,
                ``account=``, ``gres=`` (default backend: $JOBBER_BACKEND, else "local").

        Returns:
            The new job, in state "created"; ``job.start()`` runs it.

        Raises:
            JobError: the command is empty or not text, a malformed option, options the
                backend does not take, or the job cannot be created.
        """
        ...

    def new_function_job(self, call: bytes, limits: Limits | None = None, *, python: str | None = None,
                         result_max: int | str | None = None, **new_job_options: Any) -> Job:
        """Create a job (not started yet) that runs a Python call and keeps its result.

        ``call`` is the call already pickled (``jobber._jobs.pycall.pack_call``): opaque
        bytes to every layer but the job's own runner, which unpickles it inside the job.
        The job's command is a readable shell line that runs that runner, so its log,
        listing, re-run and Slurm work as for any job; ``Job.result`` reads what it returns.
        `executor` is the everyday way to make these.

        Args:
            call: the pickled call (``pack_call(fn, args, kwargs)``).
            limits: resource limits; None means unlimited.
            python: the interpreter that runs it; its major.minor must be the caller's
                (checked before the job is made). Default: this kernel's own
                (``sys.executable``) on this host, ``python3`` on a jobber server.
            result_max: the largest pickled result kept ("200M"; default 1 GiB): over
                it the job ends "failed", saying so.
            **new_job_options: what `new_job` takes: ``label``, ``timeout``, ``retries``,
                ``queue``, ``after``, ``env``, ``cwd``, ``backend``, ...

        Returns:
            The new job, in state "created"; ``job.start()`` runs it.

        Raises:
            JobError: ``call`` is not bytes, the interpreter is missing or of another
                Python version, or anything `new_job` refuses.
        """
        ...

    def executor(self, limits: Limits | None = None, **job_options: Any) -> Executor:
        """A ``concurrent.futures.Executor`` whose every call runs as a job of this session.

        ``ex.submit(fn, *args, **kwargs)`` returns a future whose ``.job`` is the job;
        ``fut.result()`` is what ``fn`` returned (its exception re-raised); ``ex.map``
        makes one job per item, results in order; ``fut.cancel()`` stops the job.

        Args:
            limits: each job's resource limits.
            **job_options: each job's options, as `new_function_job` takes them (``label``,
                ``timeout``, ``retries``, ``oom_growth``, ``queue``, ``python``, ...).

        Returns:
            The executor (``jobber.Executor``); ``with`` it, or ``shutdown()`` it.

        Raises:
            JobError: a malformed option.
        """
        from jobber._jobs.executor import Executor

        return Executor(self, limits, **job_options)

    def get_job(self, job_id: int) -> Job:
        """One of this identity's jobs.

        Args:
            job_id: the job's id.

        Returns:
            The job.

        Raises:
            JobNotFound: this identity has no job with that id (another identity's jobs
                look the same: absent).
        """
        ...

    def get_jobs(self, label: str | None = None) -> list[Job]:
        """List this identity's jobs.

        Args:
            label: only the jobs with this label.

        Returns:
            Every job this identity owns (with that label), ended ones included, by id.
            One whose files cannot be read (damaged, not jobber's) is listed all the same
            (its ``status()`` raises JobError saying why); with ``label``, it is left out,
            having no label that could match. A jobber server leaves such jobs out.

        Raises:
            JobError: the job directory cannot be read. JobberError: the server cannot be
                reached.
        """
        ...

    def find_job(self, ref: int | str) -> Job:
        """The job with this id, or the newest job with this label.

        Args:
            ref: a job id (an int, or a string of digits), or a label.

        Returns:
            The job.

        Raises:
            JobNotFound: no job has that id or label.
        """
        ...

    def rerun(self, job: Job, **overrides: Any) -> Job:
        """A new job like ``job`` (command, limits, options), with ``overrides`` applied.

        The original is left untouched; the new one records which job it re-ran
        (``rerun_of``) and is not started yet. ``Job.rerun`` calls this.

        Args:
            job: the job to copy, one of this session's.
            **overrides: any of ``command``, ``limits``, ``env``, ``cwd``, ``label``,
                ``timeout``, ``log_max``, ``retries``, ``retry_on``, ``oom_growth``,
                ``options`` (backend options, merged).

        Returns:
            The new job, in state "created".

        Raises:
            JobError: an override that `new_job` would refuse.
        """
        ...

    def prune(self, *, older_than: float | str | None = None, states: str | Iterable[str] | None = None,
              keep_last: int | None = None, dry_run: bool = False, label: str | None = None,
              ids: Any = None) -> Pruned:
        """Remove ended jobs (their directories and logs); running and waiting jobs are never touched.

        A job never started (still "created") counts as abandoned once it is older than
        ``older_than`` (without it: a day), and is removed too when ``states`` is not given.

        Args:
            older_than: only jobs that ended (or, never started, were created) at least this
                long ago: seconds or "7d", "12h".
            states: only jobs in these final states, e.g. ("exited", "failed") (default:
                every final state, and abandoned never-started jobs).
            keep_last: of the matching jobs, keep the newest this many.
            dry_run: only say which would be removed.
            label: only the jobs with this label.
            ids: only these jobs: ids, ranges as text ("12-40", "3,5,9"), or an iterable
                of ids (``range(12, 41)``, ``[3, 5, 9]``).

        Returns:
            The ids removed (or that would be), oldest first: a list of ints whose ``kept``
            maps each selected job left in place to why ("running", "never started,
            created 5 min ago").

        Raises:
            JobError: a malformed argument, or a directory that cannot be removed.
        """
        ...

    def set_queue(self, name: str, *, parallel: int | None = None, memory: int | str | None = None,
                  cpus: float | None = None, gpus: int | None = None) -> dict[str, Any]:
        """Set a queue's limits: they persist, and apply at once to jobs already waiting.

        A limit of 0 removes it, None keeps it as it is.

        Args:
            name: the queue; jobs join it with ``new_job(..., queue=name)``.
            parallel: at most this many of its jobs run at once.
            memory: admit while the running jobs' memory limits sum to at most this.
            cpus: the same, for their CPU limits.
            gpus: the same, for their GPUs.

        Returns:
            The queue's settings now.

        Raises:
            JobError: a malformed name or value.
        """
        ...

    def queues(self) -> dict[str, dict[str, Any]]:
        """Every queue: name -> its settings and how many of its jobs run and wait.

        Returns:
            ``{"gpu": {"parallel": 2, "memory": None, "cpus": None, "gpus": 2, "running": 1,
            "waiting": 3}}``.
        """
        ...

    def sweep(self, command_template: str, **params: Any) -> Sweep:
        """One job per combination of the parameters' values, started (through a queue).

        ``session.sweep("python train.py --lr {lr} --bs {bs}", lr=[0.1, 0.01], bs=[32, 64],
        queue="gpu", limits=Limits(gpus=1))`` makes 4 jobs. Keywords that `new_job`
        takes (``limits``, ``queue``, ``after``, ``env``, ``label``, ...) apply to every job.

        Args:
            command_template: the command, with ``{name}`` where each value goes (quoted
                for the shell).
            **params: each parameter's values, and the jobs' options.

        Returns:
            The jobs (a list with ``.params``, ``.table()``, ``.stop()``, ``.wait()``).

        Raises:
            JobError: no parameters, one the template does not use, or a job that cannot
                be made (then none is).
        """
        from jobber._jobs.sweeps import sweep

        return sweep(self, command_template, **params)


def lookup(session: Session, ref: int | str, *, hint: str) -> Job:
    """`Session.find_job`, for every session: ``hint`` ends the message when no job has the label."""
    if isinstance(ref, int) or (isinstance(ref, str) and ref.strip().isdigit()):
        return session.get_job(ref)  # type: ignore[arg-type] - get_job takes a string of digits too
    if not isinstance(ref, str) or not ref.strip():
        raise JobNotFound(-1, f"{ref!r} is neither a job id nor a label")
    labelled = session.get_jobs(label=ref.strip())
    if not labelled:
        raise JobNotFound(-1, f"no job is labelled {ref.strip()!r} {hint}")
    return labelled[-1]


def _forwarded(name: str) -> Callable[..., Any]:
    """``Session.<name>``, calling the same method of ``self._session()``.

    The arguments are bound to the protocol's signature first (a wrong call fails here,
    naming the method); the positional parameters are passed on positionally, their
    defaults filled in, and the keyword-only ones only when given.
    """
    protocol = getattr(Session, name)
    signature = inspect.signature(protocol)
    parameters = list(signature.parameters.values())[1:]  # after self

    def method(self: Forwarding, /, *args: Any, **kwargs: Any) -> Any:
        try:
            given = signature.bind(self, *args, **kwargs).arguments
        except TypeError as err:
            raise TypeError(f"{name}(): {err}") from None
        positional: list[Any] = []
        keywords: dict[str, Any] = {}
        for parameter in parameters:
            if parameter.kind is parameter.POSITIONAL_OR_KEYWORD:
                positional.append(given.get(parameter.name, parameter.default))
            elif parameter.kind is parameter.VAR_KEYWORD:
                keywords.update(given.get(parameter.name, {}))
            elif parameter.name in given:
                keywords[parameter.name] = given[parameter.name]
        return getattr(self._session(), name)(*positional, **keywords)

    return functools.update_wrapper(method, protocol)  # help() and inspect.signature show the protocol's


class Forwarding(Session):
    """A session that is the face of another: each `Session` method calls the same
    method of ``self._session()`` (a ``Certificate``'s: its ``JobStore``)."""

    __slots__ = ()

    def _session(self) -> Session:
        raise NotImplementedError

    new_job = _forwarded("new_job")
    new_function_job = _forwarded("new_function_job")
    executor = _forwarded("executor")
    get_job = _forwarded("get_job")
    get_jobs = _forwarded("get_jobs")
    find_job = _forwarded("find_job")
    rerun = _forwarded("rerun")
    prune = _forwarded("prune")
    set_queue = _forwarded("set_queue")
    queues = _forwarded("queues")
    sweep = _forwarded("sweep")
