"""Jobs on a Slurm cluster: ``sbatch`` starts them, Slurm confines them, jobber watches.

``SlurmBackend`` is what a ``jobber.Job`` holds when its ``options["backend"]`` is
"slurm" (``jobber._backends.open_backend`` decides). jobber does not schedule anything
itself: it writes a batch script, submits it, and keeps what it learns in the job directory, so that any process sees the same job:

    started          claimed by the one start() that wins (O_EXCL), as for local jobs
    script           the batch script: ``exec /bin/sh -c COMMAND``, as local jobs run it
    slurm-id         Slurm's job id (a job ``after`` it names this id in ``--dependency``);
                     ``<array id>_<i>`` for task i of a sweep's job array (`.array`)
    log              Slurm's output file (stdout and stderr): tail and follow read it
    status.json      the final state, once Slurm reports one: Slurm forgets finished jobs
                     after MinJobAge, and ended jobs need not ask it again
    stop-requested   written by stop(), so the outcome reads "stopped"

On a real cluster the job runs on another machine, which writes the log: set
``$JOBBER_SLURM_JOBS_DIR`` (or the ``jobs_dir`` option) to a directory on a filesystem the
compute nodes share with this host. The script and the log then live in
``<that dir>/<owner>/<job id>/`` and ``log`` in the job directory is a symlink to the log.

What Slurm answers is read, and mapped to jobber's states, in `jobber._backends.slurm.query`,
which also says what the cluster confines of a job's limits (`isolation_note`).
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import Any

from jobber._backends.base import DirectoryBackend
from jobber._backends.context import run_context
from jobber._backends.slurm.query import (
    SLURM_FINAL,
    SLURM_PENDING,
    ask_slurm,
    epoch,
    from_record,
    isolation_note,
    job_name,
    kill_wait,
    mem_request,
    outcome,
    run_slurm,
    slurm_message,
    slurm_tool,
    unenforced,
)
from jobber._errors import JobError
from jobber._files import read_json, write_atomic
from jobber._jobs.jobdir import JobDir, ensure_private_dir
from jobber._jobs.spec import JobSpec
from jobber._jobs.status import FINAL_STATES, JobStatus
from jobber._limits import Limits

__all__ = ["PASS_THROUGH", "SlurmBackend", "batch_script", "dependency_arguments", "files_dir", "sbatch_arguments",
           "shell_quote", "time_limit", "validate_options"]

PASS_THROUGH = ("partition", "time", "account", "gres")
"""Job options handed to sbatch as ``--NAME=VALUE``."""
OPTIONS = ("backend", *PASS_THROUGH, "jobs_dir")
# Slurm's --time forms: MIN, MIN:SEC, H:MIN:SEC, D-H, D-H:MIN, D-H:MIN:SEC, or no limit.
_TIME = re.compile(r"^(?:\d+-\d+(?::\d+){0,2}|\d+(?::\d+){0,2}|unlimited|infinite)$", re.IGNORECASE)
# After scancel, Slurm sends SIGTERM, and SIGKILL after its KillWait (30 s by default);
# then slurmstepd still has to clean up and report.
_KILL_MARGIN_S = 60.0
# A job's Slurm id: "123", or "123_4" for task 4 of array job 123 (a sweep's job).
_SLURM_ID = re.compile(r"^\d+(?:_\d+)?$")


class SlurmBackend(DirectoryBackend):
    """A job that Slurm runs; its directory on this host holds what jobber learns of it."""

    name = "slurm"

    @property
    def id(self) -> int:
        return self.job_id

    @property
    def command(self) -> str:
        return self.dir.read_spec().command

    @property
    def limits(self) -> Limits:
        return self.dir.read_spec().limits

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.dir.read_spec().options)

    def start(self, *, user: str | None = None, cwd: str | None = None, sandbox: Any = None) -> None:
        if sandbox is not None:
            raise JobError(f"job {self.job_id} is a Slurm job: Slurm, not a jobber server, confines it", job_id=self.job_id)
        start(self, user, cwd)

    def status(self) -> JobStatus:
        return status(self)

    def stop(self, grace: float = 5.0) -> JobStatus:
        return stop(self, grace)

    def wait(self, timeout: float | None = None) -> JobStatus:
        return _wait(self, float("inf") if timeout is None else timeout)

    def remove(self) -> None:
        spec = self.dir.read_spec()
        files = spec.slurm_files
        for task_id in spec.slurm_array_jobs:  # the first job of an array holds its files
            task = SlurmBackend(JobDir(self.path.parent, self.owner, task_id))
            if task_id != self.job_id and (task.path / "slurm-id").exists() and not task.status().ended:
                raise JobError(f"job {self.job_id} holds the Slurm array script and log links of its sweep, "
                               f"and job {task_id} of it has not ended: remove job {self.job_id} after the others end",
                               job_id=self.job_id)
        super().remove()
        if files and Path(files) != self.dir.path:
            import shutil

            shutil.rmtree(files, ignore_errors=True)  # the script and log on the shared filesystem


def validate_options(options: dict[str, Any]) -> dict[str, str]:
    """Check a Slurm job's options; return the ones handed to sbatch.

    Each becomes one argv item ``--NAME=VALUE``, never shell text; values that sbatch
    could still misread (a leading ``-``, a line break) are refused.

    Args:
        options: the job's options (``backend``, ``partition``, ``time``, ``account``,
            ``gres``, ``jobs_dir``).

    Returns:
        The sbatch options by name, as strings.

    Raises:
        JobError: an unknown option or a malformed value, saying which.
    """
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise JobError(f"unknown Slurm job option(s) {', '.join(unknown)}: jobber passes "
                       f"{', '.join(PASS_THROUGH)} to sbatch (and takes jobs_dir)")
    checked = {}
    for name in PASS_THROUGH:
        value = options.get(name)
        if value is None:
            continue
        if name == "time" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)  # minutes, as sbatch reads a bare number
        if not isinstance(value, str):
            raise JobError(f"Slurm option {name} must be a string, not {type(value).__name__}")
        if not value.strip():
            raise JobError(f"Slurm option {name} is empty: give a value or leave it out")
        if value.lstrip().startswith("-"):
            raise JobError(f"Slurm option {name}={value!r} starts with '-': refused, sbatch could "
                           "read it as another option")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise JobError(f"Slurm option {name}={value!r} contains a line break or another control "
                           "character: refused, write the value on one line")
        checked[name] = value
    if "time" in checked and not _TIME.match(checked["time"]):
        raise JobError(f"time={checked['time']!r} is not a Slurm time limit: write MINUTES, "
                       "HOURS:MINUTES:SECONDS or DAYS-HOURS:MINUTES:SECONDS, e.g. 1:00:00")
    jobs_dir = options.get("jobs_dir")
    if jobs_dir is not None and (not isinstance(jobs_dir, str) or not os.path.isabs(jobs_dir)):
        raise JobError(f"jobs_dir={jobs_dir!r} must be an absolute path on a filesystem the compute "
                       "nodes share with this host")
    return checked


def sbatch_arguments(limits: Limits, options: dict[str, str]) -> list[str]:
    """The sbatch requests for ``limits`` and the pass-through ``options``.

    CPUs are rounded up to whole CPUs and memory up to whole MiB: Slurm allocates no less.
    ``gpus=N`` asks for ``--gres=gpu:N``, unless the ``gres`` option says what to ask for.
    """
    args = []
    if limits.cpu is not None:
        args.append(f"--cpus-per-task={math.ceil(limits.cpu)}")
    if limits.memory is not None:
        args.append(mem_request(limits.memory))
    if limits.gpus and "gres" not in options:
        args.append(f"--gres=gpu:{limits.gpus}")
    return args + [f"--{name}={value}" for name, value in options.items()]


def dependency_arguments(job: SlurmBackend) -> list[str]:
    """``after`` as ``--dependency=afterok:ID:ID,afterany:ID`` (Slurm's job ids).

    Each job it waits for must be a Slurm job of the same store, already submitted (its
    ``slurm-id`` is the id Slurm knows). One that already ended is left out when its end
    satisfies the wait; one that ended otherwise (an ``ok`` wait on a failed job) refuses
    the start, since Slurm would keep this job pending for ever.

    Raises:
        JobError: a dependency that is not a submitted Slurm job, or can no longer be met.
    """
    modes: dict[str, list[str]] = {"ok": [], "any": []}
    for dep_id, mode in job.dir.read_spec().after:
        dep_spec = JobSpec.from_json(read_json(job.path.parent / str(dep_id) / "spec.json", "spec") or {})
        if dep_spec.backend != "slurm":
            raise JobError(f"job {job.id}: after job {dep_id}, which is not a Slurm job: a Slurm job can wait "
                           "only for Slurm jobs (--dependency names Slurm's ids); run both on Slurm, or both "
                           "on this host", job_id=job.id)
        dep = SlurmBackend(JobDir(job.path.parent, job.owner, dep_id))
        slurm_id = _slurm_id(dep)
        if slurm_id is None:
            raise JobError(f"job {job.id}: after job {dep_id}, which was not submitted to Slurm yet: start job "
                           f"{dep_id} first", job_id=job.id)
        ended = dep.status()
        if ended.ended and (mode == "any" or ended.state == "exited"):
            continue  # already met: Slurm may have forgotten that job (MinJobAge)
        if ended.ended:
            raise JobError(f"job {job.id}: after job {dep_id}, which ended {ended.describe()}: it had to exit 0, "
                           "so this job would never run (use (id, \"any\") for any ending)", job_id=job.id)
        modes[mode].append(slurm_id)
    parts = [f"after{mode}:" + ":".join(ids) for mode, ids in modes.items() if ids]
    return [f"--dependency={','.join(parts)}"] if parts else []


def start(job: SlurmBackend, user: str | None = None, cwd: str | None = None) -> None:
    """Submit the job with sbatch; returns once Slurm has queued it.

    Raises:
        JobError: already started, bad options, a limit Slurm cannot enforce while
            ``require_isolation`` is set, another user asked for, Slurm not installed, or
            Slurm refused the job (its own message is kept).
    """
    options = validate_options(job.options)
    limits = job.limits
    missing = unenforced(limits)
    if limits.require_isolation and missing:
        raise JobError(f"job {job.id}: Slurm cannot enforce {', '.join(missing)} and isolation is "
                       "required: drop those limits, or run the job locally", job_id=job.id)
    _check_user(job, user)
    sbatch = slurm_tool("sbatch")
    files = files_dir(job)
    depends = dependency_arguments(job)
    job.dir.claim_start()
    try:
        spec = job.dir.read_spec()
        context = run_context(job.id, job.owner, None, cwd or spec.cwd, spec.extra_env)
        job.dir.write_spec(spec.replace(**context, slurm_files=str(files)))
        script = files / "script"
        write_atomic(script, batch_script(job).encode())
        if files != job.path:
            os.symlink(files / "log", job.path / "log")
        argv = [sbatch, "--parsable", f"--job-name={job_name(job)}", f"--output={files / 'log'}",
                "--no-requeue", f"--chdir={context['cwd']}", *sbatch_arguments(limits, options),
                *time_limit(spec, options), *depends, str(script)]
        answer = run_slurm(argv, env=context["env"])
        if answer.returncode != 0:
            raise JobError(f"job {job.id}: Slurm refused it: {slurm_message(answer.stderr)}", job_id=job.id)
        slurm_id = answer.stdout.strip().split(";")[0]
        if not slurm_id.isdigit():
            raise JobError(f"job {job.id}: sbatch answered {answer.stdout.strip()!r}, not a job id", job_id=job.id)
        try:
            write_atomic(job.path / "slurm-id", f"{slurm_id}\n".encode())
        except OSError:
            run_slurm([slurm_tool("scancel"), slurm_id])  # never leave a job jobber cannot find
            raise
    except BaseException:
        job.dir.remove("log")  # not started: the caller may fix and retry
        job.dir.release_start()
        raise


def status(job: SlurmBackend) -> JobStatus:
    """The job's state: from status.json once final, else from Slurm (one call).

    Raises:
        JobError: Slurm's controller cannot be reached, or the job's files are unreadable.
    """
    limits = job.limits
    record = read_json(job.path / "status.json", "status")
    if record is not None and record.get("state") in FINAL_STATES:
        return from_record(record, limits)
    slurm_id = _slurm_id(job)
    if slurm_id is None:
        note = "being submitted to Slurm" if (job.path / "started").exists() else ""
        return JobStatus(state="created", isolation="slurm", isolation_note=isolation_note(limits, ask=False),
                         backend="slurm", limits=limits, note=note)
    info = ask_slurm(job, slurm_id)
    slurm_state = info.get("JobState", "").split(" ")[0].upper()
    record = {"slurm_id": int(slurm_id) if slurm_id.isdigit() else slurm_id, "slurm_state": slurm_state, "exit_code": None, "signal": None,
              "oom_killed": False, "started_at": None, "ended_at": None,
              "isolation_note": isolation_note(limits)}
    if not slurm_state and "_" in slurm_id and (job.path / "stop-requested").exists():
        # An array task cancelled before it was split out of the pending remainder: Slurm
        # keeps no record of it, not even in the job completion log.
        record.update(state="stopped", note=f"stopped by jobber (Slurm array task {slurm_id} was cancelled "
                      "before it ran)")
        job.dir.write("status.json", record)
        return from_record(record, limits)
    if not slurm_state:
        record.update(state="failed", note=f"Slurm no longer knows its job {slurm_id} (it ended longer "
                      "than MinJobAge ago and is not in the job completion log)")
        return from_record(record, limits)
    if slurm_state in SLURM_PENDING:
        reason = info.get("Reason", "")
        record.update(state="pending", note=f"queued by Slurm as job {slurm_id}"
                      + (f" (reason: {reason})" if reason and reason != "None" else ""))
        return from_record(record, limits)
    record["started_at"] = epoch(info.get("StartTime"))
    if slurm_state not in SLURM_FINAL:
        node = info.get("NodeList", "")
        record.update(state="running", note=f"Slurm job {slurm_id}" + (f" on {node}" if node else ""))
        return from_record(record, limits)
    record.update(outcome(job, slurm_id, slurm_state, info))
    record["ended_at"] = epoch(info.get("EndTime"))
    job.dir.write("status.json", record)
    return from_record(record, limits)


def stop(job: SlurmBackend, grace: float) -> JobStatus:
    """Stop the job: SIGTERM to all its processes, then scancel after ``grace`` seconds.

    ``scancel --signal=TERM --full`` reaches the batch shell and everything it started;
    if the job has not ended after ``grace``, it is cancelled (``scancel``: SIGTERM, then
    SIGKILL after the cluster's KillWait). A queued job is simply cancelled. Waits until
    Slurm reports the end.

    Returns:
        The final status ("stopped", or how it ended if it ended first).

    Raises:
        JobError: the job was never started, or it did not end.
    """
    current = status(job)
    if current.ended:
        return current
    slurm_id = _slurm_id(job)
    if slurm_id is None:
        raise JobError(f"job {job.id} was never started: nothing to stop", job_id=job.id)
    job.dir.request_stop()
    complaints = []
    if grace > 0 and current.state == "running":
        complaints.append(_scancel(slurm_id, "--signal=TERM", "--full"))
        current = _wait(job, grace)
    if not current.ended:
        # Plain scancel: Slurm's own SIGTERM, then SIGKILL after KillWait. (A SIGKILL asked
        # for with --signal=KILL takes the same path in slurmctld: it is a cancel too.)
        complaints.append(_scancel(slurm_id))
        timeout = kill_wait() + _KILL_MARGIN_S
        current = _wait(job, timeout)
    if not current.ended:
        said = "; ".join(c for c in complaints if c)
        raise JobError(f"job {job.id} (Slurm job {slurm_id}) did not end within {timeout:.0f} s of "
                       f"scancel (state {current.state})" + (f": scancel said {said}" if said else ""),
                       job_id=job.id)
    return current


def time_limit(spec: JobSpec, options: dict[str, str]) -> list[str]:
    """``new_job(timeout=...)`` as Slurm's ``--time`` (whole minutes, rounded up), unless
    the Slurm ``time`` option says otherwise."""
    if not spec.timeout or "time" in options:
        return []
    return [f"--time={math.ceil(float(spec.timeout) / 60)}"]


def batch_script(job: SlurmBackend, exports: dict[str, str] | None = None) -> str:
    """The job's batch script; ``exports`` (an array task's own variables) are set before the command."""
    # The command stays one single-quoted word: sbatch reads #SBATCH lines only before the
    # first command, so nothing in the command can become an sbatch option.
    lines = [f"export {name}={shell_quote(value)}\n" for name, value in (exports or {}).items()]
    return f"#!/bin/sh\n# jobber job {job.id} of {job.owner}\n{''.join(lines)}exec /bin/sh -c {shell_quote(job.command)}\n"


def shell_quote(text: str) -> str:
    """One single-quoted shell word."""
    return "'" + text.replace("'", "'\\''") + "'"


def files_dir(job: SlurmBackend) -> Path:
    """Where Slurm reads the job's script and writes its log: shared with the compute nodes.

    Raises:
        JobError: the directory's path has a '%' in it (sbatch would read it as a pattern).
    """
    root = job.options.get("jobs_dir") or os.environ.get("JOBBER_SLURM_JOBS_DIR")
    if "%" in str(Path(root or job.path)):
        raise JobError(f"the job directory {root or job.path} contains '%', which sbatch reads as a file "
                       "name pattern: set JOBBER_SLURM_JOBS_DIR (or JOBBER_JOBS_DIR) to a path without it",
                       job_id=job.id)
    if not root:
        return job.path
    ensure_private_dir(Path(root))
    ensure_private_dir(Path(root) / job.owner)
    return ensure_private_dir(Path(root) / job.owner / str(job.id))


def _check_user(job: SlurmBackend, user: str | None) -> None:
    import pwd

    if user is None or user == pwd.getpwuid(os.geteuid()).pw_name:
        return
    raise JobError(f"job {job.id}: a Slurm job runs as the user who submits it, so it cannot run as "
                   f"{user!r} from here: run jobber as {user!r} to submit it", job_id=job.id)


def _slurm_id(job: SlurmBackend) -> str | None:
    try:
        text = (job.path / "slurm-id").read_text().strip()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise JobError(f"job {job.id}: cannot read {job.path / 'slurm-id'}: {err.strerror}", job_id=job.id) from err
    return text if _SLURM_ID.match(text) else None


def _scancel(slurm_id: str, *args: str) -> str:
    """Ask scancel; return what it complained about ("" if nothing)."""
    answer = run_slurm([slurm_tool("scancel"), *args, slurm_id])
    return "" if answer.returncode == 0 else slurm_message(answer.stderr)


def _wait(job: SlurmBackend, timeout: float) -> JobStatus:
    """Poll until the job has ended or ``timeout`` has passed (Slurm sends no events)."""
    deadline = time.monotonic() + timeout
    pause = 0.05
    while True:
        current = status(job)
        left = deadline - time.monotonic()
        if current.ended or left <= 0:
            return current
        time.sleep(min(pause, left))
        pause = min(pause * 1.5, 0.5)
