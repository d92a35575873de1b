"""Parameter sweeps: one job per combination of parameter values.

    sweep = cert.sweep("python train.py --lr {lr} --bs {bs}", lr=[0.1, 0.01], bs=[32, 64],
                       queue="gpu", limits=jobber.Limits(gpus=1))   # 4 jobs, started
    sweep.table()    # a row per job: its parameters, state, elapsed, peak memory, last line

``{name}`` in the template is replaced by the value, quoted for the shell; any other
brace (``${HOME}``, ``{print $1}``) is left as it is. Each job also gets its values as
environment variables (``SWEEP_LR=0.1``) and a label ``<label or "sweep">-<n>``.
Works with any session: a certificate on this host or a jobber server.

On Slurm (``backend="slurm"``) the jobs start together as one job array, each job one of
its tasks; ``parallel=P`` lets at most P of them run at once (``--array=0-(n-1)%P``).
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Iterable
from typing import Any

from jobber._errors import JobError

__all__ = ["Sweep", "sweep", "expand"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MAX_JOBS = 10000


class Sweep(list):
    """The jobs of a sweep (a list of Job), with each one's parameters."""

    def __init__(self, jobs: Iterable[Any], params: list[dict[str, Any]], template: str) -> None:
        super().__init__(jobs)
        self.params = params
        self.template = template

    def table(self) -> Any:
        """A row per job: ``job``, the parameters, ``state``, ``elapsed``, ``peak_memory``
        (bytes), ``last_line``; a pandas DataFrame when pandas is installed, else dicts."""
        from jobber._tail import last_lines

        rows = []
        for job, params in zip(self, self.params):
            status = job.status()
            try:
                last = last_lines(job, 1).decode(errors="replace").strip()
            except JobError:
                last = ""
            rows.append({"job": job.id, **params, "state": status.state, "result": status.describe(),
                         "elapsed": status.elapsed, "peak_memory": status.peak_memory_bytes, "last_line": last})
        try:
            import pandas
        except ImportError:
            return rows
        return pandas.DataFrame(rows).set_index("job")

    def stop(self, grace: float = 5.0) -> list[Any]:
        """Stop every job of the sweep that has not ended: the waiting ones first (they
        leave the queue unrun), so that no place a stop frees lets one of them start."""
        current = [job.status() for job in self]
        order = sorted(range(len(self)), key=lambda i: current[i].state != "pending")
        for i in order:
            if not (current[i].ended or current[i].state == "created"):
                current[i] = self[i].stop(grace)
        return current

    def wait(self, timeout: float | None = None) -> list[Any]:
        """Wait for every job; their statuses."""
        return [job.wait(timeout) for job in self]


def expand(template: str, params: dict[str, Iterable[Any]]) -> list[tuple[dict[str, Any], str]]:
    """Every combination (in the order given, the last parameter changing fastest) and
    its command.

    Raises:
        JobError: no parameters, an empty or a non-list value, a name the template does
            not use (or a placeholder without a value), or too many combinations.
    """
    if not isinstance(template, str) or not template.strip():
        raise JobError("the sweep's command template is empty: e.g. \"python train.py --lr {lr}\"")
    if not params:
        raise JobError("a sweep needs parameters: cert.sweep(\"python train.py --lr {lr}\", lr=[0.1, 0.01])")
    values: dict[str, list[Any]] = {}
    for name, given in params.items():
        if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
            raise JobError(f"sweep parameter {name}: give a list of values, e.g. {name}=[0.1, 0.01], not {given!r}")
        values[name] = list(given)
        if not values[name]:
            raise JobError(f"sweep parameter {name} has no values")
    used = set(_PLACEHOLDER.findall(template))
    unused = sorted(set(values) - used)
    if unused:
        raise JobError(f"the template does not use {', '.join('{' + u + '}' for u in unused)}: "
                       "every parameter must appear in it")
    count = 1
    for vals in values.values():
        count *= len(vals)
    if count > _MAX_JOBS:
        raise JobError(f"this sweep makes {count:,} jobs; at most {_MAX_JOBS:,} at once")
    out = []
    for combo in itertools.product(*values.values()):
        chosen = dict(zip(values, combo))
        command = _PLACEHOLDER.sub(lambda m, c=chosen: shlex.quote(str(c[m.group(1)])) if m.group(1) in c
                                   else m.group(0), template)
        out.append((chosen, command))
    return out


