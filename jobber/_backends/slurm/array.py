"""A sweep on Slurm: one ``sbatch --array=0-(n-1)[%P]``, one jobber job per array task.

Each task is a jobber job of its own, made by the sweep as any job is, with its own job
directory, command, label and ``SWEEP_*`` variables; the array only starts them together.
Task i records ``<array id>_<i>`` as its ``slurm-id``, so its status, stop and ``after``
name that task alone. The files, in the first job's files directory::

    array/script     the array's batch script: task i runs job i's own script
    array/<i>        a link to job i's files directory, so ``--output=array/%a/log``
                     puts each task's log in its own job's directory

Each job's own ``script`` is the single job's (``exec /bin/sh -c COMMAND``), with the
variables that differ from task to task (``JOBBER_JOB_ID``, ``JOBBER_JOB_TAG``, the
sweep's ``env``) exported first: an array is submitted with one environment.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from jobber._backends.context import run_context
from jobber._backends.slurm.backend import (
    SlurmBackend,
    batch_script,
    dependency_arguments,
    files_dir,
    sbatch_arguments,
    shell_quote,
    time_limit,
    validate_options,
)
from jobber._backends.slurm.query import run_slurm, slurm_message, slurm_tool, unenforced
from jobber._errors import JobError
from jobber._files import write_atomic
from jobber._jobs.jobdir import ensure_private_dir
from jobber._jobs.spec import AFTER

__all__ = ["array_arguments", "array_script", "start_array"]


def array_arguments(count: int, parallel: int | None) -> list[str]:
    """``--array=0-(count-1)``, with ``%parallel`` when at most that many may run at once.

    Raises:
        JobError: ``parallel`` is not a positive whole number.
    """
    if parallel is not None and (isinstance(parallel, bool) or not isinstance(parallel, int) or parallel < 1):
        raise JobError(f"parallel={parallel!r}: give how many of the sweep's jobs may run at once, a whole "
                       "number of at least 1 (e.g. parallel=2)")
    return [f"--array=0-{count - 1}" + (f"%{parallel}" if parallel else "")]


def array_script(jobs: list[SlurmBackend], scripts: list[Path]) -> str:
    """The array's batch script: task i (``$SLURM_ARRAY_TASK_ID``) runs ``scripts[i]``."""
    cases = "".join(f"{i}) exec /bin/sh {shell_quote(str(path))} ;;\n" for i, path in enumerate(scripts))
    ids = ", ".join(str(job.id) for job in jobs)
    return (f"#!/bin/sh\n# jobber sweep of {jobs[0].owner}: jobs {ids}, one Slurm array task each\n"
            f"case \"$SLURM_ARRAY_TASK_ID\" in\n{cases}esac\n"
            "echo \"jobber: no job for array task $SLURM_ARRAY_TASK_ID\" >&2\nexit 1\n")


def start_array(jobs: list[SlurmBackend], parallel: int | None = None) -> None:
    """Submit ``jobs`` as one Slurm job array; returns once Slurm has queued it.

    The jobs must share their sbatch requests (limits, options, timeout, ``after``,
    working directory), as a sweep's jobs do. All start, or none does.

    Args:
        jobs: the sweep's jobs, created and not started; task i runs ``jobs[i]``.
        parallel: at most this many tasks run at once (``--array=...%P``); None: no cap.

    Raises:
        JobError: ``parallel`` malformed, jobs that differ in what sbatch is asked for,
            any reason a single Slurm job would be refused (see `backend.start`), or Slurm
            refused the array (its own message is kept). Every job is left startable.
    """
    if not jobs:
        return
    first = jobs[0]
    array = array_arguments(len(jobs), parallel)
    requests = [_requests(job) for job in jobs]
    if any(r != requests[0] for r in requests):
        raise JobError(f"jobs {', '.join(str(j.id) for j in jobs)}: one Slurm array takes one set of limits, "
                       "options, timeout and after for all its tasks; these differ: start them one by one")
    sbatch = slurm_tool("sbatch")
    files = [files_dir(job) for job in jobs]
    depends = dependency_arguments(first)
    claimed: list[SlurmBackend] = []
    array_dir = files[0] / "array"
    try:
        for job in jobs:
            job.dir.claim_start()
            claimed.append(job)
        contexts = []
        for job, where in zip(jobs, files):
            spec = job.dir.read_spec()
            context = run_context(job.id, job.owner, None, spec.cwd, spec.extra_env)
            contexts.append(context)
            job.dir.write_spec(spec.replace(**context, slurm_files=str(where), slurm_name=f"jobber-sweep-{first.id}"))
            exports = {k: v for k, v in context["env"].items() if k != "PATH"}
            write_atomic(where / "script", batch_script(job, exports).encode())
            if where != job.path:
                os.symlink(where / "log", job.path / "log")
        if any(c["cwd"] != contexts[0]["cwd"] for c in contexts):
            raise JobError(f"jobs {', '.join(str(j.id) for j in jobs)}: one Slurm array starts all its tasks in one "
                           "directory; these give different cwd")
        first.dir.write_spec(first.dir.read_spec().replace(slurm_array_jobs=tuple(job.id for job in jobs)))
        ensure_private_dir(array_dir)
        for i, where in enumerate(files):
            os.symlink(where, array_dir / str(i))
        write_atomic(array_dir / "script", array_script(jobs, [where / "script" for where in files]).encode())
        options = validate_options(first.options)
        argv = [sbatch, "--parsable", f"--job-name=jobber-sweep-{first.id}", f"--output={array_dir}/%a/log",
                "--no-requeue", f"--chdir={contexts[0]['cwd']}", *sbatch_arguments(first.limits, options),
                *time_limit(first.dir.read_spec(), options), *depends, *array, str(array_dir / "script")]
        answer = run_slurm(argv, env={"PATH": contexts[0]["env"]["PATH"]})
        if answer.returncode != 0:
            raise JobError(f"jobs {first.id}-{jobs[-1].id} (a sweep): Slurm refused their array: "
                           f"{slurm_message(answer.stderr)}", job_id=first.id)
        array_id = answer.stdout.strip().split(";")[0]
        if not array_id.isdigit():
            raise JobError(f"jobs {first.id}-{jobs[-1].id}: sbatch answered {answer.stdout.strip()!r}, not a job id",
                           job_id=first.id)
        try:
            for i, job in enumerate(jobs):
                write_atomic(job.path / "slurm-id", f"{array_id}_{i}\n".encode())
        except OSError:
            run_slurm([slurm_tool("scancel"), array_id])  # never leave a job jobber cannot find
            raise
    except BaseException:
        for job in claimed:
            job.dir.remove("slurm-id")
            job.dir.remove("log")  # not started: the caller may fix and retry
            job.dir.release_start()
        shutil.rmtree(array_dir, ignore_errors=True)
        raise


def _requests(job: SlurmBackend) -> list[Any]:
    """What sbatch would be asked for on the job's behalf (to compare a sweep's jobs);
    refuses what a single job would be refused."""
    options = validate_options(job.options)
    limits = job.limits
    missing = unenforced(limits)
    if limits.require_isolation and missing:
        raise JobError(f"job {job.id}: Slurm cannot enforce {', '.join(missing)} and isolation is "
                       "required: drop those limits, or run the job locally", job_id=job.id)
    spec = job.dir.read_spec()
    return [*sbatch_arguments(limits, options), *time_limit(spec, options), (AFTER, spec.after)]