def sweep(session: Any, template: str, *, limits: Any = None, label: str | None = None, start: bool = True,
          parallel: int | None = None, **params_and_options: Any) -> Sweep:
    """Make (and start) one job per combination; keyword arguments that ``new_job`` takes
    (``queue``, ``after``, ``env``, ``timeout``, ...) apply to every job, the others are
    the parameters.

    With ``backend="slurm"`` the jobs are submitted together as one Slurm job array
    (one ``sbatch --array=0-(n-1)``), each job one task of it, with its own id, log and
    state; ``after=`` on one of them waits for that task alone.

    Args:
        parallel: Slurm sweeps only: at most this many of the jobs run at once
            (``--array=0-(n-1)%P``). On this host a queue does that instead:
            ``cert.set_queue("sweep", parallel=2)`` and ``queue="sweep"``.

    Raises:
        JobError: see :func:`expand`; ``parallel`` without the Slurm backend, with
            ``start=False``, or not a whole number of at least 1; or a job that cannot be
            made or started (the ones made are removed: a sweep is made whole or not at all).
    """
    options = {k: params_and_options.pop(k) for k in list(params_and_options) if k in _JOB_OPTIONS}
    if parallel is not None:
        _check_parallel(parallel, options, start)
    combos = expand(template, params_and_options)
    jobs: list[Any] = []
    base = label or "sweep"
    try:
        for n, (chosen, command) in enumerate(combos, 1):
            env = {**(options.get("env") or {}), **{f"SWEEP_{k.upper()}": str(v) for k, v in chosen.items()}}
            jobs.append(session.new_job(command, limits, **{**options, "env": env, "label": f"{base}-{n}"}))
    except BaseException:
        _remove(jobs)
        raise
    result = Sweep(jobs, [chosen for chosen, _ in combos], template)
    if start:
        _start(result, parallel)
    return result


def _start(jobs: list[Any], parallel: int | None) -> None:
    """Start the jobs: together when their backend can (a Slurm array), else one by one."""
    from jobber._backends import can_start_together, start_together

    backends = [job._backend for job in jobs]
    if not can_start_together(backends):
        if parallel is not None:
            _remove(jobs)
            raise JobError("parallel=: these jobs cannot start as one Slurm array (a jobber server starts "
                           "them one by one): limit them with a queue instead (queue=...)")
        for job in jobs:
            job.start()
        return
    try:
        start_together(backends, parallel)
    except BaseException:
        _remove(jobs)  # none started: the sweep is made whole or not at all
        raise


def _remove(jobs: list[Any]) -> None:
    for job in jobs:
        try:
            job.remove()
        except JobError:
            pass


def _check_parallel(parallel: Any, options: dict[str, Any], start: bool) -> None:
    from jobber._backends import default_backend

    backend = options.get("backend") or default_backend()
    if backend != "slurm":
        raise JobError(f"parallel= is for Slurm sweeps (backend=\"slurm\"), not {backend!r} ones: on this host "
                       "a queue limits how many run, cert.set_queue(\"sweep\", parallel=2) and queue=\"sweep\"")
    if not start:
        raise JobError("parallel= caps the Slurm array the sweep submits: it needs start=True")
    if isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1:
        raise JobError(f"parallel={parallel!r}: give how many of the sweep's jobs may run at once, a whole "
                       "number of at least 1 (e.g. parallel=2)")


_JOB_OPTIONS = {"env", "cwd", "timeout", "log_max", "retries", "retry_on", "oom_growth", "queue", "after",
                "backend", "partition", "time", "account", "gres"}
